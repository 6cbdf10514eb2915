"""Tiny float64 encoders (BERT, DistilBERT, RoBERTa) with random, non-trivial parameters for LRP tests."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    RobertaConfig,
    RobertaForSequenceClassification,
)

VOCAB = 40


def randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Draw every parameter so activations are O(1) and biases non-zero (initial BERTs have zero biases)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Linear):
                fan_in = module.weight.shape[1]
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * 1.5 / fan_in**0.5)
                if module.bias is not None:
                    module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * 0.1)
            elif isinstance(module, nn.LayerNorm):
                module.weight.copy_(1 + 0.2 * torch.randn(module.weight.shape, generator=generator))
                module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=generator))
            elif isinstance(module, nn.Embedding):
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator))
    return model


def zero_biases(model: nn.Module) -> nn.Module:
    """Zero every linear bias and LayerNorm shift (where the rules are conservative)."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.LayerNorm)) and module.bias is not None:
                module.bias.zero_()
    return model


def tiny_encoder(kind: str = "bert", *, heads: int = 4, layers: int = 2, seed: int = 0, attn: str = "eager"):
    """A random float64 classifier of the given family in eval mode."""
    torch.manual_seed(seed)
    if kind == "bert":
        config = BertConfig(
            vocab_size=VOCAB,
            hidden_size=16,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=24,
            max_position_embeddings=32,
            num_labels=3,
            attn_implementation=attn,
        )
        model = BertForSequenceClassification(config)
    elif kind == "distilbert":
        config = DistilBertConfig(
            vocab_size=VOCAB,
            dim=16,
            n_layers=layers,
            n_heads=heads,
            hidden_dim=24,
            max_position_embeddings=32,
            num_labels=3,
            attn_implementation=attn,
        )
        model = DistilBertForSequenceClassification(config)
    elif kind == "roberta":
        config = RobertaConfig(
            vocab_size=VOCAB,
            hidden_size=16,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=24,
            max_position_embeddings=40,
            num_labels=3,
            pad_token_id=1,
            attn_implementation=attn,
        )
        model = RobertaForSequenceClassification(config)
    else:
        raise ValueError(kind)
    return randomise(model.double(), seed).eval()


def batch_inputs(kind: str, lengths: list[int], seed: int = 0) -> dict[str, torch.Tensor]:
    """Right-padded random ids (first token 2, the CLS stand-in) for rows of the given lengths."""
    generator = torch.Generator().manual_seed(seed)
    width = max(lengths)
    pad = 1 if kind == "roberta" else 0
    ids = torch.full((len(lengths), width), pad, dtype=torch.long)
    mask = torch.zeros((len(lengths), width), dtype=torch.long)
    for row, n in enumerate(lengths):
        ids[row, :n] = torch.randint(5, VOCAB, (n,), generator=generator)
        ids[row, 0] = 2
        mask[row, :n] = 1
    inputs = {"input_ids": ids, "attention_mask": mask}
    if kind != "distilbert":
        inputs["token_type_ids"] = torch.zeros_like(ids)
    return inputs


@pytest.fixture
def make_encoder():
    """:func:`tiny_encoder`."""
    return tiny_encoder


@pytest.fixture
def make_inputs():
    """:func:`batch_inputs`."""
    return batch_inputs


@pytest.fixture
def without_biases():
    """:func:`zero_biases`."""
    return zero_biases
