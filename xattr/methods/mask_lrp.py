"""Mask-LRP: relevance propagated only through syntactic and positional heads (Song et al. 2024)."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field

from xattr.heads.masks import HeadMasks
from xattr.lrp import encoder_layout, gates_from_groups, head_groups
from xattr.methods.base import AttributionMethod, register_method
from xattr.methods.context import MethodContext, Requirements
from xattr.methods.lrp import LrpParams
from xattr.methods.lrp_rollout import rollout_scores
from xattr.models.encoding import Batch
from xattr.models.loading import LoadedModel


class MaskLrpParams(LrpParams):
    """Parameters of :class:`MaskLrp` (the ablations of Mask-LRP Sec. 5.2-5.5)."""

    mask: Literal["union", "syntactic", "positional", "random", "all"] = Field(
        "union",
        description="heads kept: union (Eq. 6), syntactic or positional only (Table 3), random with the union's "
        "head count (Sec. 5.2), all (= lrp_rollout)",
    )
    corruption: float = Field(
        0.0, ge=0.0, le=1.0, description="fraction of dropped heads switched on at random (Fig. 4); 1.0 keeps all"
    )
    seed: int = Field(0, description="seed of the random mask and of the corruption")


@register_method(
    "mask_lrp",
    summary="LRP-rollout through syntactic/positional heads only, renormalised per layer",
    paper="Song et al. 2024 (Mask-LRP) Eq. 6, Sec. 4.3, Eq. 10-11",
    signed=False,
    cost="1 fwd + 1 bwd",
)
class MaskLrp(AttributionMethod[MaskLrpParams]):
    """Mask-LRP (Song et al. 2024, "Better Explain Transformers by Illuminating Important Information").

    LRP in which relevance reaches the layer below only through the important heads, those that
    follow core syntactic relations or fixed relative positions (head masks from the
    head-statistics stage, Eq. 6-8). In every layer the relevance of each head's output is
    multiplied by the layer's mask (Sec. 4.3, ``G(X, Y, M^(b) R^(n_b - 1))``) and each group of kept
    heads (syntactic, positional) is rescaled so that the kept heads carry the relevance all heads
    carried (the normalisation of Sec. 4.3). The final scores roll out the gradient-weighted
    relevance of the kept heads' attention maps, ``Abar^(b) = E_h[(nabla A^(b) * (R_synt + R_pos))^+] + I``
    multiplied over blocks (Eq. 10-11); the [CLS] row gives the token scores. With every head kept
    it is exactly ``lrp_rollout``.
    """

    @classmethod
    def requirements(cls, params: MaskLrpParams) -> Requirements:
        """Head masks from the head-statistics stage, except with ``mask: all`` (every head kept)."""
        return Requirements(head_masks=params.mask != "all")

    def kept_heads(self, masks: HeadMasks | None, shape: tuple[int, int]) -> np.ndarray:
        """``(layers, heads)`` group ids for this configuration (``-1``: dropped)."""
        p = self.params
        return head_groups(masks, shape, mask=p.mask, corruption=p.corruption, seed=p.seed)

    def attribute_batch(
        self, loaded: LoadedModel, batch: Batch, targets: torch.Tensor, context: MethodContext
    ) -> torch.Tensor:
        """Scores ``(batch, seq)``, relevance gated by the heads kept from ``context.head_masks``."""
        layout = encoder_layout(loaded.model)
        groups = self.kept_heads(context.head_masks, (len(layout.layers), layout.num_heads))
        return rollout_scores(loaded, batch, targets, self.params, gates_from_groups(groups, loaded.device))
