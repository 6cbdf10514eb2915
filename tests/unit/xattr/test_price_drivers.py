"""Price drivers on the synthetic catalogue with a stub model whose output is the true price function.

The stub's output for a (possibly masked) listing is ``expected_log_price`` of the words left
unmasked, so masking a true driver changes the output by exactly its effect and masking any other
word changes nothing. Its exact attributions (a model linear in word indicators) are the driver
effects. Every number of the drivers table can then be computed independently.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import pytest

from xattr.data.synthetic_catalogue import PRICE_DRIVERS, expected_log_price, generate_catalogue
from xattr.metrics.uncertainty import bootstrap_mean
from xattr.models.alignment import word_spans
from xattr.models.encoding import EncodedText, encode_texts
from xattr.reporting.phrases import extract_units
from xattr.reporting.price_drivers import (
    ALL_CATEGORIES,
    aggregate_drivers,
    driver_occurrences,
    holdout_mask,
    regression_quality,
    to_price,
    truth_recovery,
    word_score_table,
)

TRUTH = {d.word.lower(): d.effect for d in PRICE_DRIVERS}


class LinearPriceStub:
    """``expected_log_price`` of the words whose pieces are not all replaced by ``mask_id``."""

    def __init__(self, texts: Sequence[str], encoded: Sequence[EncodedText], mask_id: int) -> None:
        # Masking keeps a listing's offsets tuple (dataclasses.replace), so it identifies the listing.
        self.text_of = {id(e.offsets): t for t, e in zip(texts, encoded, strict=True)}
        self.mask_id = mask_id
        self.calls = 0

    def __call__(self, encoded: Sequence[EncodedText]) -> np.ndarray:
        self.calls += 1
        out = []
        for enc in encoded:
            text = self.text_of[id(enc.offsets)]
            words = [text[s:e] for s, e in word_spans(text)]
            masked = {w for t, w in zip(enc.input_ids, enc.word_index, strict=True) if w >= 0 and t == self.mask_id}
            out.append(expected_log_price(" ".join(w for i, w in enumerate(words) if i not in masked)))
        return np.array(out)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from conftest import write_tiny_tokenizer

    tokenizer = write_tiny_tokenizer(tmp_path_factory.mktemp("tok"))
    frame = generate_catalogue(n=400, seed=3).frame
    texts = frame["text"].tolist()
    encoded = encode_texts(tokenizer, texts, max_length=96)
    assert not any(e.truncated for e in encoded)
    units = [extract_units(t, brand=b, nlp=None) for t, b in zip(texts, frame["brand"], strict=True)]
    truth_scores = {}
    for doc_id, text in zip(frame["doc_id"], texts, strict=True):
        words = [text[s:e] for s, e in word_spans(text)]
        truth_scores[doc_id] = {i: TRUTH.get(w.lower(), 0.0) for i, w in enumerate(words)}
    outputs = np.array([expected_log_price(t) for t in texts])
    stub = LinearPriceStub(texts, encoded, tokenizer.mask_token_id)
    occurrences = driver_occurrences(
        frame["doc_id"].tolist(),
        frame["category"].tolist(),
        encoded,
        units,
        truth_scores,
        outputs,
        stub,
        output_transform="log",
        replacement=tokenizer.mask_token_id,
        min_texts=10,
        chunk=1000,
    )
    per_group = {ALL_CATEGORIES: len(frame)} | frame["category"].value_counts().to_dict()
    drivers = aggregate_drivers(occurrences, per_group, min_texts=10, resamples=500, seed=0)
    return frame, encoded, units, truth_scores, outputs, occurrences, drivers, stub


def test_every_true_driver_word_is_recovered_exactly(synthetic) -> None:
    frame, *_, drivers, _ = synthetic
    words = drivers[(drivers["scope"] == "overall") & (drivers["kind"] == "word")].set_index("driver")
    for word, effect in TRUTH.items():
        assert words.loc[word, "mean_output_effect"] == pytest.approx(effect, abs=1e-12)
        assert words.loc[word, "mean_attribution"] == pytest.approx(effect, abs=1e-12)
    for reference in ("dell", "i3", "8gb", "256gb", "laptop", "black", "ssd"):
        assert words.loc[reference, "mean_output_effect"] == pytest.approx(0.0, abs=1e-12)


def test_currency_effect_frequency_and_ci_match_an_independent_computation(synthetic) -> None:
    frame, *_, drivers, _ = synthetic
    row = drivers[(drivers["scope"] == "overall") & (drivers["driver"] == "i9")].iloc[0]
    has = [t for t in frame["text"] if "i9" in t.split()]
    effects = np.array([math.exp(expected_log_price(t)) - math.exp(expected_log_price(t) - 0.8) for t in has])
    assert row["texts"] == len(has)
    assert row["frequency"] == pytest.approx(len(has) / len(frame))
    assert row["mean_effect"] == pytest.approx(effects.mean(), rel=1e-12)
    ci = bootstrap_mean(effects, resamples=500, seed=0)
    assert (row["effect_ci_low"], row["effect_ci_high"]) == pytest.approx((ci.low, ci.high), rel=1e-12)
    assert row["mean_relative_effect"] == pytest.approx(math.exp(0.8) - 1.0, rel=1e-12)
    prices = [math.exp(expected_log_price(t)) for t in has]
    assert row["mean_predicted_price"] == pytest.approx(np.mean(prices), rel=1e-12)


def test_attribute_pairs_carry_their_level_effect(synthetic) -> None:
    *_, drivers, _ = synthetic
    overall = drivers[(drivers["scope"] == "overall") & (drivers["kind"] == "attribute")].set_index("driver")
    expected = {"processor: i7": 0.5, "processor: i9": 0.8, "ram: 32gb": 0.45, "brand: apple": 0.4, "brand: dell": 0.0}
    for key, effect in expected.items():
        assert overall.loc[key, "mean_output_effect"] == pytest.approx(effect, abs=1e-12)


def test_per_category_rows_use_that_category_only(synthetic) -> None:
    frame, *_, drivers, _ = synthetic
    rows = drivers[(drivers["scope"] == "category") & (drivers["category"] == "chromebook")].set_index("driver")
    texts = frame.loc[frame["category"] == "chromebook", "text"]
    assert rows.loc["used", "texts"] == sum("used" in t.split() for t in texts)
    assert rows.loc["used", "frequency"] == pytest.approx(rows.loc["used", "texts"] / len(texts))
    assert rows.loc["used", "mean_output_effect"] == pytest.approx(-0.5, abs=1e-12)
    assert set(drivers["scope"]) == {"overall", "category"}
    assert (drivers["texts"] >= 10).all()


def test_truth_recovery_of_the_stub_is_perfect(synthetic) -> None:
    *_, drivers, _ = synthetic
    for column in ("mean_output_effect", "mean_attribution"):
        result = truth_recovery(drivers, TRUTH, column=column)
        assert result.k == 13 and result.found == 13
        assert result.precision_at_k == 1.0 and result.sign_agreement == 1.0
        assert result.spearman == pytest.approx(1.0)
        assert set(result.top) == set(TRUTH)


def test_truth_recovery_counts_misses_and_wrong_signs() -> None:
    drivers = pd.DataFrame(
        {
            "scope": ["overall"] * 4,
            "kind": ["word"] * 4,
            "driver": ["a", "b", "c", "x"],
            "mean_output_effect": [0.5, 0.1, -0.3, 0.9],
        }
    )
    result = truth_recovery(drivers, {"a": 1.0, "b": -0.2, "c": -0.5}, k=3)
    assert result.top == ("x", "a", "c")
    assert result.precision_at_k == pytest.approx(2 / 3)
    assert result.sign_agreement == 1.0
    # Ranks of (0.5, 0.1, -0.3) vs (1.0, -0.2, -0.5) agree exactly.
    assert result.spearman == pytest.approx(1.0)
    flipped = truth_recovery(drivers, {"a": -1.0, "b": -0.2, "c": -0.5}, k=2)
    assert flipped.precision_at_k == 0.5 and flipped.sign_agreement == 0.0


def test_attribution_estimate_equals_masking_for_exact_linear_attributions(synthetic) -> None:
    frame, encoded, units, scores, outputs, occurrences, _, _ = synthetic
    estimated = driver_occurrences(
        frame["doc_id"].tolist(),
        frame["category"].tolist(),
        encoded,
        units,
        scores,
        outputs,
        None,
        output_transform="log",
        replacement=None,
        min_texts=10,
        effect="attribution",
    )
    assert estimated["driver"].tolist() == occurrences["driver"].tolist()
    np.testing.assert_allclose(estimated["output_effect"], occurrences["output_effect"], atol=1e-12)
    np.testing.assert_allclose(estimated["effect"], occurrences["effect"], rtol=1e-12, atol=1e-9)


def test_rare_units_are_never_masked(synthetic) -> None:
    frame, encoded, units, scores, outputs, *_ = synthetic
    counts: dict[str, int] = {}
    for doc_units in units:
        for key in {u.key for u in doc_units}:
            counts[key] = counts.get(key, 0) + 1
    frequent = sum(1 for doc_units in units for u in doc_units if counts[u.key] >= 10)
    _, _, _, _, _, occurrences, _, stub = synthetic
    assert len(occurrences) == frequent
    assert stub.calls == math.ceil(frequent / 1000)


def test_truncated_words_are_skipped(tmp_path) -> None:
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from conftest import write_tiny_tokenizer

    tokenizer = write_tiny_tokenizer(tmp_path / "tok")
    texts = ["apple laptop i7 new"] * 3
    encoded = encode_texts(tokenizer, texts, max_length=4)  # [CLS] apple laptop [SEP]
    units = [extract_units(t, nlp=None, rules=()) for t in texts]
    occ = driver_occurrences(
        ["a", "b", "c"], [None] * 3, encoded, units, {}, np.zeros(3), None,
        output_transform="identity", replacement=None, min_texts=2, effect="attribution",
    )  # fmt: skip
    assert sorted(set(occ["driver"])) == ["apple", "laptop"]


def test_word_scores_sum_pieces_and_drop_specials() -> None:
    attributions = pd.DataFrame(
        {
            "doc_id": ["d"] * 5 + ["e"],
            "target": [0] * 6,
            "word_index": [-1, 0, 1, 1, -1, 0],
            "score": [9.0, 0.5, -0.25, 0.75, 9.0, 2.0],
        }
    )
    assert word_score_table(attributions, ["d"]) == {"d": {0: 0.5, 1: 0.5}}


def test_holdout_is_stable_under_reordering_and_close_to_its_fraction() -> None:
    ids = [f"item-{i}" for i in range(4000)]
    mask = holdout_mask(ids, 0.2, seed=0)
    assert abs(mask.mean() - 0.2) < 0.02
    reordered = holdout_mask(ids[::-1], 0.2, seed=0)
    assert (reordered[::-1] == mask).all()
    assert (holdout_mask(ids, 0.2, seed=1) != mask).any()
    with pytest.raises(ValueError, match="holdout fraction"):
        holdout_mask(ids, 1.0, seed=0)


def test_regression_quality_by_hand() -> None:
    actual = np.array([10.0, 100.0, 1000.0])
    predicted = np.log(np.array([20.0, 100.0, 500.0]))
    quality = regression_quality(predicted, actual, transform="log")
    logs = np.log(actual)
    r2 = 1 - ((math.log(2)) ** 2 + (math.log(0.5)) ** 2) / ((logs - logs.mean()) ** 2).sum()
    assert quality["r2"] == pytest.approx(r2)
    assert quality["mape"] == pytest.approx((1.0 + 0.0 + 0.5) / 3)
    assert to_price(np.array([1.0]), "identity")[0] == 1.0
    with pytest.raises(ValueError, match="output transform"):
        to_price(1.0, "sqrt")


def test_masking_needs_a_predictor() -> None:
    with pytest.raises(ValueError, match="needs a predictor"):
        driver_occurrences([], [], [], [], {}, np.zeros(0), None, output_transform="log", replacement=None)
