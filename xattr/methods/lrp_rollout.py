"""LRP-rollout: gradient-weighted attention relevance rolled out over layers (Chefer et al. 2021)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from xattr.lrp import HeadGate, Relevance, attention_gradients, model_inputs, rollout, rollout_weights
from xattr.methods.base import AttributionMethod, register_method
from xattr.methods.context import MethodContext
from xattr.methods.lrp import LrpParams, batch_relevance
from xattr.models.encoding import Batch
from xattr.models.loading import LoadedModel


def rollout_scores(
    loaded: LoadedModel,
    batch: Batch,
    targets: torch.Tensor,
    params: LrpParams,
    gates: Sequence[HeadGate | None] | None = None,
    on_relevance: Callable[[Relevance], None] | None = None,
) -> torch.Tensor:
    """``(batch, seq)`` [CLS] row of ``prod_b (I + E_h[(nabla A^(b) * R(A^(b)))^+])`` (Eq. 10-11).

    Two passes: an ordinary forward/backward for ``nabla A`` and an LRP forward/backward for
    ``R(A)`` with ``params``' rules (and the head gates, when given). ``on_relevance``, when given,
    receives the LRP pass's :class:`~xattr.lrp.Relevance` with every layer output's relevance
    (conservation diagnostics).
    """
    inputs = model_inputs(loaded.model, batch.input_ids, batch.attention_mask, batch.token_type_ids)
    gradients: list[torch.Tensor | None] = list(attention_gradients(loaded.model, inputs, targets))
    weights: list[torch.Tensor | None] = [None] * len(gradients)

    def reduce(layer: int, attention_relevance: torch.Tensor) -> None:
        # Reduced as soon as the backward pass reaches the layer: no layer's (batch, heads, seq, seq)
        # relevance and gradient outlive their use (long texts would otherwise hold every layer's).
        weights[layer] = rollout_weights(gradients[layer], attention_relevance)  # type: ignore[arg-type]
        gradients[layer] = None

    relevance = batch_relevance(
        loaded, batch, targets, params, gates=gates, layer_outputs=on_relevance is not None, on_attention=reduce
    )
    if on_relevance is not None:
        on_relevance(relevance)
    return rollout(weights, row=0)  # type: ignore[arg-type]


@register_method(
    "lrp_rollout",
    summary="rollout of E_h[(grad A * LRP relevance of A)^+] over layers, [CLS] row",
    paper="Chefer et al. 2021 (CVPR) Eq. 13-16; Mask-LRP (Song et al. 2024) Eq. 10-11 ('GAE')",
    signed=False,
    cost="1 fwd + 1 bwd",
)
class LrpRollout(AttributionMethod[LrpParams]):
    """Chefer et al. (2021, CVPR) "Transformer interpretability beyond attention visualization".

    What the Mask-LRP paper calls GAE. Each layer's attention map gets a relevance ``R(A)`` from
    LRP (the share of the ``A V`` product that the uniform rule gives ``A``) and an ordinary
    gradient ``nabla A``; their product, clipped at zero and averaged over heads,
    ``Abar = E_h[(nabla A * R(A))^+]``, is rolled out from the bottom layer up, ``R <- R + Abar R``
    from the identity (Mask-LRP Eq. 10-11 with every head kept). A token's score is the [CLS] row.
    """

    def attribute_batch(
        self, loaded: LoadedModel, batch: Batch, targets: torch.Tensor, context: MethodContext
    ) -> torch.Tensor:
        """Scores ``(batch, seq)``."""
        return rollout_scores(loaded, batch, targets, self.params)
