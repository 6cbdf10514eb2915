"""TF-IDF + ridge: the numpy closed form against scikit-learn, and hand-computed TF-IDF."""

from __future__ import annotations

import math

import numpy as np
import pytest

from xattr.reporting.baseline import fit_linear_baseline, model_verdict
from xattr.reporting.phrases import WordFilter

TEXTS = [
    "apple laptop i7 16gb",
    "dell laptop i3",
    "hp ink cartridge black",
    "apple macbook pro",
    "dell i7 workstation",
    "ink black pack of 2",
    "lenovo laptop i5 8gb ram",
]
TARGETS = np.array([7.0, 5.5, 3.0, 7.3, 6.9, 2.8, 6.0])


def test_tfidf_matches_a_hand_computation() -> None:
    model = fit_linear_baseline(["aa bb bb", "aa cc"], [1.0, 2.0], backend="numpy")
    assert model.vocabulary == ("aa", "bb", "cc")
    idf = [1.0, math.log(3 / 2) + 1.0, math.log(3 / 2) + 1.0]
    np.testing.assert_allclose(model.idf, idf)
    row = np.array([idf[0], 2 * idf[1], 0.0])
    np.testing.assert_allclose(model.transform(["aa bb bb"]).toarray()[0], row / np.linalg.norm(row))


@pytest.mark.parametrize("texts", [TEXTS, TEXTS[:3] * 4])  # dual (terms > rows) and primal (terms <= rows) form
def test_numpy_closed_form_equals_scikit_learn(texts: list[str]) -> None:
    pytest.importorskip("sklearn")
    targets = np.resize(TARGETS, len(texts)) + np.arange(len(texts)) * 0.01
    ours = fit_linear_baseline(texts, targets, alpha=0.5, backend="numpy")
    theirs = fit_linear_baseline(texts, targets, alpha=0.5, backend="scikit-learn")
    assert ours.vocabulary == theirs.vocabulary
    np.testing.assert_allclose(ours.idf, theirs.idf, rtol=1e-12)
    np.testing.assert_allclose(ours.coef, theirs.coef, atol=1e-8)
    assert ours.intercept == pytest.approx(theirs.intercept, abs=1e-8)
    np.testing.assert_allclose(ours.predict(["apple i7", "ink"]), theirs.predict(["apple i7", "ink"]), atol=1e-8)


def test_ridge_solution_satisfies_the_normal_equations() -> None:
    model = fit_linear_baseline(TEXTS, TARGETS, alpha=0.3, backend="numpy")
    x = model.transform(TEXTS).toarray()
    xc, yc = x - x.mean(axis=0), TARGETS - TARGETS.mean()
    np.testing.assert_allclose(xc.T @ (yc - xc @ model.coef), 0.3 * model.coef, atol=1e-10)
    assert model.intercept == pytest.approx(TARGETS.mean() - x.mean(axis=0) @ model.coef)


def test_top_terms_are_the_extremes() -> None:
    model = fit_linear_baseline(TEXTS, TARGETS, backend="numpy")
    terms = model.top_terms(2)
    weights = dict(zip(model.vocabulary, model.coef, strict=True))
    ordered = sorted(weights, key=lambda t: -weights[t])
    assert [t for t, _ in terms] == ordered[:2] + ordered[-2:]


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="one target per text"):
        fit_linear_baseline(["a b"], [1.0, 2.0])
    with pytest.raises(ValueError, match="finite"):
        fit_linear_baseline(["aa", "bb"], [1.0, float("nan")])
    with pytest.raises(ValueError, match="alpha"):
        fit_linear_baseline(["aa", "bb"], [1.0, 2.0], alpha=0)
    with pytest.raises(ValueError, match="no term"):
        fit_linear_baseline(["aa", "bb"], [1.0, 2.0], min_df=2, backend="numpy")
    with pytest.raises(ValueError, match="backend"):
        fit_linear_baseline(["aa", "bb"], [1.0, 2.0], backend="torch")


def test_driver_terms_filter_words_and_measure_their_typical_change() -> None:
    texts = ["the apple laptop", "the dell laptop", "a hp mouse", "the logi mouse", "apple mouse 100"]
    model = fit_linear_baseline(texts, np.log([900.0, 600.0, 30.0, 25.0, 80.0]))
    keep = WordFilter().keeps
    terms = model.driver_terms(texts, 2, keep)
    assert [t["term"] for t in terms if t["weight"] > 0] == [
        t for t, w in sorted(zip(model.vocabulary, model.coef, strict=True), key=lambda tw: -tw[1]) if keep(t) and w > 0
    ][:2]
    lowering = [
        t for t, w in sorted(zip(model.vocabulary, model.coef, strict=True), key=lambda tw: tw[1]) if keep(t) and w < 0
    ][:2]
    assert [t["term"] for t in terms if t["weight"] < 0] == lowering[::-1]
    assert not {"the", "100"} & {t["term"] for t in terms}
    x = model.transform(texts).toarray()
    for record in terms:
        column = x[:, model.vocabulary.index(record["term"])]
        assert record["listings"] == int((column > 0).sum())
        assert record["typical_change"] == pytest.approx(np.median(column[column > 0]) * record["weight"], rel=1e-12)
    common = model.driver_terms(texts, 2, keep, min_listings=2)  # apple, laptop, mouse: in 2+ listings
    assert {t["term"] for t in common} <= {"apple", "laptop", "mouse"} and all(t["listings"] >= 2 for t in common)


def test_model_verdict_trusts_only_a_model_better_than_the_baseline() -> None:
    better = model_verdict({"r2": 0.5, "mape": 0.4}, {"r2": 0.3, "mape": 0.5})
    assert better.trusted and "R^2 0.500 vs 0.300" in better.reason
    worse = model_verdict({"r2": 0.219, "mape": 1.54}, {"r2": 0.341, "mape": 1.17})
    assert not worse.trusted
    assert worse.reason == (
        "The model is not better than the linear baseline: its R^2 does not exceed the baseline's by more than 0"
        " and its MAPE is above the baseline's (held-out R^2 0.219 vs 0.341 for TF-IDF + ridge, MAPE 154.0% vs"
        " 117.0%)."
    )
    assert not model_verdict({"r2": 0.35, "mape": 0.4}, {"r2": 0.3, "mape": 0.5}, min_r2_gain=0.1).trusted
    assert model_verdict({"r2": 0.5, "mape": 0.6}, {"r2": 0.3, "mape": 0.5}, max_mape_ratio=1.25).trusted
    assert not model_verdict({"r2": -133.9, "mape": 9.0}, {"r2": 0.3, "mape": 0.5}).trusted
    assert not model_verdict({"r2": float("nan"), "mape": 0.1}, {"r2": 0.3, "mape": 0.5}).trusted


def test_classifier_quality_and_majority_verdict_by_hand() -> None:
    from xattr.reporting.baseline import classifier_quality, majority_verdict

    # 6 labelled rows (one None left out): gold b,b,a,a,b,c -> majority b at 3/6; predicted right on 4 of 6.
    gold = ["b", "b", "a", None, "a", "b", "c"]
    predicted = ["b", "a", "a", "c", "a", "b", "b"]
    quality = classifier_quality(gold, predicted, where="6 rows")
    assert (quality.accuracy, quality.majority_accuracy, quality.majority_label, quality.rows) == (4 / 6, 0.5, "b", 6)
    assert majority_verdict(quality).trusted
    assert not majority_verdict(quality, min_accuracy_gain=0.2).trusted  # 0.667 - 0.5 = 0.167 <= 0.2
    tie = classifier_quality(["x", "y"], ["y", "y"], where="2 rows")
    assert tie.majority_label == "x" and not majority_verdict(tie).trusted  # ties: the label sorting first
    assert classifier_quality([None, float("nan")], ["a", "b"], where="none") is None
