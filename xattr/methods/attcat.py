"""AttCAT: attentive class activation tokens, summed over layers (Qiang et al. 2022, NeurIPS)."""

from __future__ import annotations

import torch

from xattr.methods.attention_maps import attention_pass, explained_positions, query_rows
from xattr.methods.base import AttributionMethod, MethodParams, register_method
from xattr.methods.context import MethodContext
from xattr.models.encoding import Batch
from xattr.models.loading import LoadedModel


@register_method(
    "attcat",
    summary="sum over layers of mean-head [CLS] attention x (gradient . hidden state) per token",
    paper="Qiang et al. 2022 NeurIPS (AttCAT), Sec. 3; Mask-LRP (Song et al. 2024) Sec. 5.2",
    signed=True,
)
class AttCat(AttributionMethod[MethodParams]):
    """Attentive Class Activation Tokens (Qiang et al. 2022, Sec. 3.2-3.3).

    For each encoder layer ``l`` with output hidden states ``h^l`` (``(seq, hidden)``), the class
    activation token is ``CAT^l_i = sum_d (dy/dh^l_i ⊙ h^l_i)_d`` (gradient times activation of
    token ``i``, summed over the hidden dimension), and it is weighted by the head-averaged
    attention that the explained token ``c`` ([CLS], or the start/end token for QA) pays to
    ``i`` in that layer: ``AttCAT_i = sum_l E_h(alpha^l_{h,c,i}) * CAT^l_i`` (the AttCAT equation of
    the paper's Sec. 3, cited by content: the paper text was not available offline to confirm its
    equation number; ``alpha^l`` are the attention weights of layer ``l``). Scores are signed.
    """

    def attribute_batch(
        self, loaded: LoadedModel, batch: Batch, targets: torch.Tensor, context: MethodContext
    ) -> torch.Tensor:
        """Scores ``(batch, seq)``."""
        passed = attention_pass(loaded, batch, targets, gradients=True)
        positions = explained_positions(loaded, targets)
        scores = torch.zeros(batch.input_ids.shape, dtype=passed.attentions[0].dtype, device=batch.input_ids.device)
        for layer, attention in enumerate(passed.attentions):
            hidden, grad = passed.hidden_states[layer + 1], passed.hidden_grads[layer + 1]  # layer l's output
            cat = (grad * hidden).sum(dim=-1)  # (batch, seq)
            scores = scores + query_rows(attention.mean(dim=1), positions) * cat
        return scores
