"""AUC and Pearson against gold: scipy, a brute-force pair loop, toy cases and errors."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import mannwhitneyu, pearsonr

from xattr.metrics.gold import UndefinedMetricError, auc_against_gold, pearson_against_gold, per_text


def _brute_auc(scores: np.ndarray, gold: np.ndarray) -> float:
    """Fraction of (positive, negative) pairs the positive wins, ties 1/2."""
    total = 0.0
    pos = scores[gold == 1]
    neg = scores[gold == 0]
    for p in pos:
        for q in neg:
            total += 1.0 if p > q else 0.5 if p == q else 0.0
    return total / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", range(20))
def test_auc_matches_scipy_and_brute_force_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 40))
    scores = rng.integers(0, 5, size=n).astype(float)  # few distinct values: many ties
    gold = np.zeros(n)
    gold[rng.choice(n, size=int(rng.integers(1, n)), replace=False)] = 1
    auc = auc_against_gold(scores, gold)
    n_pos, n_neg = int(gold.sum()), int(n - gold.sum())
    expected = mannwhitneyu(scores[gold == 1], scores[gold == 0]).statistic / (n_pos * n_neg)
    assert auc == pytest.approx(expected, abs=1e-12)
    assert auc == pytest.approx(_brute_auc(scores, gold), abs=1e-12)


def test_auc_continuous_scores_match_brute_force() -> None:
    rng = np.random.default_rng(7)
    scores = rng.normal(size=50)
    gold = (rng.random(50) < 0.3).astype(int)
    assert auc_against_gold(scores, gold) == pytest.approx(_brute_auc(scores, gold), abs=1e-12)


def test_auc_toy_cases() -> None:
    gold = np.array([0, 1, 1, 0, 0])
    assert auc_against_gold(np.array([0.1, 0.9, 0.8, 0.2, 0.0]), gold) == 1.0
    assert auc_against_gold(np.array([0.9, 0.1, 0.0, 0.8, 0.7]), gold) == 0.0
    assert auc_against_gold(np.full(5, 0.3), gold) == 0.5
    # one positive tied with one of two negatives, above the other: (1/2 + 1) / 2
    assert auc_against_gold(np.array([1.0, 1.0, 0.0]), np.array([1, 0, 0])) == 0.75


def test_auc_errors() -> None:
    with pytest.raises(UndefinedMetricError, match="no positive"):
        auc_against_gold(np.array([0.1, 0.2]), np.array([0, 0]))
    with pytest.raises(UndefinedMetricError, match="no negative"):
        auc_against_gold(np.array([0.1, 0.2]), np.array([1, 1]))
    with pytest.raises(ValueError, match="empty"):
        auc_against_gold(np.array([]), np.array([]))
    with pytest.raises(ValueError, match="length mismatch"):
        auc_against_gold(np.array([0.1, 0.2, 0.3]), np.array([0, 1]))
    with pytest.raises(ValueError, match="binary"):
        auc_against_gold(np.array([0.1, 0.2]), np.array([0, 2]))
    with pytest.raises(ValueError, match="NaN"):
        auc_against_gold(np.array([np.nan, 0.2]), np.array([0, 1]))
    assert issubclass(UndefinedMetricError, ValueError)


@pytest.mark.parametrize("seed", range(10))
def test_pearson_matches_scipy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 60))
    scores = np.round(rng.normal(size=n), 1)  # rounded: ties
    gold = 0.5 * scores + rng.normal(size=n)
    if np.ptp(scores) == 0:
        scores[0] += 1.0
    assert pearson_against_gold(scores, gold) == pytest.approx(pearsonr(scores, gold).statistic, abs=1e-12)
    mask = (rng.random(n) < 0.5).astype(float)
    mask[:2] = [0.0, 1.0]
    assert pearson_against_gold(scores, mask) == pytest.approx(pearsonr(scores, mask).statistic, abs=1e-12)


def test_pearson_toy_cases_and_scale() -> None:
    x = np.array([1.0, 2.0, 3.0, 4.0])
    assert pearson_against_gold(x, 2 * x + 1) == pytest.approx(1.0)
    assert pearson_against_gold(x, -x) == pytest.approx(-1.0)
    assert pearson_against_gold(x * 1e-200, x * 1e200) == pytest.approx(1.0)
    assert pearson_against_gold(np.array([1.0, 0.0, 1.0, 0.0]), np.array([1.0, 1.0, 0.0, 0.0])) == pytest.approx(0.0)


def test_pearson_errors() -> None:
    with pytest.raises(UndefinedMetricError, match="scores are constant"):
        pearson_against_gold(np.full(4, 0.1), np.array([0.0, 1.0, 0.0, 1.0]))
    with pytest.raises(UndefinedMetricError, match="gold values are constant"):
        pearson_against_gold(np.array([0.0, 1.0, 2.0]), np.ones(3))
    with pytest.raises(ValueError, match="at least 2"):
        pearson_against_gold(np.array([1.0]), np.array([1.0]))
    with pytest.raises(ValueError, match="empty"):
        pearson_against_gold(np.array([]), np.array([]))
    with pytest.raises(ValueError, match="length mismatch"):
        pearson_against_gold(np.array([1.0, 2.0]), np.array([1.0, 2.0, 3.0]))


def test_per_text_skips_and_counts_undefined() -> None:
    pairs = [
        (np.array([0.9, 0.1, 0.2]), np.array([1, 0, 0])),  # 1.0
        (np.array([0.9, 0.1, 0.2]), np.array([0, 0, 0])),  # undefined: no positive
        (np.array([0.1, 0.9, 0.2]), np.array([1, 0, 0])),  # 0.0
        (np.array([0.5, 0.5]), np.array([1, 1])),  # undefined: no negative
    ]
    values, skipped = per_text(auc_against_gold, pairs)
    np.testing.assert_array_equal(values, [1.0, 0.0])
    assert skipped == 2
    values, skipped = per_text(pearson_against_gold, [(np.ones(3), np.array([0.0, 1.0, 2.0]))])
    assert values.shape == (0,) and skipped == 1


def test_per_text_errors() -> None:
    with pytest.raises(ValueError, match="empty"):
        per_text(auc_against_gold, [])
    with pytest.raises(ValueError, match="length mismatch"):  # malformed input is not skipped
        per_text(auc_against_gold, [(np.array([0.1, 0.2]), np.array([1, 0, 0]))])
