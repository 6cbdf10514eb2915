"""Tokenise a corpus once, keep per-text alignment, and build padded batches from it."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np
import pyarrow as pa
import torch

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EncodedText:
    """One tokenised text (or text pair) with its alignment to words.

    Attributes:
        input_ids: Word-piece ids including special tokens.
        token_type_ids: Segment ids (all zeros for single texts).
        offsets: Per token, ``(start, end)`` characters within its own segment.
        segments: Per token, 0 (text), 1 (pair text) or -1 (special token).
        word_index: Per token, its word index (see :mod:`xattr.models.alignment`), -1 for specials.
        special: Per token, whether it is a special token ([CLS], [SEP], ...).
        truncated: Whether the text was cut to the model's maximum length.
    """

    input_ids: tuple[int, ...]
    token_type_ids: tuple[int, ...]
    offsets: tuple[tuple[int, int], ...]
    segments: tuple[int, ...]
    word_index: tuple[int, ...]
    special: tuple[bool, ...]
    truncated: bool

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass(frozen=True)
class Batch:
    """Padded tensors for a group of texts, and their positions in the corpus.

    Attributes:
        indices: Corpus positions of the texts in this batch.
        input_ids: ``(batch, seq)`` word-piece ids, right-padded.
        attention_mask: ``(batch, seq)`` 1 for real tokens.
        token_type_ids: ``(batch, seq)`` segment ids.
    """

    indices: tuple[int, ...]
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    token_type_ids: torch.Tensor

    def to(self, device: torch.device) -> Batch:
        """Return the batch with its tensors on ``device``."""
        return Batch(
            self.indices,
            self.input_ids.to(device),
            self.attention_mask.to(device),
            self.token_type_ids.to(device),
        )

    def model_inputs(self) -> dict[str, torch.Tensor]:
        """Keyword arguments for a Hugging Face forward call (ids not included)."""
        return {"attention_mask": self.attention_mask, "token_type_ids": self.token_type_ids}


def encode_texts(
    tokenizer: object,
    texts: Sequence[str],
    pairs: Sequence[str | None] | None = None,
    *,
    max_length: int,
    warn_truncated: bool = True,
) -> list[EncodedText]:
    """Tokenise texts (and optional pair texts), truncating to ``max_length`` word pieces.

    Args:
        tokenizer: A Hugging Face fast tokenizer.
        texts: The texts.
        pairs: The second texts of sentence pairs, or ``None``.
        max_length: Longest sequence in word pieces, special tokens included.
        warn_truncated: Log a warning counting the truncated texts.

    Returns:
        One :class:`EncodedText` per text, in order; ``truncated`` tells which were cut
        (:func:`encode_columns`, one object per text).
    """
    encoded = encode_columns(tokenizer, texts, pairs, max_length=max_length)
    n_truncated = int(encoded.truncated.sum())
    if n_truncated and warn_truncated:
        logger.warning(
            "%d of %d texts were longer than %d word pieces and were truncated", n_truncated, len(texts), max_length
        )
    return list(encoded)


#: ``_SPACE[c]``: whether code point ``c`` is whitespace for ``str.split`` and ``re``'s ``\s``
#: (:func:`xattr.models.alignment.word_spans`); every such code point is below U+3001.
_SPACE = np.array([chr(c).isspace() for c in range(0x3001)], dtype=np.bool_)


def _backend(tokenizer: object, max_length: int) -> Any:
    """The fast tokenizer's Rust backend, truncating (longest first) to ``max_length`` without padding.

    Its settings are changed in place, as the tokenizer's own ``__call__`` does before each call.
    """
    backend = tokenizer.backend_tokenizer  # type: ignore[attr-defined]
    if backend.padding is not None:
        backend.no_padding()
    wanted = {"max_length": max_length, "stride": 0, "strategy": "longest_first", "direction": "right"}
    if backend.truncation != wanted:
        backend.enable_truncation(max_length, stride=0, strategy="longest_first", direction="right")
    return backend


def has_word_pieces(tokenizer: object, texts: Sequence[str], *, max_length: int, block: int = 8192) -> list[bool]:
    """Whether each text tokenises to at least one word piece (special tokens not counted).

    The texts are encoded ``block`` at a time: each text's encoding does not depend on the
    others, and a whole corpus' encodings at once would hold ~2.8 KB per text (2.8 GB at a
    million texts) only to read their lengths.
    """
    backend = _backend(tokenizer, max_length)
    items = list(texts)
    out: list[bool] = []
    for start in range(0, len(items), block):
        out += [bool(e.ids) for e in backend.encode_batch(items[start : start + block], add_special_tokens=False)]
    return out


def encode_columns(
    tokenizer: object, texts: Sequence[str], pairs: Sequence[str | None] | None = None, *, max_length: int
) -> EncodedCorpus:
    """Tokenise texts (and optional pair texts) straight into :class:`EncodedCorpus` columns.

    The tokenizer's Rust backend encodes the batch once, truncating (longest first, as
    ``truncation=True``) to ``max_length`` pieces; a text was truncated when the backend kept
    overflowing pieces. Each piece's word (:func:`xattr.models.alignment.align_tokens_to_words`:
    the whitespace word holding its first character, the pair's words numbered after the
    text's, -1 for special and zero-width pieces) is found for the whole batch at once, from the
    texts' characters as one code-point array. Done here rather than through the tokenizer's
    Python ``__call__`` and a per-piece loop, which cost ~4x the backend's own encoding.

    Raises:
        ValueError: ``pairs`` does not match ``texts`` in length, or some texts have a pair and
            others do not (the first such row is named).
    """
    if pairs is not None and len(pairs) != len(texts):
        raise ValueError(f"{len(texts)} texts but {len(pairs)} pair texts")
    pair_list = list(pairs) if pairs is not None and any(p is not None for p in pairs) else None
    if pair_list is not None and any(p is None for p in pair_list):
        missing = next(i for i, p in enumerate(pair_list) if p is None)
        raise ValueError(f"row {missing}: pair text is missing while other rows have one")
    backend = _backend(tokenizer, max_length)
    inputs = list(zip(texts, pair_list, strict=True)) if pair_list is not None else list(texts)
    encodings = backend.encode_batch(inputs, add_special_tokens=True) if inputs else []
    lengths = np.fromiter((len(e.ids) for e in encodings), np.int64, len(encodings))
    total = int(lengths.sum())

    def flat(field: str, dtype: type) -> np.ndarray:
        return np.fromiter(chain.from_iterable(getattr(e, field) for e in encodings), dtype, total)

    offsets = np.fromiter(chain.from_iterable(chain.from_iterable(e.offsets for e in encodings)), np.int64, 2 * total)
    starts, ends = offsets[0::2], offsets[1::2]
    special = flat("special_tokens_mask", np.bool_)
    segment = np.fromiter(
        (-1 if s is None else s for s in chain.from_iterable(e.sequence_ids for e in encodings)), np.int64, total
    )
    segment[special] = -1
    # The words: every segment's characters laid end to end, one whitespace character between.
    segments = [t for i, t in enumerate(texts) for t in ((t, pair_list[i]) if pair_list is not None else (t,))]
    joined = " ".join(segments)
    chars = np.frombuffer(joined.encode("utf-32-le"), dtype=np.uint32)
    space = np.zeros(len(chars), dtype=np.bool_)
    low = chars < len(_SPACE)
    space[low] = _SPACE[chars[low]]
    first = ~space & np.concatenate([[True], space[:-1]])
    words_through = np.cumsum(first)  # words starting at or before each character
    seg_start = np.zeros(len(segments), dtype=np.int64)
    seg_start[1:] = np.cumsum(np.fromiter((len(t) + 1 for t in segments[:-1]), np.int64, len(segments) - 1))
    per_text = 2 if pair_list is not None else 1
    text_of = np.repeat(np.arange(len(encodings)), lengths)
    text_start = seg_start[::per_text]
    words_before = np.where(text_start > 0, words_through[np.maximum(text_start - 1, 0)], 0)
    word_index = np.full(total, -1, dtype=np.int64)
    real = (segment >= 0) & (ends > starts)
    at = seg_start[text_of[real] * per_text + segment[real]] + starts[real]
    inside = ~space[at]
    word_index[np.flatnonzero(real)[inside]] = words_through[at[inside]] - words_before[text_of[real][inside]] - 1
    columns = {
        "input_ids": flat("ids", np.int32),
        "token_type_ids": flat("type_ids", np.int8),
        "char_start": starts.astype(np.int32),
        "char_end": ends.astype(np.int32),
        "segments": segment.astype(np.int8),
        "word_index": word_index.astype(np.int32),
        "special": special,
    }
    truncated = np.fromiter((bool(e.overflowing) for e in encodings), np.bool_, len(encodings))
    return EncodedCorpus(columns, lengths, truncated)


def collate(encoded: Sequence[EncodedText], indices: Sequence[int], pad_id: int) -> Batch:
    """Right-pad the given texts into one :class:`Batch`.

    Args:
        encoded: All encoded texts of the corpus.
        indices: Which of them form the batch.
        pad_id: The tokenizer's padding id.

    Returns:
        The padded batch.
    """
    if isinstance(encoded, EncodedCorpus):
        return encoded.collate(indices, pad_id)
    width = max(len(encoded[i]) for i in indices)
    # Filled in numpy and handed to torch once: a torch.tensor per row costs ~10x more per text,
    # which shows at GPU batch sizes of thousands of texts.
    ids = np.full((len(indices), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(indices), width), dtype=np.int64)
    types = np.zeros((len(indices), width), dtype=np.int64)
    for row, i in enumerate(indices):
        e = encoded[i]
        n = len(e)
        ids[row, :n] = e.input_ids
        mask[row, :n] = 1
        types[row, :n] = e.token_type_ids
    return Batch(tuple(indices), torch.from_numpy(ids), torch.from_numpy(mask), torch.from_numpy(types))


def iter_batches(
    encoded: Sequence[EncodedText], batch_size: int, pad_id: int, *, sort_by_length: bool = True
) -> Iterator[Batch]:
    """Yield padded batches covering every text once.

    Texts are grouped by length when ``sort_by_length`` so that little compute goes to padding;
    ``Batch.indices`` says where each row belongs.

    Args:
        encoded: The encoded corpus.
        batch_size: Texts per batch (at least 1).
        pad_id: The tokenizer's padding id.
        sort_by_length: Group texts of similar length.

    Yields:
        Batches in an order that covers ``range(len(encoded))`` exactly once.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    order = list(range(len(encoded)))
    if sort_by_length:
        lengths = text_lengths(encoded, order)
        order.sort(key=lambda i: lengths[i])
    for start in range(0, len(order), batch_size):
        yield collate(encoded, order[start : start + batch_size], pad_id)


#: The per-token columns of :class:`EncodedCorpus` and their NumPy dtypes.
TOKEN_COLUMNS: dict[str, type] = {
    "input_ids": np.int32,
    "token_type_ids": np.int8,
    "char_start": np.int32,
    "char_end": np.int32,
    "segments": np.int8,
    "word_index": np.int32,
    "special": np.bool_,
}


class EncodedCorpus(Sequence[EncodedText]):
    """Encoded texts held as flat NumPy columns, indexed by corpus position.

    What the encode stage writes once (the ``tokens`` artifact) and later stages read back instead
    of tokenising again. A per-text Python object costs ~17 KB at 64 word pieces; these columns
    cost ~19 bytes per token, and an :class:`EncodedText` is built only when a position is read.
    The corpus may be held in part (``positions``: the corpus positions held, ascending): reading
    a position that is not held is an ``IndexError`` that names it.

    Args:
        columns: Flat per-token arrays (keys :data:`TOKEN_COLUMNS`), texts one after another.
        lengths: ``(rows,)`` tokens per held text.
        truncated: ``(rows,)`` whether each held text was cut to the model's maximum length.
        positions: ``(rows,)`` ascending corpus positions of the held texts (default ``0..rows-1``).
        size: The corpus' length (default ``rows``, or one past the last position).
    """

    def __init__(
        self,
        columns: dict[str, np.ndarray],
        lengths: np.ndarray,
        truncated: np.ndarray,
        positions: np.ndarray | None = None,
        size: int | None = None,
    ) -> None:
        self.lengths = np.asarray(lengths, dtype=np.int64)
        rows = len(self.lengths)
        self.starts = np.zeros(rows + 1, dtype=np.int64)
        np.cumsum(self.lengths, out=self.starts[1:])
        self.columns = {name: np.asarray(columns[name], dtype=dtype) for name, dtype in TOKEN_COLUMNS.items()}
        total = int(self.starts[-1])
        for name, column in self.columns.items():
            if len(column) != total:
                raise ValueError(f"token column {name!r} holds {len(column)} values, the lengths sum to {total}")
        self.truncated = np.asarray(truncated, dtype=np.bool_)
        self.positions = np.arange(rows, dtype=np.int64) if positions is None else np.asarray(positions, np.int64)
        if len(self.positions) != rows or len(self.truncated) != rows:
            raise ValueError(f"{rows} lengths but {len(self.positions)} positions and {len(self.truncated)} flags")
        if rows > 1 and not bool(np.all(np.diff(self.positions) > 0)):
            raise ValueError("the held positions must be strictly ascending")
        last = int(self.positions[-1]) + 1 if rows else 0
        self.size = last if size is None else int(size)
        if self.size < last:
            raise ValueError(f"position {last - 1} is outside a corpus of {self.size} texts")

    @classmethod
    def from_texts(
        cls, texts: Sequence[EncodedText], positions: np.ndarray | None = None, size: int | None = None
    ) -> EncodedCorpus:
        """The columns of ``texts`` (held at ``positions`` of a corpus of ``size``, default all of it)."""
        lengths = np.fromiter((len(e) for e in texts), np.int64, len(texts))
        total = int(lengths.sum())

        def flat(field: str, dtype: type) -> np.ndarray:
            return np.fromiter(chain.from_iterable(getattr(e, field) for e in texts), dtype, total)

        offsets = np.fromiter(chain.from_iterable(chain.from_iterable(e.offsets for e in texts)), np.int32, 2 * total)
        columns = {
            "input_ids": flat("input_ids", np.int32),
            "token_type_ids": flat("token_type_ids", np.int8),
            "char_start": offsets[0::2],
            "char_end": offsets[1::2],
            "segments": flat("segments", np.int8),
            "word_index": flat("word_index", np.int32),
            "special": flat("special", np.bool_),
        }
        truncated = np.fromiter((e.truncated for e in texts), np.bool_, len(texts))
        return cls(columns, lengths, truncated, positions, size)

    def __len__(self) -> int:
        return self.size

    def row_of(self, position: int) -> int:
        """The row holding corpus ``position``.

        Raises:
            IndexError: ``position`` is outside the corpus or not held.
        """
        row = int(np.searchsorted(self.positions, position))
        if row >= len(self.positions) or self.positions[row] != position:
            raise IndexError(f"corpus position {position} is not held (this part holds {len(self.positions)} texts)")
        return row

    def rows_of(self, positions: Sequence[int]) -> np.ndarray:
        """The rows holding corpus ``positions`` (one vectorised :meth:`row_of`).

        Raises:
            IndexError: A position is outside the corpus or not held (the first is named).
        """
        wanted = np.asarray(positions, dtype=np.int64).reshape(-1)
        rows = np.searchsorted(self.positions, wanted)
        held = rows < len(self.positions)
        held[held] = self.positions[rows[held]] == wanted[held]
        if not bool(held.all()):
            self.row_of(int(wanted[~held][0]))
        return rows

    def holds(self, position: int) -> bool:
        """Whether corpus ``position`` is held."""
        row = int(np.searchsorted(self.positions, position))
        return row < len(self.positions) and self.positions[row] == position

    def __getitem__(self, position: int) -> EncodedText:  # type: ignore[override]
        if isinstance(position, slice):
            raise TypeError("an EncodedCorpus is indexed by one corpus position")
        if position < 0:
            position += self.size
        row = self.row_of(position)
        a, b = int(self.starts[row]), int(self.starts[row + 1])
        c = {name: column[a:b].tolist() for name, column in self.columns.items()}
        return EncodedText(
            input_ids=tuple(c["input_ids"]),
            token_type_ids=tuple(c["token_type_ids"]),
            offsets=tuple(zip(c["char_start"], c["char_end"], strict=True)),
            segments=tuple(c["segments"]),
            word_index=tuple(c["word_index"]),
            special=tuple(c["special"]),
            truncated=bool(self.truncated[row]),
        )

    def __iter__(self) -> Iterator[EncodedText]:
        """The held texts in corpus order."""
        for position in self.positions.tolist():
            yield self[position]

    def length(self, position: int) -> int:
        """Tokens of the text at corpus ``position`` (no :class:`EncodedText` is built)."""
        return int(self.lengths[self.row_of(position)])

    def token_rows(self, positions: Sequence[int]) -> np.ndarray:
        """``(tokens,)`` indices into the token columns of the texts at ``positions``, one text after another."""
        rows = self.rows_of(positions)
        lengths = self.lengths[rows]
        starts = self.starts[rows]
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return np.repeat(starts - offsets[:-1], lengths) + np.arange(int(offsets[-1]), dtype=np.int64)

    def collate(self, indices: Sequence[int], pad_id: int) -> Batch:
        """:func:`collate` straight from the columns (no :class:`EncodedText` is built)."""
        rows = self.rows_of(indices)
        lengths = self.lengths[rows]
        width = int(lengths.max())
        ids = np.full((len(rows), width), pad_id, dtype=np.int64)
        types = np.zeros((len(rows), width), dtype=np.int64)
        mask = (np.arange(width)[None, :] < lengths[:, None]).astype(np.int64)
        tokens = self.token_rows(indices)
        ids[mask.astype(bool)] = self.columns["input_ids"][tokens]
        types[mask.astype(bool)] = self.columns["token_type_ids"][tokens]
        return Batch(tuple(indices), torch.from_numpy(ids), torch.from_numpy(mask), torch.from_numpy(types))

    def to_arrow(self, doc_ids: Sequence[str]) -> pa.Table:
        """The ``tokens`` table of the held texts: one row per text, its token columns as lists.

        Args:
            doc_ids: The document id of each held text, in order.
        """
        if len(doc_ids) != len(self.positions):
            raise ValueError(f"{len(doc_ids)} doc ids for {len(self.positions)} texts")
        offsets = pa.array(self.starts.astype(np.int32), pa.int32())
        lists = {name: pa.ListArray.from_arrays(offsets, pa.array(column)) for name, column in self.columns.items()}
        return pa.table(
            {
                "doc_id": pa.array(list(doc_ids), pa.string()),
                "length": pa.array(self.lengths.astype(np.int32), pa.int32()),
                "truncated": pa.array(self.truncated, pa.bool_()),
                **lists,
            }
        )

    @classmethod
    def from_arrow(cls, table: pa.Table, positions: np.ndarray | None = None, size: int | None = None) -> EncodedCorpus:
        """The corpus of a ``tokens`` table (:meth:`to_arrow`), its rows held at ``positions``."""
        columns = {}
        for name in TOKEN_COLUMNS:
            array = table.column(name).combine_chunks()
            columns[name] = array.flatten().to_numpy(zero_copy_only=False)
        lengths = table.column("length").to_numpy()
        truncated = table.column("truncated").to_numpy(zero_copy_only=False)
        return cls(columns, lengths, truncated, positions, size)


def text_lengths(encoded: Sequence[EncodedText], positions: Sequence[int]) -> dict[int, int]:
    """Tokens per text at ``positions`` (from the columns when ``encoded`` is an :class:`EncodedCorpus`)."""
    if isinstance(encoded, EncodedCorpus):
        return dict(zip(positions, encoded.lengths[encoded.rows_of(positions)].tolist(), strict=True))
    return {p: len(encoded[p]) for p in positions}


def encode_corpus(
    tokenizer: object,
    texts: Sequence[str],
    pairs: Sequence[str | None] | None = None,
    *,
    max_length: int,
    positions: np.ndarray | None = None,
    size: int | None = None,
    chunk_texts: int = 8192,
    progress: Callable[[int, int], None] | None = None,
) -> EncodedCorpus:
    """:func:`encode_texts` of a whole corpus, as columns, ``chunk_texts`` texts at a time.

    Each chunk's :class:`EncodedText` objects become columns before the next chunk is tokenised,
    so memory holds one chunk of Python objects, not the corpus' (~17 KB per text at 64 pieces).

    Args:
        tokenizer: A Hugging Face fast tokenizer.
        texts: The texts.
        pairs: The second texts of sentence pairs, or ``None``.
        max_length: Longest sequence in word pieces, special tokens included.
        positions: The corpus positions of the texts (see :class:`EncodedCorpus`).
        size: The corpus' length.
        chunk_texts: Texts tokenised per call.
        progress: Called with ``(texts tokenised, len(texts))`` after each chunk.

    Raises:
        ValueError: Some texts have a pair text and others do not (the first such row is named).
    """
    if pairs is not None and any(p is not None for p in pairs) and any(p is None for p in pairs):
        missing = next(i for i, p in enumerate(pairs) if p is None)
        raise ValueError(f"row {missing}: pair text is missing while other rows have one")
    if pairs is not None and not any(p is not None for p in pairs):
        pairs = None
    parts = []
    for start in range(0, len(texts), chunk_texts):
        stop = min(start + chunk_texts, len(texts))
        parts.append(
            encode_columns(
                tokenizer, texts[start:stop], pairs[start:stop] if pairs is not None else None, max_length=max_length
            )
        )
        if progress is not None:
            progress(stop, len(texts))
    if not parts:
        parts.append(EncodedCorpus.from_texts([]))
    corpus = EncodedCorpus(
        {name: np.concatenate([p.columns[name] for p in parts]) for name in TOKEN_COLUMNS},
        np.concatenate([p.lengths for p in parts]),
        np.concatenate([p.truncated for p in parts]),
        positions,
        size,
    )
    truncated = int(corpus.truncated.sum())
    if truncated:
        logger.warning(
            "%d of %d texts were longer than %d word pieces and were truncated", truncated, len(texts), max_length
        )
    return corpus
