"""Reference (baseline) embeddings for path and expectation methods (IG, SHAP variants).

A reference must have the input's shape. Special tokens ([CLS], [SEP], ...) always keep the
input's own embedding, so they receive no attribution and the model still sees a well-formed
sequence; only content positions take the reference:

* ``zeros``: the zero vector;
* ``pad``: the [PAD] word embedding;
* a reference text: its content word pieces in order, cut or padded with [PAD] to the input's
  number of content positions (texts of different lengths have no natural alignment; this
  keeps the reference's own tokens where they exist).

Position and segment embeddings are added inside the model, for reference and input alike.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from xattr.models.encoding import Batch, EncodedText
from xattr.models.loading import LoadedModel


def content_mask(batch: Batch, special_ids: Sequence[int]) -> torch.Tensor:
    """``(batch, seq)`` bool: real, non-special tokens."""
    special = torch.zeros_like(batch.input_ids, dtype=torch.bool)
    for token_id in special_ids:
        special |= batch.input_ids == token_id
    return batch.attention_mask.bool() & ~special


def special_token_ids(loaded: LoadedModel) -> list[int]:
    """Ids of the tokenizer's special tokens ([CLS], [SEP], [PAD], ...)."""
    return sorted({int(i) for i in loaded.tokenizer.all_special_ids})


def constant_reference(loaded: LoadedModel, batch: Batch, embeddings: torch.Tensor, kind: str) -> torch.Tensor:
    """``zeros`` or ``pad`` reference, ``(batch, seq, hidden)``, specials kept from ``embeddings``."""
    mask = content_mask(batch, special_token_ids(loaded)).unsqueeze(-1)  # (batch, seq, 1)
    if kind == "zeros":
        fill = torch.zeros_like(embeddings)
    elif kind == "pad":
        pad = torch.tensor([loaded.tokenizer.pad_token_id], device=embeddings.device)
        fill = loaded.model.get_input_embeddings()(pad).view(1, 1, -1).expand_as(embeddings)
    else:
        raise ValueError(f"unknown baseline {kind!r}; valid: zeros, pad, or a reference text")
    return torch.where(mask, fill.to(embeddings.dtype), embeddings)


def text_reference(
    loaded: LoadedModel, batch: Batch, embeddings: torch.Tensor, row: int, reference: EncodedText
) -> torch.Tensor:
    """Reference for one row from a reference text, ``(seq, hidden)`` (see the module docstring)."""
    mask = content_mask(batch, special_token_ids(loaded))[row]  # (seq,)
    positions = torch.nonzero(mask).flatten()
    ref_ids = [t for t, s in zip(reference.input_ids, reference.special, strict=True) if not s]
    pad_id = loaded.tokenizer.pad_token_id
    ids = (ref_ids + [pad_id] * len(positions))[: len(positions)]
    out = embeddings[row].clone()
    if len(positions):
        table = loaded.model.get_input_embeddings()
        out[positions] = table(torch.tensor(ids, device=embeddings.device)).to(out.dtype)
    return out
