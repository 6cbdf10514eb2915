"""Forward passes over copies of a batch with some tokens replaced (occlusion, LIME).

Shared by the perturbation family. Special tokens ([CLS], [SEP], <s>, </s>) and padding are never
replaced: the "content" positions of a row are its other tokens, in order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from xattr.methods.gradients import selected_outputs
from xattr.models.encoding import Batch
from xattr.models.forward import output_logits
from xattr.models.loading import LoadedModel
from xattr.models.replacement import replacement_id

#: The vocabulary token written over a replaced token.
TokenReplacement = Literal["mask", "pad", "unk"]


def special_ids(tokenizer: object) -> set[int]:
    """Ids of the structural special tokens (never perturbed); [UNK] and [MASK] are content."""
    names = ("cls_token_id", "sep_token_id", "bos_token_id", "eos_token_id")
    return {int(v) for v in (getattr(tokenizer, name, None) for name in names) if v is not None}


def replacement_token(loaded: LoadedModel, policy: TokenReplacement) -> int:
    """The id of the token written over replaced tokens ([MASK], [PAD] or [UNK]).

    Raises:
        ValueError: The tokenizer has no such token.
    """
    token = replacement_id(loaded.tokenizer, policy)
    if token is None or token < 0:  # pragma: no cover - TokenReplacement holds vocabulary policies only
        raise ValueError(f"replacement {policy!r} is not a vocabulary token")
    return token


def content_positions(loaded: LoadedModel, batch: Batch) -> list[list[int]]:
    """Per row, the positions that may be replaced: real tokens other than structural specials."""
    specials = torch.tensor(sorted(special_ids(loaded.tokenizer)), dtype=batch.input_ids.dtype)
    ids = batch.input_ids.cpu()
    content = (batch.attention_mask.cpu() > 0) & ~torch.isin(ids, specials)  # (batch, seq)
    return [torch.nonzero(row).flatten().tolist() for row in content]


@torch.inference_mode()
def original_outputs(loaded: LoadedModel, batch: Batch, targets: torch.Tensor) -> torch.Tensor:
    """``(batch,)`` each row's explained output on the unperturbed input."""
    output = loaded.model(input_ids=batch.input_ids, **batch.model_inputs())
    return selected_outputs(output_logits(loaded, output, batch.attention_mask), targets)


@torch.inference_mode()
def substituted_outputs(
    loaded: LoadedModel,
    batch: Batch,
    targets: torch.Tensor,
    variants: Sequence[tuple[int, Sequence[int]]],
    replacement: TokenReplacement,
    rows_per_pass: int,
) -> torch.Tensor:
    """The explained output of many perturbed copies of batch rows, several texts per forward pass.

    Args:
        loaded: The model (eval mode).
        batch: Padded inputs on the model's device, ``(batch, seq)``.
        targets: ``(batch,)`` output index per row.
        variants: ``(row, positions)``: a copy of ``row`` with ``positions`` replaced.
        replacement: The replacing token (:func:`replacement_token`).
        rows_per_pass: Copies per forward pass.

    Returns:
        ``(len(variants),)`` outputs, in the order of ``variants``.
    """
    token = replacement_token(loaded, replacement)
    outputs = []
    for start in range(0, len(variants), rows_per_pass):
        chunk = variants[start : start + rows_per_pass]
        rows = torch.tensor([row for row, _ in chunk], device=batch.input_ids.device)
        ids = batch.input_ids[rows].clone()  # (chunk, seq)
        replaced = torch.zeros_like(ids, dtype=torch.bool)
        for k, (_, positions) in enumerate(chunk):
            replaced[k, list(positions)] = True
        ids[replaced] = token
        output = loaded.model(
            input_ids=ids, attention_mask=batch.attention_mask[rows], token_type_ids=batch.token_type_ids[rows]
        )
        logits = output_logits(loaded, output, batch.attention_mask[rows])
        outputs.append(selected_outputs(logits, targets[rows]))
    if not outputs:
        return torch.zeros(0, dtype=torch.float64, device=batch.input_ids.device)
    return torch.cat(outputs)
