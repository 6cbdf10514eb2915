"""Bootstrap CI of a mean over texts and the paired sign-flip comparison."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from xattr.metrics.uncertainty import Estimate, PairedComparison, bootstrap_mean, bootstrap_means, paired_difference


def _hand_interval(
    values: np.ndarray, confidence: float, resamples: int, rng: np.random.Generator
) -> tuple[float, float]:
    """Same draws as the implementation (one index matrix), then a plain loop over resamples."""
    index = rng.integers(0, len(values), size=(resamples, len(values)))
    means = []
    for row in index:
        total = 0.0
        for i in row:
            total += values[i]
        means.append(total / len(row))
    means.sort()
    alpha = 1.0 - confidence

    def quantile(q: float) -> float:  # linear interpolation, numpy's default
        h = (len(means) - 1) * q
        lo = int(np.floor(h))
        hi = min(lo + 1, len(means) - 1)
        return means[lo] + (h - lo) * (means[hi] - means[lo])

    return quantile(alpha / 2), quantile(1 - alpha / 2)


def test_bootstrap_matches_hand_loop() -> None:
    values = np.random.default_rng(3).normal(size=17)
    est = bootstrap_mean(values, confidence=0.9, resamples=500, seed=11)
    low, high = _hand_interval(values, 0.9, 500, np.random.default_rng(11))
    assert est.low == pytest.approx(low, abs=1e-12)
    assert est.high == pytest.approx(high, abs=1e-12)
    assert est.mean == pytest.approx(values.mean())
    assert (est.n, est.confidence, est.resamples) == (17, 0.9, 500)
    assert est.low <= est.mean <= est.high


def test_bootstrap_coverage_near_nominal() -> None:
    rng = np.random.default_rng(2024)
    true_mean = 0.6
    covered = 0
    trials = 200
    for t in range(trials):
        values = rng.normal(true_mean, 0.15, size=40)
        est = bootstrap_mean(values, resamples=1000, seed=t)
        covered += est.low <= true_mean <= est.high
    assert 0.9 <= covered / trials <= 0.99


def test_constant_values_zero_width() -> None:
    est = bootstrap_mean(np.full(10, 0.1))
    assert est.low == est.high
    assert est.low == pytest.approx(0.1) and est.mean == pytest.approx(0.1)


def test_seed_reproduces_and_differs() -> None:
    values = np.random.default_rng(0).random(30)
    assert bootstrap_mean(values, seed=5) == bootstrap_mean(values, seed=5)
    assert bootstrap_mean(values, seed=5) != bootstrap_mean(values, seed=6)
    a, b = values, values + np.random.default_rng(1).normal(0, 0.1, 30)
    assert paired_difference(a, b, seed=5) == paired_difference(a, b, seed=5)


def test_results_are_frozen() -> None:
    est = bootstrap_mean(np.array([1.0, 2.0, 3.0]))
    assert isinstance(est, Estimate)
    with pytest.raises(dataclasses.FrozenInstanceError):
        est.mean = 0.0  # type: ignore[misc]
    comp = paired_difference(np.array([1.0, 2.0]), np.array([0.0, 1.0]))
    assert isinstance(comp, PairedComparison)
    with pytest.raises(dataclasses.FrozenInstanceError):
        comp.p_value = 0.0  # type: ignore[misc]


def test_paired_identical_gives_zero_and_p_one() -> None:
    a = np.random.default_rng(4).random(25)
    comp = paired_difference(a, a.copy())
    assert comp.mean_difference == 0.0
    assert comp.low == 0.0 and comp.high == 0.0
    assert comp.p_value == 1.0
    assert comp.n == 25


def test_paired_clear_shift_is_significant() -> None:
    rng = np.random.default_rng(8)
    b = rng.random(30)
    a = b + 0.2 + rng.normal(0, 0.05, 30)
    comp = paired_difference(a, b, resamples=2000)
    assert comp.p_value < 0.01
    assert comp.p_value >= 1 / 2001  # never zero
    assert comp.low <= comp.mean_difference <= comp.high
    assert comp.low > 0
    assert comp.mean_difference == pytest.approx(np.mean(a - b))
    reverse = paired_difference(b, a, resamples=2000)
    assert reverse.mean_difference == pytest.approx(-comp.mean_difference)
    assert reverse.p_value < 0.01


def test_paired_interval_is_bootstrap_of_differences() -> None:
    rng = np.random.default_rng(9)
    a, b = rng.random(20), rng.random(20)
    comp = paired_difference(a, b, confidence=0.8, resamples=300, seed=2)
    est = bootstrap_mean(a - b, confidence=0.8, resamples=300, seed=2)
    assert (comp.low, comp.high) == (est.low, est.high)


def test_paired_p_value_matches_hand_loop() -> None:
    rng = np.random.default_rng(12)
    a, b = rng.random(15), rng.random(15)
    comp = paired_difference(a, b, resamples=400, seed=3)
    draws = np.random.default_rng(3)
    draws.integers(0, 15, size=(400, 15))  # the bootstrap indices come first
    signs = draws.choice(np.array([-1.0, 1.0]), size=(400, 15))
    d = a - b
    observed = abs(d.mean())
    extreme = sum(abs((s * d).mean()) >= observed * (1 - 1e-12) for s in signs)
    assert comp.p_value == pytest.approx((1 + extreme) / 401)


def test_errors() -> None:
    with pytest.raises(ValueError, match="empty"):
        bootstrap_mean(np.array([]))
    with pytest.raises(ValueError, match="at least 2"):
        bootstrap_mean(np.array([1.0]))
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_mean(np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="1-D"):
        bootstrap_mean(np.ones((2, 2)))
    for bad in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="confidence"):
            bootstrap_mean(np.array([1.0, 2.0]), confidence=bad)
        with pytest.raises(ValueError, match="confidence"):
            paired_difference(np.array([1.0, 2.0]), np.array([1.0, 2.0]), confidence=bad)
    with pytest.raises(ValueError, match="resamples"):
        bootstrap_mean(np.array([1.0, 2.0]), resamples=0)
    with pytest.raises(ValueError, match="length mismatch"):
        paired_difference(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="empty"):
        paired_difference(np.array([]), np.array([]))


def test_chunked_draws_equal_one_index_matrix(monkeypatch) -> None:
    """Resamples drawn in chunks (here 7 of them) give exactly one ``(resamples, n)`` matrix's interval and state."""
    import xattr.metrics.uncertainty as uncertainty

    values = np.random.default_rng(4).normal(size=301)
    rng = np.random.default_rng(9)
    index = rng.integers(0, values.size, size=(200, values.size))  # the documented single draw, int64
    means = values[index].mean(axis=1)
    alpha = 1.0 - 0.95  # as documented: the (1 - confidence) / 2 quantiles, computed this way
    low, high = np.quantile(means, [alpha / 2.0, 1.0 - alpha / 2.0])
    after = rng.random()
    monkeypatch.setattr(uncertainty, "_CHUNK_DRAWS", values.size * 30)
    chunked = np.random.default_rng(9)
    assert uncertainty._bootstrap_interval(values, 0.95, 200, chunked) == (low, high)
    assert chunked.random() == after  # the Generator is where one draw leaves it (paired tests draw on)


def test_bootstrap_means_equal_separate_bootstrap_means() -> None:
    rng = np.random.default_rng(2)
    columns = [rng.normal(size=40), rng.exponential(size=40), np.arange(40.0)]
    shared = bootstrap_means(columns, confidence=0.9, resamples=300, seed=5)
    assert shared == [bootstrap_mean(c, confidence=0.9, resamples=300, seed=5) for c in columns]
    with pytest.raises(ValueError, match="different lengths"):
        bootstrap_means([columns[0], columns[1][:10]])
    with pytest.raises(ValueError, match="at least one column"):
        bootstrap_means([])
