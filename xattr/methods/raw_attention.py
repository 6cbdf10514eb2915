"""RawAtt: one layer's attention from the explained token, averaged over heads."""

from __future__ import annotations

import torch
from pydantic import Field

from xattr.methods.attention_maps import attention_pass, explained_positions, layer_index, query_rows
from xattr.methods.base import AttributionMethod, MethodParams, register_method
from xattr.methods.context import MethodContext
from xattr.models.encoding import Batch
from xattr.models.loading import LoadedModel


class RawAttentionParams(MethodParams):
    """Parameters of :class:`RawAttention`."""

    layer: int = Field(-1, description="encoder layer whose attention is read (0-based; negative counts from the end)")


@register_method(
    "raw_attention",
    summary="last layer's attention from [CLS], mean over heads",
    paper="Abnar and Zuidema 2020 (raw attention); Mask-LRP (Song et al. 2024) Sec. 5.2",
    signed=False,
    cost="1 fwd",
)
class RawAttention(AttributionMethod[RawAttentionParams]):
    """Raw attention (Abnar and Zuidema 2020; the "RawAtt" baseline of Mask-LRP Section 5.2).

    The score of token ``j`` is ``E_h A^(l)_h[c, j]``: how much the explained token ``c`` ([CLS] for
    classification, the start or end token for QA) attends to ``j`` in layer ``l`` (the last by
    default), averaged over heads. It shows where one layer looks, not what the output depends on.
    """

    def attribute_batch(
        self, loaded: LoadedModel, batch: Batch, targets: torch.Tensor, context: MethodContext
    ) -> torch.Tensor:
        """Scores ``(batch, seq)``: the head-mean attention row of the explained token."""
        passed = attention_pass(loaded, batch, targets, gradients=False)
        layer = layer_index(self.params.layer, len(passed.attentions))
        mean = passed.attentions[layer].mean(dim=1)  # (batch, seq, seq)
        return query_rows(mean, explained_positions(loaded, targets))
