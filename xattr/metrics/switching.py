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

from xattr.methods.runner import TokenAttribution
from xattr.metrics.applicability import decision, require_task
from xattr.metrics.perturbation import MetricValue, remove_tokens
from xattr.metrics.replacement import Forward
from xattr.models.encoding import EncodedText


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
) -> list[MetricValue]:
    """Switching point (LDAV Section 4.3.3) of each (text, target).

    Args:
        forward: Model outputs for a list of texts, ``(n, n_outputs)``.
        encoded: The encoded corpus.
        attributions: Token scores, one per (text, target).
        task: The model's task; regression is refused.
        replacement: Token id for removed positions (``None``: delete; ``BASELINE_ID``: zero
            embedding).

    Returns:
        Per (text, target): ``switching_point`` (``k / n_words`` for the first ``k`` that flips
        the decision, 1.0 when none does) and ``switched`` (1.0 or 0.0), both with
        ``fraction=None``.

    Raises:
        MetricNotApplicableError: ``task`` is regression.
    """
    require_task("switching_point", task)
    variants: list[EncodedText] = []
    spans: list[tuple[int, int]] = []
    for attribution in attributions:
        text = encoded[attribution.position]
        words = word_removal_order(text, np.asarray(attribution.scores, dtype=np.float64))
        start = len(variants)
        variants.append(text)
        removed: list[int] = []
        for word in words:
            removed.extend(word)
            variants.append(remove_tokens(text, removed, replacement))
        spans.append((start, len(words)))
    if not variants:
        return []
    outputs = forward(variants)
    values: list[MetricValue] = []
    for attribution, (start, n_words) in zip(attributions, spans, strict=True):
        pos, tgt = attribution.position, attribution.target
        original = decision(outputs[start], tgt, task)
        point, switched = 1.0, 0.0
        for k in range(1, n_words + 1):
            if decision(outputs[start + k], tgt, task) != original:
                point, switched = k / n_words, 1.0
                break
        values.append(MetricValue(pos, tgt, "switching_point", None, point))
        values.append(MetricValue(pos, tgt, "switched", None, switched))
    return values
