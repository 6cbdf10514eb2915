"""TF-IDF + ridge: the numpy closed form against scikit-learn, and hand-computed TF-IDF."""

from __future__ import annotations

import math

import numpy as np
import pytest

from xattr.reporting.baseline import fit_linear_baseline

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
