"""Regression faithfulness: MAPE after masking the top p% of tokens.

LAFA (Zhang et al., "Locally Aggregated Feature Attribution on Natural Language Model
Understanding"), Section 5.3 (Case III, Figure 2): on texts whose prediction is within 1% of the
true value, mask the ``p%`` of tokens with the highest attribution, predict again (``y_masked``)
and report the mean absolute percentage error ``MAPE = mean_i |y_i - y_masked_i| / |y_i|`` against
the true value; higher means the method found the tokens the prediction rests on.

When the model's output is the log of a positive quantity (``output_transform == "log"``, e.g.
log price), the quantity ``exp(output)`` is compared with the label (the price itself), so MAPE
is in price terms as in the paper. Few texts may fall within 1% for a weak model (METHOD-NOTES:
~1% of catalogue titles); :func:`select_accurate_texts` then falls back to the ``n`` texts with
the smallest error and says so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from xattr.metrics.perturbation import MetricValue, removal_order, remove_tokens, tokens_to_remove
from xattr.metrics.replacement import Forward
from xattr.models.encoding import EncodedText
from xattr.types import TokenAttribution

#: Mask proportions of LAFA Figure 2 (1% to 50%).
DEFAULT_MASK_FRACTIONS: tuple[float, ...] = (0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5)


@dataclass(frozen=True)
class AccurateSelection:
    """Which texts MAPE is evaluated on.

    Attributes:
        positions: Chosen corpus positions, ascending.
        within_threshold: How many candidate texts were within the error threshold.
        threshold: The relative error threshold (0.01 = 1%).
        fallback: True when fewer than ``n`` texts qualified and the ``n`` texts with the
            smallest error were taken instead.
    """

    positions: tuple[int, ...]
    within_threshold: int
    threshold: float
    fallback: bool

    def describe(self) -> str:
        """One line for reports: how the MAPE texts were chosen."""
        if self.fallback:
            return (
                f"only {self.within_threshold} texts within {self.threshold:.0%} prediction error; "
                f"used the {len(self.positions)} texts with the smallest error instead"
            )
        return f"{len(self.positions)} texts drawn from {self.within_threshold} within {self.threshold:.0%} error"


def to_quantity(outputs: np.ndarray, output_transform: str) -> np.ndarray:
    """Model outputs on the label's scale: ``exp`` for log-output models, else unchanged."""
    if output_transform == "log":
        return np.exp(outputs)
    if output_transform != "identity":
        raise ValueError(f"unknown output_transform {output_transform!r}; valid: identity, log")
    return outputs


def relative_errors(predicted: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``|y - y_hat| / |y|`` per text.

    Raises:
        ValueError: Shapes differ, a label is zero or a value is not finite.
    """
    p = np.asarray(predicted, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if p.shape != y.shape:
        raise ValueError(f"{p.size} predictions but {y.size} labels")
    if not (np.all(np.isfinite(p)) and np.all(np.isfinite(y))):
        raise ValueError("predictions and labels must be finite for MAPE")
    if np.any(y == 0.0):
        raise ValueError(f"MAPE is undefined for a zero label (rows {np.flatnonzero(y == 0.0)[:10].tolist()})")
    return np.abs(y - p) / np.abs(y)


def select_accurate_texts(
    predicted: np.ndarray,
    labels: np.ndarray,
    *,
    n: int,
    threshold: float = 0.01,
    seed: int = 0,
) -> AccurateSelection:
    """Texts within ``threshold`` relative prediction error (LAFA 5.3: 200 drawn at random).

    Args:
        predicted: ``(m,)`` predictions on the label's scale (see :func:`to_quantity`).
        labels: ``(m,)`` true values.
        n: Texts wanted.
        threshold: Relative error threshold.
        seed: Seed of the random draw among qualifying texts.

    Returns:
        ``n`` texts drawn at random among those within the threshold when at least ``n`` qualify;
        otherwise the ``n`` texts with the smallest error (``fallback=True``).

    Raises:
        ValueError: ``n < 1`` or no texts; see :func:`relative_errors`.
    """
    errors = relative_errors(predicted, labels)
    if errors.size == 0:
        raise ValueError("no texts to select from")
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    n = min(n, errors.size)
    within = np.flatnonzero(errors <= threshold)
    if within.size >= n:
        chosen = np.random.default_rng(seed).choice(within, size=n, replace=False)
        return AccurateSelection(tuple(sorted(int(i) for i in chosen)), int(within.size), threshold, False)
    smallest = np.argsort(errors, kind="stable")[:n]
    return AccurateSelection(tuple(sorted(int(i) for i in smallest)), int(within.size), threshold, True)


def mape_under_masking(
    forward: Forward,
    encoded: Sequence[EncodedText],
    attributions: Sequence[TokenAttribution],
    labels: Sequence[float],
    *,
    replacement: int | None,
    output_transform: str = "identity",
    fractions: Sequence[float] = DEFAULT_MASK_FRACTIONS,
) -> list[MetricValue]:
    """Absolute percentage error after masking the top ``p`` of tokens (LAFA Section 5.3).

    Args:
        forward: Model outputs for a list of texts, ``(n, 1)``.
        encoded: The encoded corpus.
        attributions: Token scores of the selected texts (one per text).
        labels: True value of each corpus position (indexed by ``attribution.position``).
        replacement: Token id for masked positions (``None``: delete; ``BASELINE_ID``: zero embedding).
        output_transform: ``"log"`` when the model outputs the log of the label.
        fractions: Mask proportions in (0, 1]; ``ceil(p * n)`` non-special tokens are masked.

    Returns:
        Per text, named ``mape`` (its mean over texts is the MAPE): the absolute percentage error
        ``|y - y_masked| / |y|`` at each fraction, its mean over the fractions (``fraction=None``),
        and ``mape_unmasked`` (the error before masking).
    """
    if not attributions:
        return []
    variants: list[EncodedText] = []
    for attribution in attributions:
        text = encoded[attribution.position]
        order = removal_order(np.asarray(attribution.scores, dtype=np.float64), ~np.asarray(text.special, dtype=bool))
        variants.append(text)
        for fraction in fractions:
            variants.append(remove_tokens(text, order[: tokens_to_remove(len(order), fraction)], replacement))
    predicted = to_quantity(forward(variants)[:, 0], output_transform)
    stride = len(fractions) + 1
    values: list[MetricValue] = []
    for row, attribution in enumerate(attributions):
        pos, tgt = attribution.position, attribution.target
        y = float(labels[pos])
        if not math.isfinite(y) or y == 0.0:
            raise ValueError(f"MAPE needs a finite non-zero label; text at position {pos} has {y}")
        block = predicted[row * stride : (row + 1) * stride]
        errors = np.abs(y - block) / abs(y)
        values.append(MetricValue(pos, tgt, "mape_unmasked", None, float(errors[0])))
        for fraction, e in zip(fractions, errors[1:], strict=True):
            values.append(MetricValue(pos, tgt, "mape", float(fraction), float(e)))
        values.append(MetricValue(pos, tgt, "mape", None, float(np.mean(errors[1:]))))
    return values
