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
import torch

from xattr.data.synthetic_catalogue import PRICE_DRIVERS, expected_log_price, generate_catalogue
from xattr.metrics.uncertainty import bootstrap_mean
from xattr.models.alignment import word_spans
from xattr.models.encoding import EncodedText, encode_texts
from xattr.models.loading import LoadedModel
from xattr.reporting.phrases import AttributeRule, extract_units
from xattr.reporting.price_drivers import (
    ALL_CATEGORIES,
    DriverOptions,
    aggregate_drivers,
    analyse_price_drivers,
    driver_occurrences,
    drop_attribute_value_words,
    example_positions,
    holdout_mask,
    listing_units,
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


def driver_options(**overrides: object) -> DriverOptions:
    settings: dict[str, object] = {
        "method": "grad_input",
        "effect": "mask",
        "replacement": "mask",
        "rules": None,
        "noun_chunks": False,
        "spacy_model": "none",
        "min_texts": 2,
        "confidence": 0.95,
        "resamples": 50,
        "seed": 0,
        "batch_size": 3,
        "holdout_fraction": 0.5,
        "examples": 2,
        "top_k": 5,
        "title": "T",
        "baseline_alpha": 1.0,
        "stop_words": True,
        "numbers": True,
        "min_word_chars": 2,
        "laptop_rules_min_share": 0.1,
        "min_r2_gain": 0.0,
        "max_mape_ratio": 1.0,
        "show_untrusted": False,
    }
    return DriverOptions(**(settings | overrides))  # type: ignore[arg-type]


def test_driver_options_turn_rule_dicts_into_attribute_rules() -> None:
    assert driver_options().attribute_rules() is None
    rules = driver_options(rules=[{"attribute": "size", "pattern": r"(?P<value>\d+) inch"}]).attribute_rules()
    assert rules == (AttributeRule("size", r"(?P<value>\d+) inch"),)
    with pytest.raises(ValueError, match="invalid pattern"):
        driver_options(rules=[{"attribute": "x", "pattern": "(oops"}]).attribute_rules()


def test_listing_units_use_string_brands_and_the_given_rules() -> None:
    texts = ["apple laptop 13 inch", "dell laptop"]
    units = listing_units(["a", "b"], texts, {"a": "apple", "b": float("nan")})
    assert units == [extract_units(texts[0], brand="apple", chunks=()), extract_units(texts[1], chunks=())]
    assert "brand: apple" in {u.key for u in units[0]}
    size = (AttributeRule("size", r"(?P<value>\d+) inch"),)
    ruled = listing_units(["a"], texts[:1], {}, rules=size, chunks=[[(0, 12)]])
    assert ruled == [extract_units(texts[0], rules=size, chunks=[(0, 12)])]
    assert {u.key for u in ruled[0] if u.kind == "attribute"} == {"size: 13"}


class ApplePriceModel(torch.nn.Module):
    """Log price ``log(100)``, plus ``log(2)`` when the token ``apple_id`` is present (a price of 200)."""

    def __init__(self, apple_id: int) -> None:
        super().__init__()
        self.config = type("Config", (), {"num_labels": 1})()
        self.apple_id = apple_id

    def forward(self, input_ids, attention_mask, **_):  # noqa: ANN001, ANN003
        present = ((input_ids == self.apple_id) & (attention_mask == 1)).any(dim=1).double()
        return type("Output", (), {"logits": (math.log(100.0) + math.log(2.0) * present).unsqueeze(1)})()


@pytest.fixture
def apple_catalogue(tiny_tokenizer):
    texts = ["apple laptop new", "apple laptop used", "dell laptop new", "dell laptop used"]
    texts += ["apple laptop", "dell laptop", "lenovo laptop new", "lenovo laptop used"]
    frame = pd.DataFrame(
        {
            "doc_id": [f"d{i}" for i in range(8)],
            "text": texts,
            "label": [210.0, 190.0, 95.0, 105.0, 200.0, 100.0, 100.0, 100.0],
            "group": ["x", "x", "y", "y", "x", "y", None, None],
        }
    )
    brands = {"d0": "apple", "d1": "apple", "d4": "apple", "d2": float("nan")}
    model = ApplePriceModel(tiny_tokenizer.convert_tokens_to_ids("apple"))
    loaded = LoadedModel(model, tiny_tokenizer, "regression", "stub", torch.device("cpu"), "log", 64)
    encoded = encode_texts(tiny_tokenizer, texts, max_length=64)
    # Grad x Input of a model linear in "apple": log 2 on the word, 0 elsewhere (one piece per word).
    rows = [
        (d, w, math.log(2.0) if word == "apple" else 0.0)
        for d, t in zip(frame["doc_id"], texts, strict=True)
        for w, word in enumerate(t.split())
    ]
    attributions = pd.DataFrame(rows, columns=["doc_id", "word_index", "score"]).assign(target=0)
    return loaded, encoded, frame, brands, attributions


@pytest.mark.parametrize("effect", ["mask", "attribution"])
def test_analysis_of_a_model_that_doubles_the_price_of_apple_listings(apple_catalogue, effect: str) -> None:
    loaded, encoded, frame, brands, attributions = apple_catalogue
    analysis = analyse_price_drivers(loaded, encoded, frame, brands, attributions, driver_options(effect=effect))
    overall = analysis.drivers[analysis.drivers["scope"] == "overall"].set_index("driver")
    row = overall.loc["brand: apple"]  # 200 -> 100 when masked, in d0, d1 and d4
    assert (row["texts"], row["frequency"]) == (3, 3 / 8)
    assert row["mean_effect"] == pytest.approx(100.0, abs=1e-9)
    assert row["effect_ci_low"] == pytest.approx(100.0, abs=1e-9)
    assert row["mean_relative_effect"] == pytest.approx(1.0, abs=1e-12)
    # "apple" is the value of brand: apple wherever it occurs: reported once, as the pair.
    assert "apple" not in overall.index
    assert overall.loc["laptop", "texts"] == 8 and overall.loc["laptop", "mean_effect"] == pytest.approx(0.0, abs=1e-9)
    x = analysis.drivers[(analysis.drivers["scope"] == "category") & (analysis.drivers["category"] == "x")]
    assert x.set_index("driver").loc["brand: apple", "texts"] == 3
    assert analysis.texts_per_group == {ALL_CATEGORIES: 8, "x": 3, "y": 3}
    apple = np.array([1, 1, 0, 0, 1, 0, 0, 0], dtype=bool)
    np.testing.assert_allclose(analysis.predicted_price, np.where(apple, 200.0, 100.0), rtol=1e-12)
    np.testing.assert_allclose(analysis.outputs, np.log(analysis.predicted_price), rtol=1e-12)
    held_out = holdout_mask(frame["doc_id"].tolist(), 0.5, 0)
    assert held_out.sum() >= 2 and (~held_out).sum() >= 2
    np.testing.assert_array_equal(analysis.held_out, held_out)
    prices = frame["label"].to_numpy()
    assert analysis.model_quality == regression_quality(analysis.outputs[held_out], prices[held_out], transform="log")
    assert analysis.word_scores["d0"] == {0: math.log(2.0), 1: 0.0, 2: 0.0}
    options = driver_options(effect=effect)
    texts = frame["text"].tolist()
    assert analysis.rules == options.rule_choice(texts) and not analysis.rules.laptop  # no processor, ram, storage
    units = listing_units(
        frame["doc_id"].tolist(), texts, brands, rules=analysis.rules.rules, words=options.word_filter()
    )
    counts = pd.Series([u.key for doc in units for u in doc]).value_counts()
    assert analysis.occurrences == int(counts[counts >= 2].sum())
    assert analysis.metrics == {
        "r2": analysis.model_quality["r2"],
        "mape": analysis.model_quality["mape"],
        "baseline_r2": analysis.baseline_quality["r2"],
        "baseline_mape": analysis.baseline_quality["mape"],
        "held_out": float(held_out.sum()),
        "occurrences": float(analysis.occurrences),
        "drivers_overall": float(len(overall)),
        "drivers_per_category": float((analysis.drivers["scope"] == "category").sum()),
        "model_trusted": float(
            analysis.model_quality["r2"] > analysis.baseline_quality["r2"]
            and analysis.model_quality["mape"] <= analysis.baseline_quality["mape"]
        ),
    }


def test_analysis_needs_two_held_out_listings(apple_catalogue) -> None:
    loaded, encoded, frame, brands, attributions = apple_catalogue
    with pytest.raises(ValueError, match="only 0 held-out listings"):
        analyse_price_drivers(loaded, encoded, frame, brands, attributions, driver_options(holdout_fraction=0.0))


def test_example_positions_span_the_error_range_best_first() -> None:
    actual = np.full(7, 100.0)
    # |log error| ranks among the held-out listings (0, 1, 2, 4, 5, 6): 4 < 0 < 6 < 2 < 5 < 1.
    predicted = np.array([105.0, 400.0, 150.0, 100.0, 101.0, 250.0, 80.0])
    held_out = np.array([True, True, True, False, True, True, True])
    assert example_positions(predicted, actual, held_out, 2) == (4, 1)  # best and worst
    assert example_positions(predicted, actual, held_out, 3) == (4, 6, 1)  # ranks 0, 2.5 -> 2 (to even), 5
    assert example_positions(predicted, actual, held_out, 6) == (4, 0, 6, 2, 5, 1)
    assert example_positions(predicted, actual, held_out, 20) == (4, 0, 6, 2, 5, 1)
    assert example_positions(predicted, actual, np.zeros(7, dtype=bool), 1) == (3,)
    assert example_positions(predicted, actual, held_out, 0) == ()


def test_word_rows_that_duplicate_an_attribute_value_of_the_same_scope_are_dropped() -> None:
    drivers = pd.DataFrame(
        {
            "scope": ["overall", "overall", "overall", "category", "category"],
            "category": [ALL_CATEGORIES, ALL_CATEGORIES, ALL_CATEGORIES, "ink", "ink"],
            "driver": ["dell", "brand: dell", "8gb", "dell", "ram: 8 gb"],
            "kind": ["word", "attribute", "word", "word", "attribute"],
        }
    )
    kept = drop_attribute_value_words(drivers)
    assert kept["driver"].tolist() == ["brand: dell", "8gb", "dell", "ram: 8 gb"]  # "dell" in ink has no brand row
    assert drop_attribute_value_words(drivers.iloc[:0]).empty


def test_analysis_colours_examples_by_each_words_masked_effect(apple_catalogue) -> None:
    loaded, encoded, frame, brands, attributions = apple_catalogue
    analysis = analyse_price_drivers(loaded, encoded, frame, brands, attributions, driver_options(examples=3))
    assert analysis.examples == example_positions(
        analysis.predicted_price, frame["label"].to_numpy(), analysis.held_out, 3
    )
    for position in analysis.examples:
        doc_id, words = frame["doc_id"].iloc[position], frame["text"].iloc[position].split()
        # Masking "apple" halves a price of 200 (effect +100); no other word changes the output.
        expected = {i: (100.0 if w == "apple" else 0.0) for i, w in enumerate(words)}
        assert analysis.example_effects[doc_id] == pytest.approx(expected, abs=1e-9)
