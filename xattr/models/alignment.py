"""Token-to-word alignment from the tokenizer's character offsets.

Words are whitespace-delimited spans of the original text ("16GB", "i7-1165G7" and "don't" are
one word each), which is what people read; word pieces are mapped to the word whose span holds
the piece's first character. Special tokens map to word ``-1``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_WORD = re.compile(r"\S+")


def word_spans(text: str) -> list[tuple[int, int]]:
    """Character spans ``(start, end)`` of the whitespace-delimited words of ``text``."""
    return [(m.start(), m.end()) for m in _WORD.finditer(text)]


def align_tokens_to_words(
    offsets: Sequence[tuple[int, int]],
    sequence_ids: Sequence[int | None],
    spans_by_segment: Sequence[Sequence[tuple[int, int]]],
) -> list[int]:
    """Map each token to a word index.

    Words of the second segment (the pair text) are numbered after those of the first.

    Args:
        offsets: Per token, its ``(start, end)`` characters within its own segment.
        sequence_ids: Per token, its segment (0 or 1), ``None`` for special tokens.
        spans_by_segment: Word spans of each segment, from :func:`word_spans`.

    Returns:
        Per token, the index of its word, or -1 for special tokens and zero-width tokens.
    """
    word_index: list[int] = []
    base = [0]
    for spans in spans_by_segment[:-1]:
        base.append(base[-1] + len(spans))
    cursors = [0] * len(spans_by_segment)
    for (start, end), segment in zip(offsets, sequence_ids, strict=True):
        if segment is None or end <= start:
            word_index.append(-1)
            continue
        spans = spans_by_segment[segment]
        i = cursors[segment]
        # Tokens arrive in text order, so the cursor only moves forward.
        while i < len(spans) and spans[i][1] <= start:
            i += 1
        cursors[segment] = i
        if i < len(spans) and spans[i][0] <= start < spans[i][1]:
            word_index.append(base[segment] + i)
        else:
            word_index.append(-1)
    return word_index
