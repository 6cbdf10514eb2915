"""Grad-CAM over the tokens of the last hidden layer."""

from __future__ import annotations

import torch

from xattr.methods.attention_maps import attention_pass
from xattr.methods.base import AttributionMethod, MethodParams, register_method
from xattr.methods.context import MethodContext
from xattr.models.encoding import Batch
from xattr.models.loading import LoadedModel


@register_method(
    "grad_cam",
    summary="ReLU(sum_d w_d h_td) over last-layer tokens, w = token-mean gradient",
    paper="Selvaraju et al. 2017, Eq. 1-2; Mask-LRP (Song et al. 2024) Sec. 5.2",
    signed=False,
    cost="1 fwd + 1 bwd",
)
class GradCam(AttributionMethod[MethodParams]):
    """Grad-CAM (Selvaraju et al. 2017, Eq. 1-2) with tokens in place of pixels.

    The channel weights are the gradients of the explained logit ``y`` with respect to the last
    layer's hidden states ``h`` (``(seq, hidden)``), averaged over the real tokens (Eq. 1:
    ``w_d = 1/T sum_t dy/dh_td``; padding excluded); a token's score is
    ``ReLU(sum_d w_d h_td)`` (Eq. 2). Mask-LRP (Sec. 5.2) uses GradCAM as a gradient-based baseline.
    """

    def attribute_batch(
        self, loaded: LoadedModel, batch: Batch, targets: torch.Tensor, context: MethodContext
    ) -> torch.Tensor:
        """Scores ``(batch, seq)``."""
        passed = attention_pass(loaded, batch, targets, gradients=True)
        hidden, grad = passed.hidden_states[-1], passed.hidden_grads[-1]  # (batch, seq, hidden) each
        real = batch.attention_mask.unsqueeze(-1).to(hidden.dtype)  # (batch, seq, 1)
        weights = (grad * real).sum(dim=1, keepdim=True) / real.sum(dim=1, keepdim=True)  # (batch, 1, hidden)
        return torch.relu((weights * hidden).sum(dim=-1))
