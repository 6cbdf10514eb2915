"""The metric suite on a stub model whose output depends on one token: hand-computed rows, means and CIs."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch

from tests.unit.xattr.test_perturbation_metrics import KEY, OneTokenModel
from xattr.methods.runner import TokenAttribution
from xattr.metrics.applicability import MetricNotApplicableError
from xattr.metrics.perturbation import MetricValue
from xattr.metrics.suite import (
    EvaluationRow,
    answer_precision,
    applicable_metrics,
    applies,
    attributions_from_table,
    evaluate_attributions,
    evaluation_rows,
    evaluation_sample,
    evaluation_summary,
    gold_by_position,
)
from xattr.models.encoding import encode_texts
from xattr.models.loading import LoadedModel

P = math.exp(2) / (1 + math.exp(2))  # probability of class 1 while the key token is present
FIRST = np.array([0.0, 0.1, 0.2, 5.0, 0.3, 0.4, 0.0])  # ranks the key token (position 3) first
LAST = np.array([0.0, 5.0, 4.0, -1.0, 3.0, 2.0, 0.0])  # ranks it last of the five removable tokens


def _loaded(tokenizer, task: str, num_labels: int) -> LoadedModel:
    return LoadedModel(OneTokenModel(num_labels), tokenizer, task, "stub", torch.device("cpu"), "identity", 64)


@pytest.fixture
def corpus(tiny_tokenizer):
    # [CLS] the movie KEY great fun [SEP] twice: five removable tokens, the key token at position 3.
    encoded = encode_texts(tiny_tokenizer, ["the movie was great fun"] * 2, max_length=64)
    encoded = [e.__class__(**{**e.__dict__, "input_ids": (*e.input_ids[:3], KEY, *e.input_ids[4:])}) for e in encoded]
    frame = pd.DataFrame({"doc_id": ["a", "b"], "label": [1.0, 1.0]})
    return encoded, frame


def _suite(tiny_tokenizer, corpus, attributions, **overrides):
    encoded, frame = corpus
    settings = dict(metrics=("aopc",), fractions=(0.2, 1.0), replacement="mask", max_texts=None, seed=0, batch_size=4)
    settings.update(overrides)
    return evaluate_attributions(_loaded(tiny_tokenizer, "classification", 2), encoded, frame, attributions, **settings)


def test_applies_and_default_families() -> None:
    assert applies("mape", "regression") and not applies("mape", "classification")
    assert not applies("no_such_metric", "classification")
    assert applicable_metrics("multi_label", None) == ("aopc", "degradation", "switching_point")
    assert applicable_metrics("question_answering", None) == ("aopc",)
    assert applicable_metrics("question_answering", ("precision_at_20",)) == ("precision_at_20",)


def test_evaluation_sample_is_all_or_a_seeded_sorted_draw() -> None:
    ids = [f"d{i}" for i in range(10)]
    assert evaluation_sample(ids, None, 0) == list(range(10))
    assert evaluation_sample(ids, 10, 3) == list(range(10))
    drawn = evaluation_sample(ids, 4, 3)
    assert drawn == sorted(int(i) for i in np.random.default_rng(3).choice(10, size=4, replace=False))
    assert len(set(drawn)) == 4 and drawn == evaluation_sample(ids, 4, 3)


def test_attributions_from_table_orders_rows_and_drops_other_documents() -> None:
    table = pd.DataFrame(
        {
            "doc_id": ["b", "a", "a", "zzz", "b", "a"],
            "target": [0, 1, 0, 0, 0, 0],
            "token_index": [1, 0, 1, 0, 0, 0],
            "score": [4.0, 9.0, 2.0, 7.0, 3.0, 1.0],
        }
    )
    out = attributions_from_table(table, ["a", "b"])
    assert [(a.position, a.target, a.scores.tolist()) for a in out] == [
        (0, 0, [1.0, 2.0]),
        (0, 1, [9.0]),
        (1, 0, [3.0, 4.0]),
    ]
    assert all(a.scores.dtype == np.float64 for a in out)


def test_rows_are_per_text_then_means_sorted_by_metric_and_fraction() -> None:
    values = [
        MetricValue(1, 0, "comprehensiveness", 0.5, 0.5),
        MetricValue(1, 0, "aopc", None, 0.25),
        MetricValue(0, 0, "comprehensiveness", 0.5, 1.5),
        MetricValue(0, 0, "aopc", None, 0.75),
        MetricValue(0, 0, "comprehensiveness", 0.2, 1.0),
    ]
    assert evaluation_rows(values, ["a", "b"]) == [
        EvaluationRow("b", "comprehensiveness", 0.5, 0.5),
        EvaluationRow("b", "aopc", None, 0.25),
        EvaluationRow("a", "comprehensiveness", 0.5, 1.5),
        EvaluationRow("a", "aopc", None, 0.75),
        EvaluationRow("a", "comprehensiveness", 0.2, 1.0),
        EvaluationRow(None, "aopc", None, 0.5),
        EvaluationRow(None, "comprehensiveness", 0.2, 1.0),
        EvaluationRow(None, "comprehensiveness", 0.5, 1.0),
    ]
    # Two values: every bootstrap mean is 0.25, 0.5 or 0.75 (a quarter of them 0.25, a quarter 0.75),
    # so the 2.5% and 97.5% quantiles are the two values themselves.
    summary = evaluation_summary(values, seed=0)
    assert summary == {
        "comprehensiveness_curve@50": 1.0,
        "aopc_ci_low": 0.25,
        "aopc_ci_high": 0.75,
        "aopc": 0.5,
        "comprehensiveness_curve@20": 1.0,
    }
    # Keys in order of first appearance, each CI before its mean.
    assert list(summary) == [
        "comprehensiveness_curve@50",
        "aopc_ci_low",
        "aopc_ci_high",
        "aopc",
        "comprehensiveness_curve@20",
    ]


def test_gold_by_position_skips_missing_values() -> None:
    frame = pd.DataFrame({"gold_spans": [[1, 2], None, float("nan"), np.array([3])]})
    assert gold_by_position(frame, [0, 1, 2, 3], "gold_spans") == {0: [1, 2], 3: [3]}
    assert gold_by_position(frame, [1, 3], "gold_spans") == {3: [3]}
    assert gold_by_position(frame, [0], "gold_word_scores") == {}


def test_aopc_means_and_cis_over_two_texts(tiny_tokenizer, corpus) -> None:
    result = _suite(tiny_tokenizer, corpus, [TokenAttribution(0, 1, FIRST), TokenAttribution(1, 1, LAST)])
    first, last = P - 0.5, (P - 0.5) / 2  # the key token goes at 20% and at 100%, or only at 100%
    m = result.metrics
    assert m["texts"] == 2.0 and result.texts == 2 and result.families == ("aopc",) and result.notes == ()
    assert m["aopc"] == pytest.approx((first + last) / 2, abs=1e-12)
    assert m["aopc_ci_low"] == pytest.approx(last, abs=1e-12)
    assert m["aopc_ci_high"] == pytest.approx(first, abs=1e-12)
    assert m["comprehensiveness_curve@20"] == pytest.approx(first / 2, abs=1e-12)
    assert m["comprehensiveness_curve@100"] == pytest.approx(first, abs=1e-12)
    assert m["log_odds_curve@20"] == pytest.approx(math.log(0.5 / P) / 2, abs=1e-12)
    per_text = {(r.doc_id, r.metric, r.fraction): r.value for r in result.rows}
    assert per_text[("a", "aopc", None)] == pytest.approx(first, abs=1e-12)
    assert per_text[("b", "aopc", None)] == pytest.approx(last, abs=1e-12)
    assert per_text[(None, "aopc", None)] == m["aopc"]


def test_to_arrow_labels_every_row(tiny_tokenizer, corpus) -> None:
    result = _suite(tiny_tokenizer, corpus, [TokenAttribution(0, 1, FIRST)], replacement="unk")
    table = result.to_arrow("simple_grad")
    assert table.schema == pa.schema(
        [
            ("method", pa.string()),
            ("doc_id", pa.string()),
            ("metric", pa.string()),
            ("fraction", pa.float64()),
            ("value", pa.float64()),
            ("replacement", pa.string()),
        ]
    )
    assert set(table.column("method").to_pylist()) == {"simple_grad"}
    assert set(table.column("replacement").to_pylist()) == {"unk"}
    assert table.column("doc_id").to_pylist() == [r.doc_id for r in result.rows]
    assert table.num_rows == len(result.rows)


def test_only_sampled_texts_are_scored(tiny_tokenizer, corpus) -> None:
    attributions = [TokenAttribution(0, 1, FIRST), TokenAttribution(1, 1, LAST)]
    result = _suite(tiny_tokenizer, corpus, attributions, max_texts=1, seed=5)
    (chosen,) = evaluation_sample(["a", "b"], 1, 5)
    assert {r.doc_id for r in result.rows} == {["a", "b"][chosen], None}
    assert result.metrics["texts"] == 1.0 and "aopc_ci_low" not in result.metrics


def test_refusals(tiny_tokenizer, corpus) -> None:
    encoded, frame = corpus
    loaded = _loaded(tiny_tokenizer, "classification", 2)
    settings = dict(fractions=(0.5,), replacement="mask", max_texts=None, seed=0, batch_size=4)
    attributions = [TokenAttribution(0, 1, FIRST)]
    with pytest.raises(MetricNotApplicableError, match="'mape' does not apply to a classification model"):
        evaluate_attributions(loaded, [], frame.iloc[:0], [], metrics=("mape",), **settings)
    with pytest.raises(ValueError, match="the evaluation corpus has no rows"):
        evaluate_attributions(loaded, [], frame.iloc[:0], attributions, **settings)
    with pytest.raises(ValueError, match="no attributions match"):
        evaluate_attributions(loaded, encoded, frame, [], **settings)
    with pytest.raises(ValueError, match="the corpus has no gold columns"):
        evaluate_attributions(loaded, encoded, frame, attributions, metrics=("aopc", "gold_auc"), **settings)
    regressor = _loaded(tiny_tokenizer, "regression", 1)
    unlabelled = frame.assign(label=float("nan"))
    with pytest.raises(ValueError, match="MAPE needs regression labels"):
        evaluate_attributions(regressor, encoded, unlabelled, attributions, metrics=("mape",), **settings)


def test_answer_precision_ranks_non_special_tokens_against_context_spans(tiny_tokenizer) -> None:
    # [CLS] good film [SEP] the movie was great fun [SEP]; "great" (token 7) is the answer.
    (enc,) = encode_texts(tiny_tokenizer, ["good film"], ["the movie was great fun"], max_length=64)
    assert tiny_tokenizer.convert_ids_to_tokens(enc.input_ids)[7] == "great"
    specials_first = np.array([9.0, 0.0, 0.0, 9.0, 0.0, 0.0, 0.0, 5.0, 1.0, 9.0])
    answer_third = np.array([0.0, 3.0, 2.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0])
    spans = {0: [(1, 14, 19), (0, 0, 4)], 1: [(1, 14, 19)]}  # segment 0 spans are not answers
    values = answer_precision(
        [enc, enc, enc],
        [TokenAttribution(0, 17, specials_first), TokenAttribution(1, 17, answer_third), TokenAttribution(2, 0, FIRST)],
        spans,
        k=2,
    )
    assert values == [
        MetricValue(0, 17, "precision_at_2", None, 1.0),  # top 2 candidates: great, fun
        MetricValue(1, 17, "precision_at_2", None, 0.0),  # top 2 candidates: good, film
    ]
