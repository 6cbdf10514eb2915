"""Switching point: the smallest fraction of top words whose removal flips the prediction.

LDAV (Nguyen et al., "Locally Distributed Activation Vectors for Guided Feature Attribution"),
Section 4.3.3, after Nguyen 2018: words are removed one at a time in decreasing order of
importance ``x_1, x_2, ..., x_n``; the switching point is the number of words removed when the
predicted class first changes, normalised by the number of words in the input. Lower is better
(fewer words carried the decision).

Words are the whitespace words of the alignment (``EncodedText.word_index``); a word's score is
the sum of its word pieces' scores and removing a word removes all its pieces; special tokens are
never removed. A text whose prediction never changes, even with every word removed, gets 1.0 and
is counted (``switched`` = 0) so the count can be reported beside the mean. Multi-label models:
the decision is whether the explained label is predicted (logit > 0). Regression has no class:
refused.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from xattr.metrics.applicability import decision, require_task
from xattr.metrics.perturbation import MetricValue, remove_tokens
from xattr.metrics.replacement import Forward
from xattr.models.encoding import EncodedText
from xattr.types import TokenAttribution


def word_removal_order(text: EncodedText, scores: np.ndarray) -> list[list[int]]:
    """Token positions of each word, words by decreasing summed score (ties: text order).

    Args:
        text: One encoded text.
        scores: ``(n_tokens,)`` token scores.

    Returns:
        One list of token positions per word (non-special tokens only), most important first.
    """
    pieces: dict[int, list[int]] = {}
    for position, (word, special) in enumerate(zip(text.word_index, text.special, strict=True)):
        if special:
            continue
        # Tokens without a word (zero-width) are their own unit, keyed after every real word.
        key = word if word >= 0 else -(position + 1)
        pieces.setdefault(key, []).append(position)
    units = list(pieces.values())
    totals = np.asarray([float(np.sum(scores[u])) for u in units], dtype=np.float64)
    return [units[i] for i in np.argsort(-totals, kind="stable")]


def switching_points(
    forward: Forward,
    encoded: Sequence[EncodedText],
    attributions: Sequence[TokenAttribution],
    *,
    task: str,
    replacement: int | None,
    chunk: int = 8,
) -> list[MetricValue]:
    """Switching point (LDAV Section 4.3.3) of each (text, target).

    Prefixes are evaluated ``chunk`` words at a time for every text still unswitched, so a text
    that flips after few words costs few forward passes (the result equals a full scan).

    Args:
        forward: Model outputs for a list of texts, ``(n, n_outputs)``.
        encoded: The encoded corpus.
        attributions: Token scores, one per (text, target).
        task: The model's task; regression is refused.
        replacement: Token id for removed positions (``None``: delete; ``BASELINE_ID``: zero
            embedding).
        chunk: Words added per round (at least 1).

    Returns:
        Per (text, target): ``switching_point`` (``k / n_words`` for the first ``k`` that flips
        the decision, 1.0 when none does) and ``switched`` (1.0 or 0.0), both with
        ``fraction=None``.

    Raises:
        MetricNotApplicableError: ``task`` is regression.
        ValueError: ``chunk < 1``.
    """
    require_task("switching_point", task)
    if chunk < 1:
        raise ValueError(f"chunk must be at least 1, got {chunk}")
    if not attributions:
        return []
    orders = [word_removal_order(encoded[a.position], np.asarray(a.scores, dtype=np.float64)) for a in attributions]
    originals = forward([encoded[a.position] for a in attributions])
    labels = [decision(originals[i], a.target, task) for i, a in enumerate(attributions)]
    found: dict[int, int] = {}
    done = [0] * len(attributions)  # words already tried per row
    active = [i for i, words in enumerate(orders) if words]
    while active:
        variants: list[EncodedText] = []
        owners: list[tuple[int, int]] = []
        for i in active:
            text = encoded[attributions[i].position]
            for k in range(done[i] + 1, min(done[i] + chunk, len(orders[i])) + 1):
                removed = [p for word in orders[i][:k] for p in word]
                variants.append(remove_tokens(text, removed, replacement))
                owners.append((i, k))
        outputs = forward(variants)
        for (i, k), row in zip(owners, outputs, strict=True):
            if i not in found and decision(row, attributions[i].target, task) != labels[i]:
                found[i] = k
            done[i] = max(done[i], k)
        active = [i for i in active if i not in found and done[i] < len(orders[i])]
    values: list[MetricValue] = []
    for i, attribution in enumerate(attributions):
        pos, tgt = attribution.position, attribution.target
        if i in found:
            point, switched = found[i] / len(orders[i]), 1.0
        else:
            point, switched = 1.0, 0.0
        values.append(MetricValue(pos, tgt, "switching_point", None, point))
        values.append(MetricValue(pos, tgt, "switched", None, switched))
    return values
