"""Attention maps, hidden states and their gradients in one pass, for the attention family.

Shared by ``raw_attention``, ``rollout``, ``gae``, ``cam``, ``grad_cam`` and ``attcat``.
Attention probabilities are read with ``output_attentions=True`` inside
:func:`xattr.models.attention.eager_attention`. Gradients with respect to the returned attention maps
and hidden states are taken with ``torch.autograd.grad`` on those very tensors (they are the ones
the forward pass used; dropout is the identity in eval mode), so no hook is registered.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from xattr.methods.gradients import selected_outputs, word_embeddings
from xattr.models.attention import AttentionUnavailableError, eager_attention
from xattr.models.encoding import Batch
from xattr.models.forward import frozen_parameters, output_logits
from xattr.models.loading import LoadedModel


@dataclass(frozen=True)
class AttentionPass:
    """What one forward (and optional backward) pass returned.

    Attributes:
        attentions: Per layer, ``(batch, heads, seq, seq)`` attention probabilities (rows: queries).
        hidden_states: ``num_layers + 1`` tensors ``(batch, seq, hidden)``: embeddings, then each
            layer's output.
        attention_grads: Per layer, ``d F / d A`` ``(batch, heads, seq, seq)``, or empty.
        hidden_grads: Per hidden state, ``d F / d h`` ``(batch, seq, hidden)``, or empty.
    """

    attentions: tuple[torch.Tensor, ...]
    hidden_states: tuple[torch.Tensor, ...]
    attention_grads: tuple[torch.Tensor, ...]
    hidden_grads: tuple[torch.Tensor, ...]


def attention_pass(loaded: LoadedModel, batch: Batch, targets: torch.Tensor, *, gradients: bool) -> AttentionPass:
    """Forward pass with attentions and hidden states; with ``gradients``, also ``dF/dA`` and ``dF/dh``.

    ``F`` is the sum over rows of each row's target output; rows do not interact in an encoder in
    eval mode, so each row's gradients are its own.

    Args:
        loaded: The model (eval mode).
        batch: Padded inputs ``(batch, seq)`` on the model's device.
        targets: ``(batch,)`` output index per row (see :func:`xattr.models.forward.output_logits`).
        gradients: Whether to take the backward pass.
    """
    model = loaded.model
    with eager_attention(model), frozen_parameters(model), torch.set_grad_enabled(gradients):
        embeds = word_embeddings(loaded, batch.input_ids).detach().requires_grad_(gradients)
        output = model(inputs_embeds=embeds, output_attentions=True, output_hidden_states=True, **batch.model_inputs())
        attentions = tuple(output.attentions)
        hidden = tuple(output.hidden_states)
        if len(attentions) == 0:
            raise AttentionUnavailableError(
                f"model {type(model).__name__} returned no attention weights with output_attentions=True"
            )
        if not gradients:
            return AttentionPass(attentions, hidden, (), ())
        selected = selected_outputs(output_logits(loaded, output, batch.attention_mask), targets).sum()
        grads = torch.autograd.grad(selected, attentions + hidden, allow_unused=True)
    grads = tuple(torch.zeros_like(x) if g is None else g for x, g in zip(attentions + hidden, grads, strict=True))
    n = len(attentions)
    return AttentionPass(tuple(a.detach() for a in attentions), tuple(h.detach() for h in hidden), grads[:n], grads[n:])


def explained_positions(loaded: LoadedModel, targets: torch.Tensor) -> torch.Tensor:
    """Per row, the token whose representation produces the explained output, ``(batch,)``.

    Sequence classification and regression read the first token ([CLS], ``<s>``); an extractive
    QA start or end logit is read from its own token (output ``p`` or ``max_length + p``: token ``p``).
    Attention methods take this token's row of the attention maps (the [CLS] row of the papers).
    """
    if loaded.task == "question_answering":
        return targets % loaded.max_length
    return torch.zeros_like(targets)


def query_rows(maps: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Row ``positions[b]`` of ``maps[b]``: ``(batch, seq, seq) -> (batch, seq)``."""
    index = positions.view(-1, 1, 1).expand(-1, 1, maps.shape[-1])
    return maps.gather(1, index).squeeze(1)


def layer_index(layer: int, num_layers: int) -> int:
    """A layer index in ``0..num_layers-1`` from one that may count from the end."""
    if not -num_layers <= layer < num_layers:
        raise ValueError(f"layer {layer} is out of range for a model with {num_layers} layers")
    return layer % num_layers
