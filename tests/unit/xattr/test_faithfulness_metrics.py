"""Degradation (LDAV Eq. 6), switching point (LDAV 4.3.3) and MAPE (LAFA 5.3) on stub forwards."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from xattr.metrics.applicability import MetricNotApplicableError, require_task
from xattr.metrics.degradation import degradation_curves
from xattr.metrics.mape import mape_under_masking, relative_errors, select_accurate_texts, to_quantity
from xattr.metrics.perturbation import removal_curves
from xattr.metrics.replacement import memoized
from xattr.metrics.switching import switching_points, word_removal_order
from xattr.models.encoding import encode_texts
from xattr.models.forward import predict_logits
from xattr.models.loading import ModelSpec
from xattr.models.replacement import BASELINE_ID, replacement_id
from xattr.types import TokenAttribution

KEY = 10  # the token id that decides the stub's output
MASK = 4


def one_token_forward(num_labels: int):
    """Logits (0, 2) when KEY is present else (0, 0); regression output 3 or 1."""

    def forward(texts):
        out = []
        for t in texts:
            present = float(KEY in t.input_ids)
            out.append([1.0 + 2.0 * present] if num_labels == 1 else [0.0, 2.0 * present])
        return np.asarray(out, dtype=np.float64)

    return forward


def count_forward(texts):
    """Class 1 while at least 3 tokens of id KEY remain, else class 0 (a known decision rule)."""
    return np.asarray([[0.0, 1.0] if t.input_ids.count(KEY) >= 3 else [1.0, 0.0] for t in texts])


@pytest.fixture
def encoded(tiny_tokenizer):
    (enc,) = encode_texts(tiny_tokenizer, ["the movie was great fun"], max_length=64)
    assert len(enc) == 7  # [CLS] + 5 words + [SEP]
    return enc


def _with_ids(enc, ids):
    return enc.__class__(**{**enc.__dict__, "input_ids": tuple(ids)})


def _key_at(enc, position):
    ids = list(enc.input_ids)
    ids[position] = KEY
    return _with_ids(enc, ids)


def _curve(values, metric):
    return {v.fraction: v.value for v in values if v.metric == metric}


FRACTIONS = (0.2, 0.4, 0.6, 0.8, 1.0)  # 1..5 of the 5 removable tokens


def test_degradation_when_the_key_token_ranks_first(encoded) -> None:
    enc = _key_at(encoded, 3)
    scores = np.array([9.0, 0.1, 0.2, 5.0, 0.3, 0.4, 9.0])
    values = degradation_curves(
        one_token_forward(2),
        [enc],
        [TokenAttribution(0, 1, scores)],
        task="classification",
        replacement=MASK,
        fractions=FRACTIONS,
    )
    # MoRF: the key goes first, the class flips at every fraction -> Eq. 6 indicator 0 everywhere.
    assert _curve(values, "degradation") == {**{f: 0.0 for f in FRACTIONS}, None: 0.0}
    # LeRF: the key goes last (removed only at 100%): kept at 4 of 5 fractions.
    lerf = _curve(values, "degradation_lerf")
    assert [lerf[f] for f in FRACTIONS] == [1.0, 1.0, 1.0, 1.0, 0.0] and lerf[None] == pytest.approx(0.8)
    p = math.exp(2) / (1 + math.exp(2))
    drop = p - 0.5
    area = _curve(values, "degradation_area")
    assert [area[f] for f in FRACTIONS] == pytest.approx([drop] * 4 + [0.0], abs=1e-12)
    assert area[None] == pytest.approx(4 * drop / 5, abs=1e-12)


def test_degradation_when_the_key_token_ranks_last(encoded) -> None:
    enc = _key_at(encoded, 3)
    scores = np.array([0.0, 5.0, 4.0, -1.0, 3.0, 2.0, 0.0])
    values = degradation_curves(
        one_token_forward(2),
        [enc],
        [TokenAttribution(0, 1, scores)],
        task="classification",
        replacement=MASK,
        fractions=FRACTIONS,
    )
    assert _curve(values, "degradation")[None] == pytest.approx(0.8)
    assert _curve(values, "degradation_lerf")[None] == 0.0
    p = math.exp(2) / (1 + math.exp(2))
    assert _curve(values, "degradation_area")[None] == pytest.approx(-4 * (p - 0.5) / 5, abs=1e-12)


def test_degradation_area_for_regression(encoded) -> None:
    enc = _key_at(encoded, 3)
    scores = np.array([0.0, 0.1, 0.2, 5.0, 0.3, 0.4, 0.0])
    values = degradation_curves(
        one_token_forward(1),
        [enc],
        [TokenAttribution(0, 0, scores)],
        task="regression",
        replacement=MASK,
        fractions=FRACTIONS,
    )
    assert _curve(values, "degradation") == {}  # Eq. 6 needs a class
    assert _curve(values, "degradation_area")[None] == pytest.approx(4 * 2.0 / 5)


def test_switching_point_on_a_count_rule(tiny_tokenizer) -> None:
    (enc,) = encode_texts(tiny_tokenizer, ["the movie was great fun bad plot"], max_length=64)
    ids = list(enc.input_ids)
    for position in (2, 4, 5, 7):  # 4 KEY tokens; the class flips when 2 of them are gone
        ids[position] = KEY
    enc = _with_ids(enc, ids)
    # Words (one piece each) by score: pos 2, pos 3 (not KEY), pos 4, ... -> after 3 words, 2 KEYs gone.
    scores = np.array([0.0, 1.0, 9.0, 8.0, 7.0, 2.0, 3.0, 4.0, 0.0])
    values = switching_points(
        count_forward, [enc], [TokenAttribution(0, 1, scores)], task="classification", replacement=MASK
    )
    assert _curve(values, "switching_point")[None] == pytest.approx(3 / 7)
    assert _curve(values, "switched")[None] == 1.0
    # Keys last: positions 1, 3, 6 first, then 7 (KEY, 1 gone), then 5 (2 gone) -> k = 5.
    scores_last = np.array([0.0, 9.0, 1.0, 8.0, 2.0, 3.0, 7.0, 4.0, 0.0])
    values = switching_points(
        count_forward, [enc], [TokenAttribution(0, 1, scores_last)], task="classification", replacement=MASK
    )
    assert _curve(values, "switching_point")[None] == pytest.approx(5 / 7)


def test_switching_point_never_switching_is_one_and_counted(encoded) -> None:
    values = switching_points(
        lambda texts: np.tile([0.0, 1.0], (len(texts), 1)),
        [encoded],
        [TokenAttribution(0, 1, np.arange(7.0))],
        task="classification",
        replacement=None,
    )
    assert _curve(values, "switching_point")[None] == 1.0 and _curve(values, "switched")[None] == 0.0


def test_switching_point_groups_word_pieces(tiny_tokenizer) -> None:
    (enc,) = encode_texts(tiny_tokenizer, ["good lovely film"], max_length=64)
    # [CLS] good love ##ly film [SEP]: "lovely" (two pieces, 2 + 3 = 5) outranks film (4) and good (1).
    assert tiny_tokenizer.convert_ids_to_tokens(enc.input_ids) == ["[CLS]", "good", "love", "##ly", "film", "[SEP]"]
    order = word_removal_order(enc, np.arange(len(enc), dtype=np.float64))
    assert order == [[2, 3], [4], [1]]


def test_switching_point_refuses_regression(encoded) -> None:
    with pytest.raises(MetricNotApplicableError, match="switching_point.*regression"):
        switching_points(
            one_token_forward(1), [encoded], [TokenAttribution(0, 0, np.zeros(7))], task="regression", replacement=MASK
        )
    with pytest.raises(MetricNotApplicableError, match="mape.*classification"):
        require_task("mape", "classification")


def test_mape_by_hand(encoded) -> None:
    enc = _key_at(encoded, 3)
    scores = np.array([0.0, 0.1, 0.2, 5.0, 0.3, 0.4, 0.0])
    # log-output model: exp(3) with the key, exp(1) without; the label is exp(3) * 1.005.
    label = math.exp(3) * 1.005
    values = mape_under_masking(
        one_token_forward(1),
        [enc],
        [TokenAttribution(0, 0, scores)],
        [label],
        replacement=MASK,
        output_transform="log",
        fractions=(0.2, 1.0),
    )
    masked = abs(label - math.exp(1)) / label
    assert _curve(values, "mape_unmasked")[None] == pytest.approx(0.005 / 1.005)
    assert _curve(values, "mape") == pytest.approx({0.2: masked, 1.0: masked, None: masked})
    # The key ranked last: masking 20% leaves the prediction unchanged.
    values = mape_under_masking(
        one_token_forward(1),
        [enc],
        [TokenAttribution(0, 0, -scores)],
        [label],
        replacement=MASK,
        output_transform="log",
        fractions=(0.2,),
    )
    assert _curve(values, "mape")[0.2] == pytest.approx(0.005 / 1.005)


def test_select_accurate_texts_and_fallback() -> None:
    labels = np.array([100.0, 200.0, 50.0, 10.0, 80.0])
    predicted = np.array([100.5, 190.0, 50.2, 12.0, 80.0])  # errors .005 .05 .004 .2 0
    chosen = select_accurate_texts(predicted, labels, n=3)
    assert chosen.positions == (0, 2, 4) and not chosen.fallback and chosen.within_threshold == 3
    fallback = select_accurate_texts(predicted, labels, n=4)
    assert fallback.positions == (0, 1, 2, 4) and fallback.fallback and fallback.within_threshold == 3
    assert "only 3 texts within 1%" in fallback.describe()
    with pytest.raises(ValueError, match="zero label"):
        relative_errors(np.array([1.0]), np.array([0.0]))
    assert to_quantity(np.array([0.0, 1.0]), "log") == pytest.approx([1.0, math.e])


def test_baseline_replacement_zeroes_the_word_embedding(tiny_classifier_dir, tiny_tokenizer) -> None:
    loaded = ModelSpec(str(tiny_classifier_dir), device="cpu").load()
    (enc,) = encode_texts(loaded.tokenizer, ["the movie was great fun"], max_length=64)
    assert replacement_id(loaded.tokenizer, "baseline") == BASELINE_ID
    ids = list(enc.input_ids)
    ids[2] = BASELINE_ID
    perturbed = _with_ids(enc, ids)
    got = predict_logits(loaded, [perturbed, enc])
    model = loaded.model
    with torch.no_grad():
        embeds = model.get_input_embeddings()(torch.tensor([enc.input_ids]))
        embeds[0, 2] = 0.0
        expected = model(inputs_embeds=embeds, attention_mask=torch.ones(1, len(enc), dtype=torch.long)).logits
        plain = model(input_ids=torch.tensor([enc.input_ids])).logits
    np.testing.assert_allclose(got[0], expected[0].double().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[1], plain[0].double().numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(got[0], got[1])
    values = removal_curves(
        loaded, [enc], [TokenAttribution(0, 1, np.arange(7.0))], policy="baseline", fractions=(0.2,)
    )
    assert {v.metric for v in values} >= {"aopc", "comprehensiveness"}


def test_switching_point_rounds_equal_a_full_scan_and_stop_early(tiny_tokenizer) -> None:
    (enc,) = encode_texts(tiny_tokenizer, ["the movie was great fun bad plot"], max_length=64)
    ids = list(enc.input_ids)
    for position in (2, 4, 5, 7):
        ids[position] = KEY
    enc = _with_ids(enc, ids)
    rows = [
        TokenAttribution(0, 1, np.array([0.0, 1.0, 9.0, 8.0, 7.0, 2.0, 3.0, 4.0, 0.0])),
        TokenAttribution(0, 1, np.array([0.0, 9.0, 1.0, 8.0, 2.0, 3.0, 7.0, 4.0, 0.0])),
    ]
    seen: list[int] = []

    def counting(texts):
        seen.append(len(texts))
        return count_forward(texts)

    results = [
        switching_points(counting, [enc], rows, task="classification", replacement=MASK, chunk=c) for c in (1, 2, 7)
    ]
    assert results[0] == results[1] == results[2]
    assert [v.value for v in results[0] if v.metric == "switching_point"] == pytest.approx([3 / 7, 5 / 7])
    seen.clear()
    switching_points(counting, [enc], rows, task="classification", replacement=MASK, chunk=2)
    # originals, then rounds of 2 words: both rows (4), both (4), only the second (2): 7 words never all tried.
    assert seen == [2, 4, 4, 2]


def test_memoized_forward_runs_each_variant_once(encoded) -> None:
    calls: list[int] = []

    def forward(texts):
        calls.append(len(texts))
        return one_token_forward(2)(texts)

    cached = memoized(forward)
    other = _key_at(encoded, 3)
    first = cached([encoded, other, encoded])
    second = cached([other, encoded])
    assert calls == [2]
    np.testing.assert_array_equal(first[[1, 0]], second)
    np.testing.assert_array_equal(first, one_token_forward(2)([encoded, other, encoded]))
