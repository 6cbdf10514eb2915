"""Read the Stanford Sentiment Treebank (SST) in PTB tree format into the canonical corpus columns.

Each line of an SST file is one binarized bracketed tree, ``(label child child)`` or
``(label token)``, where every node, leaves included, carries a sentiment label 0..4
(0 = very negative, 2 = neutral, 4 = very positive). The root label is the sentence label; the
leaf labels are word-level gold sentiment for each token on its own.

Canonical columns: ``doc_id``, ``text``, ``text_pair``, ``label``, ``label_set`` and ``group``,
plus the gold columns ``gold_words`` (the leaf words) and ``gold_scores`` (per leaf,
``|leaf label - 2| / 2``), and the corpus gold column ``gold_word_scores`` (the same scores per
whitespace word of ``text``, as :mod:`xattr.models.alignment` splits it: a leaf such as
``8\xa01/2`` counts as two words with its score each). Every problem is reported with the file
and the 1-based line number.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from xattr.data.files import read_text_lines

#: PTB escapes used in the SST trees and the characters they stand for.
PTB_UNESCAPES: dict[str, str] = {
    "-LRB-": "(",
    "-RRB-": ")",
    "-LSB-": "[",
    "-RSB-": "]",
    "-LCB-": "{",
    "-RCB-": "}",
}

# Tokens are split on ASCII whitespace only: SST has tokens with a non-breaking space inside (``8\xa01\/2``).
_TOKEN = re.compile(r"\(|\)|[^ \t\r\n\f\v()]+")
_NEUTRAL = 2


class SstError(ValueError):
    """An SST tree file cannot be used as given; the message names file and line."""


@dataclass(frozen=True)
class SstTree:
    """One parsed SST sentence tree.

    Attributes:
        label: The root (sentence) label, 0..4.
        tokens: The leaf tokens in order, as written in the tree (PTB escapes kept).
        token_labels: Each leaf's own label, 0..4, aligned with ``tokens``.
    """

    label: int
    tokens: tuple[str, ...]
    token_labels: tuple[int, ...]


def unescape_ptb(token: str) -> str:
    """Undo the PTB escapes used in SST tokens.

    ``-LRB-``/``-RRB-`` (and the square and curly variants) become brackets, and the
    backslash escapes ``\\/`` and ``\\*`` become ``/`` and ``*``. Clitics stay split.

    Args:
        token: One PTB token.

    Returns:
        The token with escapes undone.
    """
    if token in PTB_UNESCAPES:
        return PTB_UNESCAPES[token]
    return token.replace("\\/", "/").replace("\\*", "*")


def _parse_label(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"node label {raw!r} is not an integer") from None
    if not 0 <= value <= 4:
        raise ValueError(f"node label {value} is outside 0..4")
    return value


def parse_tree(line: str) -> SstTree:
    """Parse one SST PTB tree.

    Args:
        line: A bracketed tree such as ``(3 (2 a) (4 (3 lovely) (2 film)))``.

    Returns:
        The root label, the leaf tokens and the leaf labels.

    Raises:
        ValueError: Empty line, unbalanced parentheses, text outside the tree, a non-integer or
            out-of-range label, or a node without children; the message names the problem.
    """
    parts = _TOKEN.findall(line)
    if not parts:
        raise ValueError("empty line: expected a bracketed tree")
    if parts[0] != "(":
        raise ValueError(f"tree must start with '(' but starts with {parts[0]!r}")
    tokens: list[str] = []
    token_labels: list[int] = []
    # Each open node on the stack: [label, number of children seen, has a leaf token].
    stack: list[list[int]] = []
    root_label: int | None = None
    i = 0
    while i < len(parts):
        part = parts[i]
        if root_label is not None:
            raise ValueError(f"unbalanced parentheses: text {part!r} after the root node closed")
        if part == "(":
            if i + 1 >= len(parts) or parts[i + 1] in ("(", ")"):
                raise ValueError("unbalanced or malformed tree: '(' is not followed by a label")
            label = _parse_label(parts[i + 1])
            if stack:
                if stack[-1][2]:
                    raise ValueError("malformed tree: a leaf node has both a token and child nodes")
                stack[-1][1] += 1
            stack.append([label, 0, 0])
            i += 2
            continue
        if part == ")":
            if not stack:
                raise ValueError("unbalanced parentheses: ')' without a matching '('")
            label, children, _ = stack.pop()
            if children == 0:
                raise ValueError(f"malformed tree: node with label {label} has no children")
            if not stack:
                root_label = label
            i += 1
            continue
        # A leaf token.
        if not stack:
            raise ValueError(f"token {part!r} outside any node")
        node = stack[-1]
        if node[1] > 0:
            raise ValueError(f"malformed tree: node with label {node[0]} mixes token {part!r} with other children")
        node[1] += 1
        node[2] = 1
        tokens.append(part)
        token_labels.append(node[0])
        i += 1
    if stack:
        raise ValueError(f"unbalanced parentheses: {len(stack)} unclosed '('")
    assert root_label is not None
    return SstTree(label=root_label, tokens=tuple(tokens), token_labels=tuple(token_labels))


def gold_score(label: int) -> float:
    """Word-level gold strength: the absolute value of the centred label, ``|label - 2| / 2``, in [0, 1]."""
    return abs(label - _NEUTRAL) / 2.0


def read_sst(path: Path | str, *, fine_grained: bool = False, binary_drop_neutral: bool = True) -> pd.DataFrame:
    """Read an SST PTB tree file into the canonical corpus columns plus word-level gold.

    Args:
        path: A tree file, one tree per line (e.g. ``trees/dev.txt``). Blank lines are skipped.
        fine_grained: Use the SST-5 root label 0..4. Otherwise use SST-2: 0 for labels 0-1 and
            1 for labels 3-4.
        binary_drop_neutral: In SST-2 mode, drop sentences whose root label is 2. When False they
            are kept with a missing (NaN) label. Ignored when ``fine_grained``.

    Returns:
        Columns ``doc_id`` (``"<file stem>-<line number>"``), ``text`` (the unescaped leaves
        joined by single spaces; clitics stay split), ``text_pair`` (None), ``label`` (float),
        ``label_set`` (None), ``group`` (None), ``gold_words`` (tuple of unescaped leaf words,
        ``" ".join(gold_words) == text``) and ``gold_scores`` (tuple of ``|leaf label - 2| / 2``).

    Raises:
        SstError: Missing or unreadable file, a malformed tree (named by file and line), or no
            trees at all.
    """
    name = str(path)
    lines = read_text_lines(path, what="SST file", error=SstError)
    records: list[dict[str, object]] = []
    trees = 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            tree = parse_tree(line)
        except ValueError as exc:
            raise SstError(f"SST file {name!r}, line {number}: {exc}") from None
        trees += 1
        if fine_grained:
            label: float = float(tree.label)
        elif tree.label == _NEUTRAL:
            if binary_drop_neutral:
                continue
            label = float("nan")
        else:
            label = 0.0 if tree.label < _NEUTRAL else 1.0
        words = tuple(unescape_ptb(t) for t in tree.tokens)
        records.append(
            {
                "doc_id": f"{path.stem}-{number}",
                "text": " ".join(words),
                "label": label,
                "gold_words": words,
                "gold_scores": tuple(gold_score(v) for v in tree.token_labels),
                "gold_word_scores": [
                    gold_score(v) for w, v in zip(words, tree.token_labels, strict=True) for _ in w.split()
                ],
            }
        )
    if trees == 0:
        raise SstError(f"SST file {name!r} has no trees")
    n = len(records)
    return pd.DataFrame(
        {
            "doc_id": pd.Series([r["doc_id"] for r in records], dtype=object),
            "text": pd.Series([r["text"] for r in records], dtype=object),
            "text_pair": pd.Series([None] * n, dtype=object),
            "label": pd.Series([r["label"] for r in records], dtype="float64"),
            "label_set": pd.Series([None] * n, dtype=object),
            "group": pd.Series([None] * n, dtype=object),
            "gold_words": pd.Series([r["gold_words"] for r in records], dtype=object),
            "gold_scores": pd.Series([r["gold_scores"] for r in records], dtype=object),
            "gold_word_scores": pd.Series([r["gold_word_scores"] for r in records], dtype=object),
        }
    )
