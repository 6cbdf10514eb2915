"""Mask-LRP: relevance propagated only through syntactic and positional heads (Song et al. 2024)."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field

from xattr.heads.masks import HeadMasks
from xattr.lrp import Relevance, encoder_layout, gates_from_groups, head_groups
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
    rollout_relevance: Literal["masked", "unmasked"] = Field(
        "masked",
        description="R(A) rolled out: masked (the paper's text, Sec. 4.3: dropped heads carry none) or unmasked "
        "(the authors' code: only the relevance passed to the layer below is masked)",
    )
    xi_synt: float | None = Field(
        None, description="recompute the syntactic mask at this Eq. 7 threshold (None: the mined mask, 0.1)"
    )
    xi_pos: float | None = Field(
        None, ge=0.0, le=1.0, description="recompute the positional mask at this Eq. 8 threshold (None: mined, 0.8)"
    )
    conservation: bool = Field(
        False,
        description="report the share of the target's relevance reaching each layer output and the embeddings "
        "(relevance_share/*; one more gradient per layer)",
    )


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

    Variants (off by default): ``rollout_relevance: unmasked`` rolls out every head's ``R(A)``
    computed before the gate while the relevance sent to the layer below stays masked (the reading
    of the authors' published code); ``xi_synt`` / ``xi_pos`` re-threshold the mined head statistics
    (the head-count sweep); ``conservation`` reports how much of the explained logit's relevance
    (1 at the start) still reaches each layer's output and the embeddings when some layers keep no
    head, so that only their residual path carries relevance down.
    """

    @classmethod
    def requirements(cls, params: MaskLrpParams) -> Requirements:
        """Head masks from the head-statistics stage, except with ``mask: all`` (every head kept)."""
        return Requirements(head_masks=params.mask != "all")

    def kept_heads(self, masks: HeadMasks | None, shape: tuple[int, int]) -> np.ndarray:
        """``(layers, heads)`` group ids for this configuration (``-1``: dropped)."""
        p = self.params
        if masks is not None and (p.xi_synt is not None or p.xi_pos is not None):
            masks = masks.at_thresholds(p.xi_synt, p.xi_pos)
        return head_groups(masks, shape, mask=p.mask, corruption=p.corruption, seed=p.seed)

    def diagnostics(self, context: MethodContext) -> dict[str, float]:
        """``kept_heads`` and ``empty_layers`` (layers keeping no head); with ``conservation``, the mean share
        of the relevance at each layer's output (``relevance_share/layer_<b>``, 0 = lowest) and at the embeddings."""
        space = context.workspace(self.name)
        if "kept_heads" not in space:
            return {}
        out = {"kept_heads": float(space["kept_heads"]), "empty_layers": float(space["empty_layers"])}
        texts = space.get("texts", 0)
        for key, total in space.get("shares", {}).items():
            out[f"relevance_share/{key}"] = float(total) / max(texts, 1)
        return out

    def attribute_batch(
        self, loaded: LoadedModel, batch: Batch, targets: torch.Tensor, context: MethodContext
    ) -> torch.Tensor:
        """Scores ``(batch, seq)``, relevance gated by the heads kept from ``context.head_masks``."""
        layout = encoder_layout(loaded.model)
        groups = self.kept_heads(context.head_masks, (len(layout.layers), layout.num_heads))
        space = context.workspace(self.name)
        space["kept_heads"] = int((groups >= 0).sum())
        space["empty_layers"] = int((groups < 0).all(axis=1).sum())
        gates = gates_from_groups(groups, loaded.device, gate_attention=self.params.rollout_relevance == "masked")
        on_relevance = None
        if self.params.conservation:

            def on_relevance(relevance: Relevance) -> None:
                # Per row, the relevance summed over tokens and hidden units: the share of R^(0) = 1 that arrives.
                shares = space.setdefault("shares", {})
                found = {f"layer_{b}": h.sum(dim=(1, 2)) for b, h in enumerate(relevance.layers)}
                if relevance.input is not None:
                    found["input"] = relevance.input.sum(dim=(1, 2))
                for key, values in found.items():
                    shares[key] = shares.get(key, 0.0) + float(values.sum())
                space["texts"] = space.get("texts", 0) + int(targets.shape[0])

        return rollout_scores(loaded, batch, targets, self.params, gates, on_relevance)
