"""Attention rollout: attention with the residual, multiplied through the layers."""

from __future__ import annotations

import torch

from xattr.methods.attention_maps import attention_pass, explained_positions, query_rows
from xattr.methods.base import AttributionMethod, MethodParams, register_method
from xattr.methods.context import MethodContext
from xattr.models.encoding import Batch
from xattr.models.loading import LoadedModel


@register_method(
    "rollout",
    summary="attention rollout: product over layers of 0.5*mean-head attention + 0.5*I",
    paper="Abnar and Zuidema 2020, Eq. 1; Mask-LRP (Song et al. 2024) Sec. 5.2",
    signed=False,
    cost="1 fwd",
)
class Rollout(AttributionMethod[MethodParams]):
    """Attention rollout (Abnar and Zuidema 2020, Sec. 3, Eq. 1).

    The residual connection is modelled as an identity: per layer ``l``,
    ``Ahat^(l) = 0.5 * E_h A^(l) + 0.5 * I``, row-normalised, and the rollout is the product
    ``Atilde = Ahat^(L) ... Ahat^(2) Ahat^(1)`` (Eq. 1: ``Atilde(l_i) = Ahat(l_i) Atilde(l_{i-1})``).
    The score of token ``j`` is ``Atilde[c, j]`` for the explained token ``c`` ([CLS], or the
    start/end token for QA). Padding never enters: its attention weight is 0 in every row of a
    real token. Scores of a row sum to 1.
    """

    def attribute_batch(
        self, loaded: LoadedModel, batch: Batch, targets: torch.Tensor, context: MethodContext
    ) -> torch.Tensor:
        """Scores ``(batch, seq)``: the explained token's row of the rollout."""
        passed = attention_pass(loaded, batch, targets, gradients=False)
        seq = batch.input_ids.shape[1]
        eye = torch.eye(seq, dtype=passed.attentions[0].dtype, device=batch.input_ids.device)
        rollout = None
        for attention in passed.attentions:  # first layer to last
            mixed = 0.5 * attention.mean(dim=1) + 0.5 * eye  # (batch, seq, seq)
            mixed = mixed / mixed.sum(dim=-1, keepdim=True)
            rollout = mixed if rollout is None else mixed @ rollout
        assert rollout is not None
        return query_rows(rollout, explained_positions(loaded, targets))
