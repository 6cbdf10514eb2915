"""Tokenise a corpus once, keep per-text alignment, and build padded batches from it."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from xattr.models.alignment import align_tokens_to_words, word_spans

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
) -> list[EncodedText]:
    """Tokenise texts (and optional pair texts), truncating to ``max_length`` word pieces.

    Args:
        tokenizer: A Hugging Face fast tokenizer.
        texts: The texts.
        pairs: The second texts of sentence pairs, or ``None``.
        max_length: Longest sequence in word pieces, special tokens included.

    Returns:
        One :class:`EncodedText` per text, in order; ``truncated`` tells which were cut.
    """
    if pairs is not None and len(pairs) != len(texts):
        raise ValueError(f"{len(texts)} texts but {len(pairs)} pair texts")
    pair_list = list(pairs) if pairs is not None and any(p is not None for p in pairs) else None
    if pair_list is not None and any(p is None for p in pair_list):
        missing = next(i for i, p in enumerate(pair_list) if p is None)
        raise ValueError(f"row {missing}: pair text is missing while other rows have one")
    call = tokenizer  # type: ignore[operator]
    full = call(list(texts), pair_list, truncation=False, add_special_tokens=True, verbose=False)
    enc = call(
        list(texts),
        pair_list,
        truncation=True,
        max_length=max_length,
        return_offsets_mapping=True,
        return_special_tokens_mask=True,
        return_token_type_ids=True,
    )
    out: list[EncodedText] = []
    for i, text in enumerate(texts):
        seq_ids = enc.sequence_ids(i)
        spans = [word_spans(text)]
        if pair_list is not None:
            spans.append(word_spans(pair_list[i]))  # type: ignore[arg-type]
        offsets = [tuple(o) for o in enc["offset_mapping"][i]]
        special = [bool(s) for s in enc["special_tokens_mask"][i]]
        seq_ids = [None if sp else sid for sid, sp in zip(seq_ids, special, strict=True)]
        out.append(
            EncodedText(
                input_ids=tuple(enc["input_ids"][i]),
                token_type_ids=tuple(enc["token_type_ids"][i]),
                offsets=tuple(offsets),  # type: ignore[arg-type]
                segments=tuple(-1 if s is None else s for s in seq_ids),
                word_index=tuple(align_tokens_to_words(offsets, seq_ids, spans)),  # type: ignore[arg-type]
                special=tuple(special),
                truncated=len(full["input_ids"][i]) > max_length,
            )
        )
    n_truncated = sum(e.truncated for e in out)
    if n_truncated:
        logger.warning(
            "%d of %d texts were longer than %d word pieces and were truncated", n_truncated, len(out), max_length
        )
    return out


def collate(encoded: Sequence[EncodedText], indices: Sequence[int], pad_id: int) -> Batch:
    """Right-pad the given texts into one :class:`Batch`.

    Args:
        encoded: All encoded texts of the corpus.
        indices: Which of them form the batch.
        pad_id: The tokenizer's padding id.

    Returns:
        The padded batch.
    """
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
        order.sort(key=lambda i: len(encoded[i]))
    for start in range(0, len(order), batch_size):
        yield collate(encoded, order[start : start + batch_size], pad_id)
