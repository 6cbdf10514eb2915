"""GAE: gradient-weighted attention accumulated through the layers (Chefer et al. 2021, ICCV)."""

from __future__ import annotations

import torch

from xattr.methods.attention_maps import attention_pass, explained_positions, query_rows
from xattr.methods.base import AttributionMethod, MethodParams, register_method
from xattr.methods.context import MethodContext
from xattr.models.encoding import Batch
from xattr.models.loading import LoadedModel


@register_method(
    "gae",
    summary="gradient-weighted attention rollout R += E_h[(grad_A*A)^+] R",
    paper="Chefer, Gur and Wolf 2021 ICCV, Eq. 4-6",
    signed=False,
    cost="1 fwd + 1 bwd",
)
class Gae(AttributionMethod[MethodParams]):
    """Generic Attention-model Explainability (Chefer, Gur and Wolf 2021, ICCV), gradients only.

    Relevance starts as the identity, ``R = I`` (Eq. 4: each token is self-relevant), and for each
    layer from the first to the last the head-averaged positive gradient-weighted attention
    ``Abar = E_h[(grad_A ⊙ A)^+]`` (Eq. 5) updates it: ``R = R + Abar · R`` (Eq. 6). ``grad_A`` is
    the gradient of the explained logit with respect to the layer's attention probabilities. The
    score of token ``j`` is ``R[c, j]`` for the explained token ``c`` ([CLS], or the start/end
    token for QA). This is the ICCV method, not the LRP-based rollout of Chefer et al. 2021 CVPR
    (``lrp_rollout``, which Mask-LRP calls GAE).
    """

    def attribute_batch(
        self, loaded: LoadedModel, batch: Batch, targets: torch.Tensor, context: MethodContext
    ) -> torch.Tensor:
        """Scores ``(batch, seq)``: the explained token's row of the accumulated relevance."""
        passed = attention_pass(loaded, batch, targets, gradients=True)
        size, seq = batch.input_ids.shape
        eye = torch.eye(seq, dtype=passed.attentions[0].dtype, device=batch.input_ids.device)
        relevance = eye.expand(size, seq, seq).clone()  # (batch, seq, seq)
        for attention, grad in zip(passed.attentions, passed.attention_grads, strict=True):
            weighted = (grad * attention).clamp(min=0).mean(dim=1)  # (batch, seq, seq)
            relevance = relevance + weighted @ relevance
        return query_rows(relevance, explained_positions(loaded, targets))
