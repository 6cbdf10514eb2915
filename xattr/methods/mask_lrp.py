"""Mask-LRP: relevance propagated only through syntactic and positional heads (Song et al. 2024)."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field

from xattr.lrp import encoder_layout, gates_from_groups, head_groups
from xattr.lrp.rules import HeadGate
from xattr.methods.base import AttributionMethod, register_method
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


@register_method
class MaskLrp(AttributionMethod):
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

    name = "mask_lrp"
    summary = "LRP-rollout through syntactic/positional heads only, renormalised per layer"
    paper = "Song et al. 2024 (Mask-LRP) Eq. 6, Sec. 4.3, Eq. 10-11"
    Params = MaskLrpParams
    uses_head_masks = True

    def __init__(self, params: MaskLrpParams | None = None) -> None:
        super().__init__(params)
        self._gates: tuple[tuple[int, int, str], list[HeadGate]] | None = None

    def kept_heads(self, shape: tuple[int, int]) -> np.ndarray:
        """``(layers, heads)`` group ids for this configuration (``-1``: dropped)."""
        p: MaskLrpParams = self.params  # type: ignore[assignment]
        return head_groups(self._head_masks, shape, mask=p.mask, corruption=p.corruption, seed=p.seed)

    def _layer_gates(self, loaded: LoadedModel) -> list[HeadGate]:
        layout = encoder_layout(loaded.model)
        shape = (len(layout.layers), layout.num_heads)
        key = (shape[0], shape[1], str(loaded.device))
        if self._gates is None or self._gates[0] != key:
            self._gates = (key, gates_from_groups(self.kept_heads(shape), loaded.device))
        return self._gates[1]

    def bind_head_masks(self, masks) -> None:  # type: ignore[no-untyped-def]
        """Bind new masks (and forget gates built from earlier ones)."""
        super().bind_head_masks(masks)
        self._gates = None

    def attribute_batch(self, loaded: LoadedModel, batch: Batch, targets: torch.Tensor) -> torch.Tensor:
        """Scores ``(batch, seq)``."""
        gates = self._layer_gates(loaded)
        p: MaskLrpParams = self.params  # type: ignore[assignment]
        return rollout_scores(loaded, batch, targets, epsilon=p.epsilon, linear_rule=p.linear_rule, gates=gates)
