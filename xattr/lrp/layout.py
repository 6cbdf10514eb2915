"""Where the parts LRP needs live in each supported encoder family (BERT, RoBERTa, DistilBERT).

MiniLM (all-MiniLM-L6-v2) is a BERT. Models are read, never modified: the layout only names the
modules that :func:`xattr.lrp.engine.lrp_rules` hooks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

#: Model types whose encoder layers are laid out like BERT's (``encoder.layer[i].attention.self``).
BERT_LIKE = ("bert", "roberta", "xlm-roberta", "camembert")
DISTILBERT_LIKE = ("distilbert",)


class LrpUnsupportedModelError(ValueError):
    """The model's architecture has no LRP layout (the message names the type and what is supported)."""


@dataclass(frozen=True)
class AttentionParts:
    """One self-attention block.

    Attributes:
        module: The module that receives ``attention_mask`` (its forward pre-hook reads it).
        query, key, value: The projections, ``(batch, seq, heads * head_dim)`` outputs.
        out_proj: The linear layer applied to the concatenated heads (its input is replaced).
        num_heads: Heads in the block.
        head_dim: Size of one head.
        scaling: Factor on ``Q K^T`` before the softmax.
    """

    module: nn.Module
    query: nn.Linear
    key: nn.Linear
    value: nn.Linear
    out_proj: nn.Linear
    num_heads: int
    head_dim: int
    scaling: float


@dataclass(frozen=True)
class EncoderLayout:
    """The modules of one encoder model that the LRP rules attach to.

    Attributes:
        model_type: ``config.model_type``.
        embeddings: The embedding module; its output is the encoder input ``x^(N)``.
        layers: The encoder layers, bottom to top.
        attention: Per layer, its self-attention parts.
        activations: Element-wise activation modules (identity rule).
        functional_activations: ``(producer, consumer, name)``: an element-wise function applied
            between two linear layers by a functional call (RoBERTa's ``torch.tanh`` in its head),
            which the rules attach to through the two layers. A functional ReLU needs no entry: its
            ordinary gradient already is the identity rule.
    """

    model_type: str
    embeddings: nn.Module
    layers: tuple[nn.Module, ...]
    attention: tuple[AttentionParts, ...]
    activations: tuple[nn.Module, ...]
    functional_activations: tuple[tuple[nn.Linear, nn.Linear, str], ...]

    @property
    def num_heads(self) -> int:
        """Heads per layer (the same in every layer of the supported families)."""
        return self.attention[0].num_heads


def _activation_module(fn: Callable[..., Any] | nn.Module, where: str) -> nn.Module:
    if not isinstance(fn, nn.Module):
        raise LrpUnsupportedModelError(
            f"{where} is a plain function ({fn!r}), not a module; LRP needs a module to attach the identity rule"
        )
    return fn


def encoder_layout(model: nn.Module) -> EncoderLayout:
    """The LRP layout of a Hugging Face encoder model.

    Raises:
        LrpUnsupportedModelError: The model type is not a BERT, RoBERTa or DistilBERT encoder.
    """
    model_type = str(getattr(getattr(model, "config", None), "model_type", type(model).__name__))
    base: Any = getattr(model, "base_model", model)
    if model_type in BERT_LIKE:
        layers = tuple(base.encoder.layer)
        attention = tuple(
            AttentionParts(
                module=layer.attention.self,
                query=layer.attention.self.query,
                key=layer.attention.self.key,
                value=layer.attention.self.value,
                out_proj=layer.attention.output.dense,
                num_heads=int(layer.attention.self.num_attention_heads),
                head_dim=int(layer.attention.self.attention_head_size),
                scaling=float(layer.attention.self.scaling),
            )
            for layer in layers
        )
        activations = [
            _activation_module(layer.intermediate.intermediate_act_fn, f"{model_type} intermediate activation")
            for layer in layers
        ]
        pooler = getattr(base, "pooler", None)
        if pooler is not None:
            activations.append(_activation_module(pooler.activation, f"{model_type} pooler activation"))
        functional: list[tuple[nn.Linear, nn.Linear, str]] = []
        head = getattr(model, "classifier", None)
        if head is not None and isinstance(getattr(head, "dense", None), nn.Linear) and hasattr(head, "out_proj"):
            functional.append((head.dense, head.out_proj, "tanh"))  # RobertaClassificationHead
        return EncoderLayout(model_type, base.embeddings, layers, attention, tuple(activations), tuple(functional))
    if model_type in DISTILBERT_LIKE:
        layers = tuple(base.transformer.layer)
        attention = tuple(
            AttentionParts(
                module=layer.attention,
                query=layer.attention.q_lin,
                key=layer.attention.k_lin,
                value=layer.attention.v_lin,
                out_proj=layer.attention.out_lin,
                num_heads=int(layer.attention.n_heads),
                head_dim=int(layer.attention.attention_head_size),
                scaling=float(layer.attention.scaling),
            )
            for layer in layers
        )
        activations = tuple(_activation_module(layer.ffn.activation, "distilbert FFN activation") for layer in layers)
        return EncoderLayout(model_type, base.embeddings, layers, attention, activations, ())
    raise LrpUnsupportedModelError(
        f"LRP supports BERT-family encoders ({', '.join(BERT_LIKE + DISTILBERT_LIKE)}); "
        f"model type {model_type!r} is not one of them"
    )


def uses_token_type_ids(model: nn.Module) -> bool:
    """Whether the model's forward takes ``token_type_ids`` (DistilBERT's does not)."""
    return str(getattr(model.config, "model_type", "")) not in DISTILBERT_LIKE


def additive_mask(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """An attention mask as added to ``Q K^T``: float masks as they are, boolean ``keep`` masks as 0 / min."""
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        return torch.where(mask, 0.0, torch.finfo(dtype).min).to(dtype)
    return mask.to(dtype)
