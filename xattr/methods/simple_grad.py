"""SimpleGrad (saliency): squared gradients of the output with respect to word embeddings."""

from __future__ import annotations

import torch
from pydantic import Field

from xattr.methods.base import AttributionMethod, MethodParams, register_method
from xattr.methods.context import MethodContext
from xattr.methods.gradients import embedding_gradients, reduce_over_hidden
from xattr.models.encoding import Batch
from xattr.models.loading import LoadedModel
from xattr.types import Reduction


class SimpleGradParams(MethodParams):
    """Parameters of :class:`SimpleGrad`."""

    reduction: Reduction = Field("sum_of_squares", description="sum_of_squares (LAFA Eq. 3) or sum (signed)")


@register_method(
    "simple_grad",
    summary="squared gradient of the output w.r.t. each word embedding",
    paper="Simonyan et al. 2013; LAFA (Zhang et al. 2022) Eq. 2-3",
    signed="reduction",
    cost="1 fwd + 1 bwd",
)
class SimpleGrad(AttributionMethod[SimpleGradParams]):
    """Simple gradient (Simonyan et al. 2013) in the NLP form of LAFA Section 2.

    The gradient ``S(H0) = dF/dH0`` of the explained output with respect to the word embeddings
    (Eq. 2) is reduced over the embedding dimension by the sum of squares (Eq. 3):
    ``M(X)_i = sum_j S(H0)_ij^2``. It shows where the output is locally sensitive, not the sign
    of a token's effect.
    """

    def attribute_batch(
        self, loaded: LoadedModel, batch: Batch, targets: torch.Tensor, context: MethodContext
    ) -> torch.Tensor:
        """Scores ``(batch, seq)``: Eq. 3 applied to the gradient of Eq. 2."""
        _, grad = embedding_gradients(loaded, batch, targets)  # (batch, seq, hidden)
        return reduce_over_hidden(grad, self.params.reduction)
