"""Layer-wise relevance propagation for BERT-family encoders (BERT, MiniLM, RoBERTa, DistilBERT).

Rules live in :mod:`xattr.lrp.rules`, the hooks that attach them (only inside ``lrp_rules``) in
:mod:`xattr.lrp.engine`, and Mask-LRP's head gates in :mod:`xattr.lrp.masking`.
"""

from __future__ import annotations

from xattr.lrp.engine import (
    DEFAULT_EPSILON,
    LinearRule,
    LrpSession,
    Relevance,
    attention_gradients,
    lrp_rules,
    model_inputs,
    propagate_relevance,
    relevance_rollout,
    rollout,
    rollout_weights,
)
from xattr.lrp.layout import EncoderLayout, LrpUnsupportedModelError, encoder_layout
from xattr.lrp.masking import MaskChoice, gates_from_groups, head_groups
from xattr.lrp.rules import AttentionValueRule, EpsilonRule, HeadGate, IdentityRule, LayerNormRule, PositiveRule

__all__ = [
    "DEFAULT_EPSILON",
    "AttentionValueRule",
    "EncoderLayout",
    "EpsilonRule",
    "HeadGate",
    "IdentityRule",
    "LayerNormRule",
    "LinearRule",
    "LrpSession",
    "LrpUnsupportedModelError",
    "MaskChoice",
    "PositiveRule",
    "Relevance",
    "attention_gradients",
    "encoder_layout",
    "gates_from_groups",
    "head_groups",
    "lrp_rules",
    "model_inputs",
    "propagate_relevance",
    "relevance_rollout",
    "rollout",
    "rollout_weights",
]
