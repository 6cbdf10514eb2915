"""Precision@k of token scores against a gold answer span (Mask-LRP Section 5.1, Table 2).

Mask-LRP evaluates question-answering explanations by "precision@20": how much of the gold answer
the 20 top-scored tokens cover. The paper gives no formula; its reported values (up to 67%, with
SQuAD answers of about three tokens) are only reachable when the count of answer tokens among the
top k is divided by the number of answer tokens, not by k, and the authors' public evaluation
script does count the answer tokens among the top 20 against the answer length (read, not copied).
Both normalisations are offered:

- ``normalise="answer"`` (default, the paper's magnitudes): ``|top-k ∩ gold| / min(k, |gold|)``,
  1.0 when the top k hold the whole answer (or k answer tokens when the answer is longer).
- ``normalise="k"`` (textbook precision): ``|top-k ∩ gold| / min(k, n)``.

Texts with at most ``k`` candidate tokens (``n <= k``): the top k are all ``n`` candidates, so
every ranking scores the same (1.0 with ``"answer"``, ``|gold| / n`` with ``"k"``); such texts do
not separate methods, and :func:`precision_at_k` reports them through ``ranked``. Ties are broken by
position (earlier token first), so the value is deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

Normalise = Literal["answer", "k"]


@dataclass(frozen=True)
class PrecisionAtK:
    """Precision@k of one text.

    Attributes:
        value: The precision in ``[0, 1]``.
        hits: Gold tokens among the top ``k``.
        denominator: What ``hits`` was divided by.
        ranked: Whether the ranking mattered (the text had more than ``k`` candidate tokens).
    """

    value: float
    hits: int
    denominator: int
    ranked: bool


def precision_at_k(
    scores: np.ndarray,
    gold: np.ndarray,
    *,
    k: int = 20,
    candidates: np.ndarray | None = None,
    normalise: Normalise = "answer",
) -> PrecisionAtK:
    """Precision@k of one text's token scores against its gold answer mask.

    Args:
        scores: ``(n,)`` token scores (higher = more important).
        gold: ``(n,)`` booleans, True on the tokens of the gold answer span.
        k: How many top-scored tokens are taken (20 in the paper).
        candidates: Optional ``(n,)`` booleans: only these tokens are ranked (e.g. leave out special
            tokens); all tokens when ``None``. Gold tokens outside the candidates are ignored.
        normalise: ``"answer"`` or ``"k"`` (see the module docstring).

    Returns:
        The precision with its counts.

    Raises:
        ValueError: Mismatched or non-1-D shapes, non-finite scores, ``k < 1``, no candidate token,
            or no gold token among the candidates.
    """
    s = np.asarray(scores, dtype=np.float64)
    g = np.asarray(gold, dtype=bool)
    c = np.ones_like(g) if candidates is None else np.asarray(candidates, dtype=bool)
    if s.ndim != 1 or g.shape != s.shape or c.shape != s.shape:
        raise ValueError(f"scores, gold and candidates must be 1-D of one length; got {s.shape}, {g.shape}, {c.shape}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or infinite values")
    positions = np.flatnonzero(c)
    if positions.size == 0:
        raise ValueError("no candidate token to rank")
    answer = int(g[positions].sum())
    if answer == 0:
        raise ValueError("the gold mask has no token among the candidates")
    order = positions[np.argsort(-s[positions], kind="stable")]
    top = order[:k]
    hits = int(g[top].sum())
    denominator = min(k, answer) if normalise == "answer" else min(k, positions.size)
    return PrecisionAtK(hits / denominator, hits, denominator, positions.size > k)


def corpus_precision_at_k(per_text: Sequence[PrecisionAtK]) -> float:
    """Pooled precision over texts: total hits over total denominators (long answers weigh more).

    The mean of the per-text values (each text equal) is ``np.mean([p.value for p in per_text])``.
    """
    if len(per_text) == 0:
        raise ValueError("no texts")
    return sum(p.hits for p in per_text) / sum(p.denominator for p in per_text)


def gold_token_mask(
    offsets: Sequence[tuple[int, int]],
    segments: Sequence[int],
    spans: Sequence[tuple[int, int]],
    *,
    segment: int = 1,
) -> np.ndarray:
    """Tokens of one segment that overlap any gold character span.

    For extractive QA the text is the question (segment 0) and the pair text the context
    (segment 1); answer spans are character offsets ``[start, end)`` within the context.

    Args:
        offsets: Per token, ``(start, end)`` characters within its own segment
            (:attr:`xattr.models.encoding.EncodedText.offsets`).
        segments: Per token, its segment (0, 1, or -1 for special tokens).
        spans: Gold ``(start, end)`` character spans within ``segment``.
        segment: Which segment the spans refer to.

    Returns:
        ``(n_tokens,)`` booleans.

    Raises:
        ValueError: A span is empty or reversed, or covers no token (e.g. it was truncated away).
    """
    mask = np.zeros(len(offsets), dtype=bool)
    for start, end in spans:
        if not 0 <= start < end:
            raise ValueError(f"gold span ({start}, {end}) is empty or reversed")
        hit = [
            i
            for i, ((a, b), s) in enumerate(zip(offsets, segments, strict=True))
            if s == segment and b > a and a < end and b > start
        ]
        if not hit:
            raise ValueError(f"gold span ({start}, {end}) covers no token of segment {segment} (truncated?)")
        mask[hit] = True
    return mask
