"""Uncertainty over texts: a percentile-bootstrap CI of a mean, and paired method comparisons.

Per METHOD-NOTES, every reported metric is a mean over texts with a bootstrap confidence interval
whose spread is over texts (each resample redraws texts with replacement; the model, the
attribution method and its settings are fixed). The percentile bootstrap follows Efron and
Tibshirani, "An Introduction to the Bootstrap" (1993), Ch. 13 (percentile interval): the interval is the
``alpha/2`` and ``1 - alpha/2`` quantiles of the resampled means. Two methods evaluated on the
same texts are compared through the per-text differences: a bootstrap CI of their mean and a
two-sided paired sign-flip permutation test (Good, "Permutation, Parametric and Bootstrap Tests
of Hypotheses", 2005), with p-value ``(1 + #{|flipped mean| >= |observed|}) /
(1 + resamples)`` (Phipson and Smyth, "Permutation p-values should never be zero", 2010), which is never 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Estimate:
    """A mean over ``n`` texts with its percentile-bootstrap interval ``[low, high]``."""

    mean: float
    low: float
    high: float
    n: int
    confidence: float
    resamples: int


@dataclass(frozen=True)
class PairedComparison:
    """``mean(a - b)`` over ``n`` shared texts, its bootstrap interval and a sign-flip p-value."""

    mean_difference: float
    low: float
    high: float
    p_value: float
    n: int


def _check_values(values: np.ndarray, name: str) -> np.ndarray:
    """``values`` as a finite 1-D float array of at least 2 items."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one value per text), got shape {v.shape}")
    if v.size == 0:
        raise ValueError(f"{name} is empty")
    if v.size < 2:
        raise ValueError(f"{name} has {v.size} value; a bootstrap over texts needs at least 2")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return v


def _check_settings(confidence: float, resamples: int) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if isinstance(resamples, bool) or not isinstance(resamples, (int, np.integer)) or resamples < 1:
        raise ValueError(f"resamples must be a positive integer, got {resamples!r}")


#: Index draws per chunk of resamples (about 16 MB of int32 indices and 32 MB of gathered values).
_CHUNK_DRAWS = 1 << 22


def _bootstrap_intervals(
    columns: Sequence[np.ndarray], confidence: float, resamples: int, rng: np.random.Generator
) -> list[tuple[float, float]]:
    """Percentile intervals of the resampled means of each column, all from one ``(resamples, n)`` index draw.

    Every column has the same ``n`` values and is resampled with the same indices, so each interval
    is the one a separate Generator with the same state would give. The indices are drawn as int32 in
    chunks of resamples: numpy's bounded 32-bit draws give the same values for int32 and int64 and
    keep their stream across calls (the Generator holds a half-used 64-bit word), so the means, and
    the Generator's state afterwards, equal those of one ``rng.integers(0, n, (resamples, n))`` call;
    the chunks bound the memory at ~50 MB whatever ``n``.
    """
    n = columns[0].size
    dtype = np.int32 if n <= np.iinfo(np.int32).max else np.int64
    step = max(1, _CHUNK_DRAWS // n)
    means = np.empty((len(columns), resamples), dtype=np.float64)
    for start in range(0, resamples, step):
        stop = min(resamples, start + step)
        index = rng.integers(0, n, size=(stop - start, n), dtype=dtype)
        for c, values in enumerate(columns):
            means[c, start:stop] = values[index].mean(axis=1)
    alpha = 1.0 - confidence
    out = []
    for row in means:
        low, high = np.quantile(row, [alpha / 2.0, 1.0 - alpha / 2.0])
        out.append((float(low), float(high)))
    return out


def _bootstrap_interval(
    values: np.ndarray, confidence: float, resamples: int, rng: np.random.Generator
) -> tuple[float, float]:
    """Percentile interval of the resampled means of one column (:func:`_bootstrap_intervals`)."""
    return _bootstrap_intervals([values], confidence, resamples, rng)[0]


def bootstrap_mean(values: np.ndarray, *, confidence: float = 0.95, resamples: int = 2000, seed: int = 0) -> Estimate:
    """Mean over texts with a percentile-bootstrap confidence interval (Efron & Tibshirani, Ch. 13).

    Each of ``resamples`` resamples draws ``n`` texts with replacement (one vectorised
    ``(resamples, n)`` index matrix from ``numpy.random.default_rng(seed)``); the interval is the
    ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles (linear interpolation) of the
    resampled means.

    Args:
        values: One metric value per text, shape ``(n,)``, ``n >= 2``.
        confidence: Nominal coverage of the interval, in ``(0, 1)``.
        resamples: Number of bootstrap resamples.
        seed: Seed of the numpy Generator; the same seed gives the same interval.

    Returns:
        The ``Estimate``: sample mean, interval bounds, ``n``, ``confidence`` and ``resamples``.

    Raises:
        ValueError: Empty input, fewer than 2 values, non-finite values, not 1-D, confidence
            outside ``(0, 1)``, or ``resamples < 1``.
    """
    v = _check_values(values, "values")
    _check_settings(confidence, resamples)
    low, high = _bootstrap_interval(v, confidence, resamples, np.random.default_rng(seed))
    return Estimate(float(v.mean()), low, high, int(v.size), float(confidence), int(resamples))


def bootstrap_means(
    columns: Sequence[np.ndarray], *, confidence: float = 0.95, resamples: int = 2000, seed: int = 0
) -> list[Estimate]:
    """:func:`bootstrap_mean` of several columns over the same texts, drawing the resampling indices once.

    Equal to ``[bootstrap_mean(c, confidence=confidence, resamples=resamples, seed=seed) for c in columns]``
    (the same indices resample every column), at the cost of one of them.

    Args:
        columns: One or more value arrays of the same length ``n >= 2`` (one value per text).
        confidence: Nominal coverage of the intervals, in ``(0, 1)``.
        resamples: Number of bootstrap resamples.
        seed: Seed of the numpy Generator.

    Raises:
        ValueError: No columns, columns of different lengths, or what :func:`bootstrap_mean` rejects.
    """
    if not len(columns):
        raise ValueError("bootstrap_means needs at least one column")
    checked = [_check_values(c, f"column {i + 1}") for i, c in enumerate(columns)]
    sizes = {c.size for c in checked}
    if len(sizes) > 1:
        raise ValueError(f"columns of different lengths {sorted(sizes)}; they must hold the same texts")
    _check_settings(confidence, resamples)
    intervals = _bootstrap_intervals(checked, confidence, resamples, np.random.default_rng(seed))
    return [
        Estimate(float(c.mean()), low, high, int(c.size), float(confidence), int(resamples))
        for c, (low, high) in zip(checked, intervals, strict=True)
    ]


def paired_difference(
    a: np.ndarray,
    b: np.ndarray,
    *,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> PairedComparison:
    """Compares two methods on the same texts through the per-text differences ``d = a - b``.

    The interval is the percentile bootstrap of ``mean(d)`` (as ``bootstrap_mean(a - b)`` with the
    same seed). The p-value is a two-sided paired sign-flip permutation test of "no difference":
    under the null each ``d_i`` is symmetric about 0, so ``resamples`` random sign vectors
    ``s in {-1, +1}^n`` (drawn from the same Generator after the bootstrap indices) give
    ``p = (1 + #{|mean(s * d)| >= |mean(d)|}) / (1 + resamples)`` (Phipson & Smyth, 2010).

    Args:
        a: Metric value per text for the first method, shape ``(n,)``, ``n >= 2``.
        b: Metric value per text for the second method, on the same texts in the same order.
        confidence: Nominal coverage of the interval, in ``(0, 1)``.
        resamples: Number of bootstrap resamples, and of random sign flips.
        seed: Seed of the numpy Generator.

    Returns:
        The ``PairedComparison``: ``mean(a - b)``, its interval, the p-value and ``n``.

    Raises:
        ValueError: Empty input, fewer than 2 values, length mismatch, non-finite values, not 1-D,
            confidence outside ``(0, 1)``, or ``resamples < 1``.
    """
    x = _check_values(a, "a")
    y = _check_values(b, "b")
    if x.size != y.size:
        raise ValueError(f"length mismatch: a has {x.size} values but b has {y.size}; pair them by text")
    _check_settings(confidence, resamples)
    d = x - y
    rng = np.random.default_rng(seed)
    low, high = _bootstrap_interval(d, confidence, resamples, rng)
    observed = float(d.mean())
    signs = rng.choice(np.array([-1.0, 1.0]), size=(resamples, d.size))
    flipped = (signs * d).mean(axis=1)
    # A relative tolerance keeps sign patterns that reproduce |observed| up to rounding as "as extreme".
    extreme = int(np.count_nonzero(np.abs(flipped) >= abs(observed) * (1.0 - 1e-12)))
    p_value = (1.0 + extreme) / (1.0 + resamples)
    return PairedComparison(observed, low, high, float(p_value), int(d.size))
