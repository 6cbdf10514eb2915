"""Degradation test: does the prediction survive removing the most important tokens?

LDAV (Nguyen et al., "Locally Distributed Activation Vectors for Guided Feature Attribution"),
Section 4.3.1, Eq. 6::

    degradation-score(u) = (1/m) sum_i 1[ y_hat_u^(i) = y_hat^(i) ]

the fraction of the ``m`` test texts whose predicted label is unchanged after the top ``u`` tokens
(by attribution) are masked; lower is better (the removed tokens carried the decision). Here ``u``
runs over fractions of each text's removable tokens, ``ceil(fraction * n)`` as in
:mod:`xattr.metrics.perturbation`, and the per-fraction curve is returned with its mean over the
fractions (``degradation``; Eq. 6 averaged over ``u``). Eq. 6 needs a predicted label, so it is
defined for classification only.

LDAV's Eq. 6 is a single most-important-first (MoRF) curve. The *area between* the
least-important-first (LeRF) and MoRF curves is the degradation test of Schulz et al. 2020
("Restricting the Flow", Section 4) and Ancona et al.; it is returned as ``degradation_area``
(higher is better) and applies to regression too: with ``change_k = p - p_k`` (probability of the
explained class) or ``|y - y_k|`` (regression output),
``degradation_area = mean_k(change_k^MoRF - change_k^LeRF)``. Also returned: the LeRF label
curve ``degradation_lerf`` (classification).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from xattr.metrics.applicability import decision
from xattr.metrics.perturbation import (
    DEFAULT_FRACTIONS,
    MetricValue,
    removal_order,
    remove_tokens,
    target_probability,
    tokens_to_remove,
)
from xattr.metrics.replacement import Forward
from xattr.models.encoding import EncodedText
from xattr.types import TokenAttribution


def degradation_curves(
    forward: Forward,
    encoded: Sequence[EncodedText],
    attributions: Sequence[TokenAttribution],
    *,
    task: str,
    replacement: int | None,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
) -> list[MetricValue]:
    """Degradation score (LDAV Eq. 6) and the LeRF-MoRF area, per text and fraction.

    Args:
        forward: Model outputs for a list of texts, ``(n, n_outputs)``.
        encoded: The encoded corpus.
        attributions: Token scores, one per (text, target).
        task: The model's task (``classification``, ``pair_classification``, ``multi_label``,
            ``regression``).
        replacement: Token id written into removed positions (``None``: delete them;
            ``BASELINE_ID``: zero embedding), from :func:`xattr.models.replacement.replacement_id`.
        fractions: Removal fractions in (0, 1].

    Returns:
        Per (text, target): ``degradation`` and ``degradation_lerf`` (0/1 per fraction and their
        means; classification only) and ``degradation_area`` (mean over fractions).
    """
    variants: list[EncodedText] = []
    for attribution in attributions:
        text = encoded[attribution.position]
        removable = ~np.asarray(text.special, dtype=bool)
        scores = np.asarray(attribution.scores, dtype=np.float64)
        morf = removal_order(scores, removable)
        lerf = removal_order(-scores, removable)
        variants.append(text)
        for order in (morf, lerf):
            for fraction in fractions:
                variants.append(remove_tokens(text, order[: tokens_to_remove(len(order), fraction)], replacement))
    if not variants:
        return []
    outputs = forward(variants)
    n_f = len(fractions)
    stride = 2 * n_f + 1
    classification = task != "regression"
    values: list[MetricValue] = []
    for row, attribution in enumerate(attributions):
        block = outputs[row * stride : (row + 1) * stride]
        pos, tgt = attribution.position, attribution.target
        morf_block, lerf_block = block[1 : n_f + 1], block[n_f + 1 :]
        if classification:
            base = target_probability(block[0], tgt, task)
            morf_change = [base - target_probability(b, tgt, task) for b in morf_block]
            lerf_change = [base - target_probability(b, tgt, task) for b in lerf_block]
            label = decision(block[0], tgt, task)
            kept_morf = [float(decision(b, tgt, task) == label) for b in morf_block]
            kept_lerf = [float(decision(b, tgt, task) == label) for b in lerf_block]
            for fraction, km, kl in zip(fractions, kept_morf, kept_lerf, strict=True):
                values.append(MetricValue(pos, tgt, "degradation", float(fraction), km))
                values.append(MetricValue(pos, tgt, "degradation_lerf", float(fraction), kl))
            values.append(MetricValue(pos, tgt, "degradation", None, float(np.mean(kept_morf))))
            values.append(MetricValue(pos, tgt, "degradation_lerf", None, float(np.mean(kept_lerf))))
        else:
            base = float(block[0, 0])
            morf_change = [abs(base - float(b[0])) for b in morf_block]
            lerf_change = [abs(base - float(b[0])) for b in lerf_block]
        gap = [m - lr for m, lr in zip(morf_change, lerf_change, strict=True)]
        for fraction, g in zip(fractions, gap, strict=True):
            values.append(MetricValue(pos, tgt, "degradation_area", float(fraction), float(g)))
        values.append(MetricValue(pos, tgt, "degradation_area", None, float(np.mean(gap))))
    return values
