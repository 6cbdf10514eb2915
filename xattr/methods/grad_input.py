"""Grad*Input (InputGrad): gradient times word embedding, reduced per token."""

from __future__ import annotations

import torch
from pydantic import Field

from xattr.methods.base import AttributionMethod, MethodParams, register_method
from xattr.methods.context import MethodContext
from xattr.methods.gradients import embedding_gradients, reduce_over_hidden
from xattr.models.encoding import Batch
from xattr.models.loading import LoadedModel
from xattr.types import Reduction


class GradInputParams(MethodParams):
    """Parameters of :class:`GradInput`."""

    reduction: Reduction = Field(
        "sum_of_squares", description="sum_of_squares (LAFA Sec. 4) or sum (signed first-order effect)"
    )


@register_method(
    "grad_input",
    summary="gradient x word embedding, per token",
    paper="Shrikumar et al. 2017; LAFA (Zhang et al. 2022) Sec. 4",
    signed="reduction",
    cost="1 fwd + 1 bwd",
)
class GradInput(AttributionMethod[GradInputParams]):
    """Gradient*Input (Shrikumar et al. 2017) as written in LAFA Section 4.

    ``S_Grad*Input(H0) = H0 * S(H0)`` element-wise, then ``M_i = sum_j (H0 * S(H0))_ij^2``.
    With ``reduction="sum"`` the score is ``sum_j H0_ij S(H0)_ij``, the signed first-order
    contribution of the token's word embedding to the output, which a price-driver report needs.
    """

    multiplies_by_inputs = True

    def attribute_batch(
        self, loaded: LoadedModel, batch: Batch, targets: torch.Tensor, context: MethodContext
    ) -> torch.Tensor:
        """Scores ``(batch, seq)`` from ``H0 * dF/dH0``."""
        h0, grad = embedding_gradients(loaded, batch, targets)  # (batch, seq, hidden) each
        return reduce_over_hidden(h0 * grad, self.params.reduction)
