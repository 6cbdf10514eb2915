"""Full LRP: relevance of the explained output propagated to every input token."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from pydantic import Field

from xattr.lrp import DEFAULT_EPSILON, HeadGate, LinearRule, Relevance, model_inputs, propagate_relevance
from xattr.methods.base import AttributionMethod, MethodParams, register_method
from xattr.methods.context import MethodContext
from xattr.models.encoding import Batch
from xattr.models.loading import LoadedModel


class LrpParams(MethodParams):
    """Parameters of the LRP family."""

    epsilon: float = Field(DEFAULT_EPSILON, gt=0, description="stabiliser of the linear rules' denominators")
    linear_rule: LinearRule = Field(
        "epsilon",
        description="rule for linear layers: epsilon (Bach et al. 2015) or positive (Mask-LRP Eq. 4, Chefer's "
        "alpha=1 beta=0: only positive contributions x_j W_ij carry relevance)",
    )


def batch_relevance(
    loaded: LoadedModel,
    batch: Batch,
    targets: torch.Tensor,
    params: LrpParams,
    *,
    gates: Sequence[HeadGate | None] | None = None,
    attention_relevance: bool = False,
    input_relevance: bool = True,
    on_attention: Callable[[int, torch.Tensor], None] | None = None,
) -> Relevance:
    """One LRP pass over a batch with the family's rule settings (:func:`xattr.lrp.propagate_relevance`).

    Args:
        loaded: The model (eval mode).
        batch: Padded inputs ``(batch, seq)`` on the model's device.
        targets: ``(batch,)`` output index per row.
        params: ``epsilon`` and ``linear_rule``.
        gates: Mask-LRP's per-layer head gates, or ``None`` to keep every head.
        attention_relevance: Also return ``R(A)`` per layer.
        input_relevance: Return the input relevance.
        on_attention: Called with ``(layer, R(A))`` during the backward pass.
    """
    inputs = model_inputs(loaded.model, batch.input_ids, batch.attention_mask, batch.token_type_ids)
    return propagate_relevance(
        loaded.model,
        inputs,
        targets,
        epsilon=params.epsilon,
        linear_rule=params.linear_rule,
        gates=gates,
        attention_relevance=attention_relevance,
        input_relevance=input_relevance,
        on_attention=on_attention,
    )


@register_method(
    "lrp",
    summary="LRP relevance at the encoder input, summed per token",
    paper="Bach et al. 2015; Ali et al. 2022 (conservative rules); Mask-LRP (Song et al. 2024) Eq. 2-3",
    signed=True,
)
class Lrp(AttributionMethod[LrpParams]):
    """Layer-wise relevance propagation (Bach et al. 2015) through the whole encoder.

    Relevance 1 starts at the explained output (Mask-LRP Sec. 3.2) and is redistributed layer by
    layer with conservative rules (Eq. 2-3): epsilon rule for linear layers (or the positive rule of
    Eq. 4 with ``linear_rule: positive``), LayerNorm with a
    constant denominator, identity rule for GELU/tanh, attention probabilities held constant so
    relevance flows through the values, proportional splits at residual additions (see
    :mod:`xattr.lrp.rules`). A token's score is the sum over the hidden dimension of the relevance
    at the encoder input (the embedding output ``x^(N)``); scores are signed and sum to about 1 when
    the model's biases are zero.
    """

    def attribute_batch(
        self, loaded: LoadedModel, batch: Batch, targets: torch.Tensor, context: MethodContext
    ) -> torch.Tensor:
        """Scores ``(batch, seq)``: input relevance summed over the hidden dimension."""
        relevance = batch_relevance(loaded, batch, targets, self.params)
        if relevance.input is None:  # pragma: no cover - propagate_relevance returns it by default
            raise RuntimeError("the LRP pass returned no input relevance")
        return relevance.input.sum(dim=-1)  # (batch, seq)
