"""Partial LRP: relevance of the last layer's attention heads (Voita et al. 2019)."""

from __future__ import annotations

import torch

from xattr.methods.base import AttributionMethod, register_method
from xattr.methods.context import MethodContext
from xattr.methods.lrp import LrpParams, batch_relevance
from xattr.models.encoding import Batch
from xattr.models.loading import LoadedModel


@register_method(
    "partial_lrp",
    summary="LRP relevance of the last layer's attention map, mean over heads, [CLS] row",
    paper="Voita et al. 2019; Chefer et al. 2021 (CVPR); Mask-LRP (Song et al. 2024) Sec. 5.2",
    signed=True,
)
class PartialLrp(AttributionMethod[LrpParams]):
    """Partial LRP: LRP stopped at the model's final attention layer.

    Voita et al. (2019) measure head importance by the LRP relevance reaching each head of a layer;
    Mask-LRP Sec. 5.2 uses it as a baseline that "calculates relevance at the model's final layer".
    Relevance 1 starts at the explained output and is propagated with the rules of :mod:`xattr.lrp`
    down to the last layer's attention product ``A V``; the relevance of its attention map,
    ``R(A)_ij = 1/2 sum_d A_ij V_jd R(O)_id / O_id`` (Eq. 2 with the uniform share of Chefer et al.
    2021), is averaged over heads and the [CLS] row (the token the classifier reads) gives one score
    per key token.
    """

    def attribute_batch(
        self, loaded: LoadedModel, batch: Batch, targets: torch.Tensor, context: MethodContext
    ) -> torch.Tensor:
        """Scores ``(batch, seq)``: ``mean_h R(A)^(last)[h, 0, :]``."""
        relevance = batch_relevance(
            loaded, batch, targets, self.params, attention_relevance=True, input_relevance=False
        )
        return relevance.attention[-1].mean(dim=1)[:, 0, :]  # (batch, seq)
