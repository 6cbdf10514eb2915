"""Agreement of token scores with human gold: ROC AUC against a gold mask, Pearson correlation.

These are the plausibility metrics of LAFA (Zhang et al., "Locally Aggregated Feature Attribution
on Natural Language Model Understanding", Section 5): Case I (relation classification) scores an
attribution by the ROC AUC of the token scores against the gold mask
``M_gold(X) = (0, .., 0, 1, .., 1, 0, .., 0)``, 1 on the entity spans; Case II (sentiment) by the
Pearson correlation between the scores and gold token-level sentiment. Both are computed per text
and then averaged over texts; ``per_text`` does the per-text step and counts the texts where the
metric is undefined (a mask with no positive or no negative, a constant vector).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy.stats import rankdata


class UndefinedMetricError(ValueError):
    """The metric has no value for this input (e.g. a constant vector, a one-class gold mask).

    A ``ValueError`` subclass, so callers may catch either; ``per_text`` skips (and counts) only
    these, while malformed input (empty, mismatched lengths, non-finite) still raises.
    """


def _check_pair(scores: np.ndarray, gold: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both as 1-D float arrays of equal, non-zero length, all finite."""
    s = np.asarray(scores, dtype=np.float64)
    g = np.asarray(gold, dtype=np.float64)
    if s.ndim != 1 or g.ndim != 1:
        raise ValueError(f"scores and gold must be 1-D, got shapes {s.shape} and {g.shape}")
    if s.size == 0:
        raise ValueError("scores and gold are empty")
    if s.size != g.size:
        raise ValueError(f"length mismatch: {s.size} scores but {g.size} gold values")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or infinite values")
    if not np.all(np.isfinite(g)):
        raise ValueError("gold contains NaN or infinite values")
    return s, g


def auc_against_gold(scores: np.ndarray, gold: np.ndarray) -> float:
    """ROC AUC of token scores against a binary gold mask (LAFA Section 5, Case I, Table 2).

    The probability that a gold token (1) scores higher than a non-gold token (0), ties counted
    as 1/2: the Mann-Whitney statistic ``U / (n_pos * n_neg)``, computed from mid-ranks as
    ``U = sum(rank of positives) - n_pos * (n_pos + 1) / 2``.

    Args:
        scores: Attribution score per token, shape ``(n,)``.
        gold: Gold mask per token, shape ``(n,)``, values 0 or 1 (1 = inside a gold span).

    Returns:
        The AUC in ``[0, 1]``: 1.0 when every gold token outranks every other token, 0.5 for
        all-tied scores.

    Raises:
        ValueError: Empty input, length mismatch, non-finite values, or gold values other than
            0/1.
        UndefinedMetricError: The gold mask has no positive or no negative token.
    """
    s, g = _check_pair(scores, gold)
    if not np.all((g == 0.0) | (g == 1.0)):
        raise ValueError("gold must be a binary mask of 0 and 1 values")
    positive = g == 1.0
    n_pos = int(positive.sum())
    n_neg = int(s.size - n_pos)
    if n_pos == 0:
        raise UndefinedMetricError("AUC undefined: the gold mask has no positive (gold) token")
    if n_neg == 0:
        raise UndefinedMetricError("AUC undefined: the gold mask has no negative (non-gold) token")
    ranks = rankdata(s, method="average")
    u = float(ranks[positive].sum()) - n_pos * (n_pos + 1) / 2.0
    return u / (n_pos * n_neg)


def pearson_against_gold(scores: np.ndarray, gold: np.ndarray) -> float:
    """Pearson correlation of token scores with gold token values (LAFA Section 5, Case II, Table 3).

    ``r = sum((s - mean s)(g - mean g)) / sqrt(sum((s - mean s)^2) * sum((g - mean g)^2))``.

    Args:
        scores: Attribution score per token, shape ``(n,)``.
        gold: Gold value per token (e.g. token sentiment, or a 0/1 mask), shape ``(n,)``.

    Returns:
        Pearson's r, clipped to ``[-1, 1]`` against rounding.

    Raises:
        ValueError: Empty input, fewer than 2 tokens, length mismatch, or non-finite values.
        UndefinedMetricError: Either vector is constant (zero variance), so r is undefined.
    """
    s, g = _check_pair(scores, gold)
    if s.size < 2:
        raise ValueError(f"Pearson correlation needs at least 2 tokens, got {s.size}")
    if np.all(s == s[0]):
        raise UndefinedMetricError("Pearson correlation undefined: the scores are constant")
    if np.all(g == g[0]):
        raise UndefinedMetricError("Pearson correlation undefined: the gold values are constant")
    ds = s - s.mean()
    dg = g - g.mean()
    # Scale each by its max magnitude first so that the products cannot overflow or underflow.
    ds = ds / np.abs(ds).max()
    dg = dg / np.abs(dg).max()
    r = float(np.dot(ds, dg) / np.sqrt(np.dot(ds, ds) * np.dot(dg, dg)))
    return float(np.clip(r, -1.0, 1.0))


def per_text(
    metric: Callable[[np.ndarray, np.ndarray], float],
    pairs: Sequence[tuple[np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, int]:
    """Applies a metric to each text's (scores, gold), skipping texts where it is undefined.

    LAFA reports the mean (and standard deviation) of the per-text metric over the test texts;
    texts where the metric has no value (``UndefinedMetricError``: a one-class gold mask, a
    constant vector) are left out and counted, so the count can be reported beside the mean.

    Args:
        metric: A function of ``(scores, gold)`` such as ``auc_against_gold`` or
            ``pearson_against_gold``.
        pairs: One ``(scores, gold)`` pair per text.

    Returns:
        ``(values, skipped)``: the defined values in text order, shape ``(len(pairs) - skipped,)``,
        and the number of texts skipped.

    Raises:
        ValueError: ``pairs`` is empty, or a pair is malformed (errors other than
            ``UndefinedMetricError`` propagate).
    """
    if len(pairs) == 0:
        raise ValueError("no texts: pairs is empty")
    values: list[float] = []
    skipped = 0
    for scores, gold in pairs:
        try:
            values.append(float(metric(scores, gold)))
        except UndefinedMetricError:
            skipped += 1
    return np.asarray(values, dtype=np.float64), skipped
