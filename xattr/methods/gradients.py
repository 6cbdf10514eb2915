"""Gradients of one output per row with respect to the word embeddings (LAFA Eq. 1-2).

Shared by the gradient family. Word embeddings ``H0 = emb(w)`` are computed explicitly and passed
as ``inputs_embeds``, so position and segment embeddings are still added inside the model, and
``dF/dH0`` is taken with one backward pass for the whole batch: rows do not interact in an encoder
in eval mode, so the gradient of the sum of the selected outputs is each row's own gradient.
"""

from __future__ import annotations

import torch

from xattr.models.encoding import Batch
from xattr.models.forward import frozen_parameters, gradient_autocast, output_logits
from xattr.models.loading import LoadedModel
from xattr.types import Reduction


def word_embeddings(loaded: LoadedModel, input_ids: torch.Tensor) -> torch.Tensor:
    """``H0``: the word-embedding lookup of LAFA Eq. 1, ``(batch, seq, hidden)``."""
    return loaded.model.get_input_embeddings()(input_ids)


def selected_outputs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``F``: for each row, the logit (or regression value) of its target output, ``(batch,)``."""
    return logits.gather(1, targets.view(-1, 1)).squeeze(1)


def embedding_gradients(
    loaded: LoadedModel, batch: Batch, targets: torch.Tensor, embeddings: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``S(H0) = dF/dH0`` (LAFA Eq. 2) for each row's target output.

    Args:
        loaded: The model (eval mode).
        batch: Padded inputs on the model's device.
        targets: ``(batch,)`` output index per row.
        embeddings: Optional ``(batch, seq, hidden)`` embeddings to differentiate at instead of
            the texts' own word embeddings (used by noisy or interpolated variants).

    Returns:
        ``(H0, S)``, both ``(batch, seq, hidden)`` in ``H0``'s dtype (also under
        ``loaded.autocast_dtype``); ``H0`` is detached.
    """
    with frozen_parameters(loaded.model), torch.enable_grad(), gradient_autocast(loaded):
        h0 = word_embeddings(loaded, batch.input_ids) if embeddings is None else embeddings
        h0 = h0.detach().requires_grad_(True)
        output = loaded.model(inputs_embeds=h0, **batch.model_inputs())
        logits = output_logits(loaded, output, batch.attention_mask)
        (grad,) = torch.autograd.grad(selected_outputs(logits, targets).sum(), h0)
    return h0.detach(), grad


def reduce_over_hidden(values: torch.Tensor, reduction: Reduction) -> torch.Tensor:
    """One score per token from a ``(batch, seq, hidden)`` tensor.

    ``"sum_of_squares"`` is LAFA Eq. 3, ``M_i = sum_j S_ij^2`` (unsigned); ``"sum"`` is the
    signed sum ``sum_j S_ij`` (for Grad*Input: the first-order effect of the token on the output).
    """
    if reduction == "sum_of_squares":
        return values.pow(2).sum(dim=-1)
    if reduction == "sum":
        return values.sum(dim=-1)
    raise ValueError(f"unknown reduction {reduction!r}; valid reductions: sum_of_squares, sum")
