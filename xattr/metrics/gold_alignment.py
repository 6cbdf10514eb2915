"""Bring gold rationales to the unit of the attribution, then score agreement (LAFA Section 5).

Case I (relation classification, LAFA Table 2): gold character spans become a 0/1 mask over the
text's non-special word pieces (a piece is gold when its characters overlap a gold span of its
segment) and each attribution is scored by ROC AUC against it (``gold_auc``); LAFA's mask is over
words, so ``gold_word_auc`` also scores words (pieces summed; a word is gold when a piece of it
is), where a one-draw-per-word random baseline is exactly at chance whatever the piece counts
(METHOD-NOTES: entity names split into more pieces than other words). Case II (sentiment, LAFA Table 3):
word pieces are summed into whitespace words (as reports do; METHOD-NOTES) and correlated
(Pearson) with the gold score of each word; words cut off by truncation are left out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from xattr.metrics.gold import UndefinedMetricError, auc_against_gold, pearson_against_gold
from xattr.metrics.perturbation import MetricValue
from xattr.models.encoding import EncodedText
from xattr.types import TokenAttribution

#: A gold span: ``(segment, start, end)`` characters within its segment.
Span = tuple[int, int, int]


def token_gold_mask(text: EncodedText, spans: Sequence[Span]) -> tuple[np.ndarray, np.ndarray]:
    """The non-special token positions and their 0/1 gold labels.

    Returns:
        ``(positions, mask)``: positions of non-special tokens, shape ``(k,)``, and 1.0 where the
        token overlaps a gold span of its own segment.
    """
    positions = np.flatnonzero(~np.asarray(text.special, dtype=bool))
    mask = np.zeros(positions.size, dtype=np.float64)
    for i, p in enumerate(positions):
        segment = text.segments[p]
        start, end = text.offsets[p]
        if end <= start:
            continue
        mask[i] = float(any(s == segment and start < e and b < end for s, b, e in spans))
    return positions, mask


def word_scores(text: EncodedText, scores: np.ndarray, n_words: int) -> tuple[np.ndarray, np.ndarray]:
    """Sum piece scores into the first segment's words ``0..n_words-1`` that have a token.

    Returns:
        ``(word_ids, summed_scores)`` for the words present (truncated words are absent).
    """
    totals: dict[int, float] = {}
    for p, (w, segment, special) in enumerate(zip(text.word_index, text.segments, text.special, strict=True)):
        if special or segment != 0 or not 0 <= w < n_words:
            continue
        totals[w] = totals.get(w, 0.0) + float(scores[p])
    ids = np.asarray(sorted(totals), dtype=np.int64)
    return ids, np.asarray([totals[w] for w in ids], dtype=np.float64)


def word_gold_mask(text: EncodedText, scores: np.ndarray, spans: Sequence[Span]) -> tuple[np.ndarray, np.ndarray]:
    """Piece scores summed into words and each word's 0/1 gold label (1 when any of its pieces is gold).

    Words are ``(segment, word_index)`` pairs of non-special pieces, in text order; pieces without
    a word (``word_index < 0``) are left out.

    Returns:
        ``(word_scores, word_mask)``, each of shape ``(words,)``.
    """
    positions, mask = token_gold_mask(text, spans)
    totals: dict[tuple[int, int], list[float]] = {}
    for p, gold in zip(positions, mask, strict=True):
        word = int(text.word_index[p])
        if word < 0:
            continue
        entry = totals.setdefault((int(text.segments[p]), word), [0.0, 0.0])
        entry[0] += float(scores[p])
        entry[1] = max(entry[1], float(gold))
    ordered = [totals[k] for k in sorted(totals)]
    return np.asarray([e[0] for e in ordered], dtype=np.float64), np.asarray([e[1] for e in ordered], dtype=np.float64)


def gold_agreement(
    encoded: Sequence[EncodedText],
    attributions: Sequence[TokenAttribution],
    *,
    spans: Mapping[int, Sequence[Span]] | None = None,
    word_gold: Mapping[int, Sequence[float]] | None = None,
) -> tuple[list[MetricValue], dict[str, int]]:
    """Per (text, target) ROC AUC against gold spans and Pearson r against gold word scores.

    Args:
        encoded: The encoded corpus.
        attributions: Token scores, one per (text, target).
        spans: Gold spans by corpus position (texts without an entry are skipped).
        word_gold: Gold score per whitespace word of the text, by corpus position.

    Returns:
        ``gold_auc`` (pieces), ``gold_word_auc`` (words) / ``gold_pearson`` values (``fraction=None``)
        and counts of texts where the metric is undefined (one-class mask, constant vector):
        ``gold_auc_undefined``, ``gold_word_auc_undefined``,
        ``gold_pearson_undefined`` (each only for the gold given).
    """
    values: list[MetricValue] = []
    undefined = {}
    if spans is not None:
        undefined["gold_auc_undefined"] = 0
        undefined["gold_word_auc_undefined"] = 0
    if word_gold is not None:
        undefined["gold_pearson_undefined"] = 0
    for attribution in attributions:
        pos, tgt = attribution.position, attribution.target
        text = encoded[pos]
        scores = np.asarray(attribution.scores, dtype=np.float64)
        if spans is not None and pos in spans:
            positions, mask = token_gold_mask(text, spans[pos])
            try:
                values.append(MetricValue(pos, tgt, "gold_auc", None, auc_against_gold(scores[positions], mask)))
            except UndefinedMetricError:
                undefined["gold_auc_undefined"] += 1
            summed, word_mask = word_gold_mask(text, scores, spans[pos])
            try:
                values.append(MetricValue(pos, tgt, "gold_word_auc", None, auc_against_gold(summed, word_mask)))
            except UndefinedMetricError:
                undefined["gold_word_auc_undefined"] += 1
        if word_gold is not None and pos in word_gold:
            gold = np.asarray(word_gold[pos], dtype=np.float64)
            ids, summed = word_scores(text, scores, gold.size)
            try:
                if ids.size < 2:
                    raise UndefinedMetricError("fewer than 2 words")
                values.append(MetricValue(pos, tgt, "gold_pearson", None, pearson_against_gold(summed, gold[ids])))
            except UndefinedMetricError:
                undefined["gold_pearson_undefined"] += 1
    return values, undefined
