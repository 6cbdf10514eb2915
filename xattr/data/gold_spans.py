"""Locate gold phrases in a text as character spans, on whitespace-token boundaries."""

from __future__ import annotations

import re

_TOKEN = re.compile(r"\S+")


def find_phrase(text: str, phrase: str) -> list[tuple[int, int]]:
    """Every occurrence of ``phrase`` in ``text`` as a run of whole whitespace tokens.

    Both are split on whitespace; an occurrence is a contiguous run of the text's tokens equal to
    the phrase's tokens (so ``"FC"`` is not found inside ``"FCs"``).

    Args:
        text: The text.
        phrase: The phrase to find (e.g. an entity string).

    Returns:
        ``(start, end)`` character spans of every occurrence, in text order; empty when absent.
    """
    tokens = [(m.group(), m.start(), m.end()) for m in _TOKEN.finditer(text)]
    wanted = phrase.split()
    if not wanted:
        return []
    n = len(wanted)
    return [
        (tokens[i][1], tokens[i + n - 1][2])
        for i in range(len(tokens) - n + 1)
        if [t[0] for t in tokens[i : i + n]] == wanted
    ]


def merge_spans(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The union of character spans as sorted, non-overlapping spans (touching spans stay apart)."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start < merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged
