"""Faithfulness under token removal: AOPC comprehensiveness and log-odds.

Tokens are removed in decreasing order of attribution, ``ceil(fraction * n)`` of the ``n``
removable tokens at each fraction; special tokens ([CLS], [SEP], ...) are never removed. How a
removed token is replaced is a setting recorded with every result (see ``ReplacementPolicy``):
``mask`` ([MASK]), ``pad`` ([PAD]), ``unk`` ([UNK]), ``delete`` (the token is dropped and the
sequence shortens) or ``baseline`` (its word embedding becomes the zero vector; see
:mod:`xattr.models.replacement`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from xattr.metrics.replacement import Forward
from xattr.models.encoding import EncodedText
from xattr.models.forward import predict_logits
from xattr.models.loading import LoadedModel
from xattr.models.replacement import replacement_id
from xattr.types import ReplacementPolicy, TokenAttribution

DEFAULT_FRACTIONS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


@dataclass(frozen=True)
class MetricValue:
    """One metric value for one (text, target), at one removal fraction (or ``None``)."""

    position: int
    target: int
    metric: str
    fraction: float | None
    value: float


def removal_order(scores: np.ndarray, removable: np.ndarray) -> np.ndarray:
    """Indices of removable tokens by decreasing score; ties keep text order (stable sort)."""
    candidates = np.flatnonzero(removable)
    return candidates[np.argsort(-scores[candidates], kind="stable")]


def tokens_to_remove(n_removable: int, fraction: float) -> int:
    """``ceil(fraction * n_removable)``: how many tokens one removal step takes out."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"removal fraction must be in (0, 1], got {fraction}")
    return min(n_removable, math.ceil(fraction * n_removable - 1e-9))


def remove_tokens(encoded: EncodedText, positions: Sequence[int], replacement: int | None) -> EncodedText:
    """A copy of ``encoded`` with the tokens at ``positions`` replaced (or deleted when ``None``)."""
    drop = set(int(p) for p in positions)
    if any(encoded.special[p] for p in drop):
        raise ValueError("special tokens are never removed")
    if replacement is not None:
        ids = tuple(replacement if i in drop else t for i, t in enumerate(encoded.input_ids))
        return replace(encoded, input_ids=ids)
    keep = [i for i in range(len(encoded)) if i not in drop]

    def pick(values: tuple) -> tuple:  # type: ignore[type-arg]
        return tuple(values[i] for i in keep)

    return EncodedText(
        input_ids=pick(encoded.input_ids),
        token_type_ids=pick(encoded.token_type_ids),
        offsets=pick(encoded.offsets),
        segments=pick(encoded.segments),
        word_index=pick(encoded.word_index),
        special=pick(encoded.special),
        truncated=encoded.truncated,
    )


def target_probability(logits: np.ndarray, target: int, task: str) -> float:
    """The probability of the explained output: softmax, or sigmoid for multi-label.

    Extractive QA (``logits`` = start then end logits, ``target`` a span target): the probability
    of the span, ``softmax(start)[s] * softmax(end)[e]``.
    """
    if task == "question_answering":
        width = logits.shape[0] // 2
        start, end = int(target) // width, int(target) % width
        return target_probability(logits[:width], start, "classification") * target_probability(
            logits[width:], end, "classification"
        )
    if task == "multi_label":
        return float(1.0 / (1.0 + np.exp(-logits[target])))
    shifted = logits - logits.max()
    return float(np.exp(shifted[target]) / np.exp(shifted).sum())


def removal_curves(
    loaded: LoadedModel,
    encoded: Sequence[EncodedText],
    attributions: Sequence[TokenAttribution],
    *,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    policy: ReplacementPolicy = "mask",
    batch_size: int = 32,
    progress: Callable[[int, int], None] | None = None,
    forward: Forward | None = None,
) -> list[MetricValue]:
    """Comprehensiveness and log-odds of each attribution at each removal fraction.

    Classification (single-label, pair, multi-label), with ``p`` the probability of the
    explained class before and ``p_k`` after removing the top ``k`` fraction:

    * ``comprehensiveness`` = ``p - p_k`` (ERASER, DeYoung et al. 2020); its mean over the
      fractions is AOPC (``aopc``).
    * ``log_odds`` = ``log(p_k / p)`` (Mask-LRP Eq. 13; LDAV Eq. 7): lower is more faithful.
    * ``sufficiency`` = ``p - p_keep_k`` with only the top ``k`` fraction kept (every other
      non-special token removed; ERASER); its mean over the fractions is ``aopc_sufficiency``:
      lower is more faithful.

    Regression, with ``y`` the model output: ``comprehensiveness`` = ``|y - y_k|`` (there is no
    probability; the absolute output change plays its role), and, only when the output is the
    log of a positive quantity (``output_transform == "log"``, e.g. log price), ``log_odds`` =
    ``y_k - y``: the log of the ratio of the predicted quantities, the regression counterpart of
    Eq. 13's ratio of probabilities; ``sufficiency`` = ``|y - y_keep_k|``.

    Args:
        loaded: The model.
        encoded: The encoded corpus.
        attributions: Token scores, one per (text, target), from :func:`attribute_corpus`.
        fractions: Removal fractions, each in (0, 1].
        policy: Replacement policy for removed tokens.
        batch_size: Texts per forward pass.
        progress: Optional callback ``(done, total)`` over forward passes.
        forward: Optional model forward to use instead of the batched one (e.g. a
            :func:`~xattr.metrics.replacement.memoized` forward shared with other metrics).

    Returns:
        Per (text, target): one ``comprehensiveness`` and (where defined) one ``log_odds`` value
        per fraction, one ``sufficiency`` per fraction, plus ``aopc``, ``aopc_sufficiency`` and
        mean ``log_odds`` with ``fraction=None``.
    """
    replacement = replacement_id(loaded.tokenizer, policy)
    variants: list[EncodedText] = []
    for attribution in attributions:
        text = encoded[attribution.position]
        removable = ~np.asarray(text.special, dtype=bool)
        order = removal_order(np.asarray(attribution.scores, dtype=np.float64), removable)
        variants.append(text)
        for fraction in fractions:
            variants.append(remove_tokens(text, order[: tokens_to_remove(len(order), fraction)], replacement))
        for fraction in fractions:
            variants.append(remove_tokens(text, order[tokens_to_remove(len(order), fraction) :], replacement))
    if forward is not None:
        outputs = forward(variants)
    else:
        outputs = predict_logits(loaded, variants, batch_size=batch_size, progress=progress)
    n_fractions = len(fractions)
    stride = 2 * n_fractions + 1
    regression = loaded.task == "regression"
    has_log_odds = not regression or loaded.output_transform == "log"
    values: list[MetricValue] = []
    for row, attribution in enumerate(attributions):
        block = outputs[row * stride : (row + 1) * stride]
        pos, tgt = attribution.position, attribution.target
        if regression:
            base = float(block[0, 0])
            after = [float(b[0]) for b in block[1 : n_fractions + 1]]
            kept = [float(b[0]) for b in block[n_fractions + 1 :]]
            comp = [abs(base - a) for a in after]
            suff = [abs(base - a) for a in kept]
            log_odds = [a - base for a in after]
        else:
            base = target_probability(block[0], tgt, loaded.task)
            after = [target_probability(b, tgt, loaded.task) for b in block[1 : n_fractions + 1]]
            kept = [target_probability(b, tgt, loaded.task) for b in block[n_fractions + 1 :]]
            comp = [base - a for a in after]
            suff = [base - a for a in kept]
            log_odds = [math.log(max(a, 1e-300) / max(base, 1e-300)) for a in after]
        for fraction, c, lo, su in zip(fractions, comp, log_odds, suff, strict=True):
            values.append(MetricValue(pos, tgt, "comprehensiveness", float(fraction), c))
            values.append(MetricValue(pos, tgt, "sufficiency", float(fraction), su))
            if has_log_odds:
                values.append(MetricValue(pos, tgt, "log_odds", float(fraction), lo))
        values.append(MetricValue(pos, tgt, "aopc", None, float(np.mean(comp))))
        values.append(MetricValue(pos, tgt, "aopc_sufficiency", None, float(np.mean(suff))))
        if has_log_odds:
            values.append(MetricValue(pos, tgt, "log_odds", None, float(np.mean(log_odds))))
    return values
