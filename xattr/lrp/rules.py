"""LRP propagation rules as Gradient x Input with modified backward passes.

Relevance is never stored as its own tensor: at every activation ``x`` with modified gradient
``g`` the relevance is ``R(x) = x * g`` (Ali et al. 2022; the lxt / AttnLRP formulation). Each
rule below is a small :class:`torch.autograd.Function` whose forward is the layer's ordinary value
and whose backward is chosen so that ``x * g_in`` is the rule's relevance at the layer input.
Residual additions need no rule: for ``y = a + b`` the ordinary gradient gives ``a * g + b * g``,
the proportional split ``R(a) = a / y * R(y)`` (Chefer et al. 2021, Eq. 2 applied to an addition).

Conservation (Mask-LRP Eq. 3, ``sum R_in = sum R_out``) holds exactly for the LayerNorm rule
without its shift ``beta``, the identity rule and the attention-value rule, and up to the
stabiliser ``epsilon`` for the epsilon rule without bias; a bias absorbs ``sum b * g`` (the
tests zero biases where they check conservation).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


def stabilised(z: torch.Tensor, epsilon: float) -> torch.Tensor:
    """``z + epsilon * sign(z)`` with ``sign(0) = +1``: the epsilon rule's denominator."""
    return z + torch.copysign(torch.full_like(z, epsilon), torch.where(z == 0, 1.0, z))


class EpsilonRule(torch.autograd.Function):
    """Epsilon rule for a linear layer ``z = x W^T + b``, applied to its output ``z``.

    Mask-LRP Eq. 2 (Deep Taylor decomposition) for a linear map with a stabilised denominator
    (Bach et al. 2015): ``R_j(x) = sum_i x_j W_ij R_i / (z_i + eps sign z_i)``. In the gradient
    form, the ordinary gradient through the linear map times ``x`` already gives the numerator; this
    function rescales the incoming gradient by ``z / (z + eps sign z)`` so that dividing by the
    stabilised output replaces dividing by ``z``. Forward: identity on ``z``.
    """

    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, epsilon: float) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(z)
        ctx.epsilon = epsilon
        return z.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        (z,) = ctx.saved_tensors
        return grad * z / stabilised(z, ctx.epsilon), None


class PositiveRule(torch.autograd.Function):
    """Positive-contribution rule for a linear layer ``z = x W^T + b`` (Mask-LRP Eq. 4).

    Mask-LRP Sec. 3.2, following Chefer et al. 2021 (their LRP with alpha = 1, beta = 0): only the
    positive contributions ``q = {(i, j) | x_j W_ij >= 0}`` carry relevance,
    ``R_j = sum_i [x_j W_ij]^+ R_i / sum_j' [x_j' W_ij']^+``. The bias takes no share, so the rule is
    exactly conservative wherever an output has a positive contribution. In the gradient form
    ``R_j = x_j g_j`` with ``g_j = sum_i W+_ij s_i`` for ``x_j > 0`` and ``sum_i W-_ij s_i`` for ``x_j < 0``,
    where ``s = R / z+`` (``W+``, ``W-``: the positive and negative parts of ``W``). Forward: ``z``.

    Inputs: ``x`` ``(..., in)``, ``weight`` ``(out, in)``, ``z`` the layer's output ``(..., out)``.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: torch.Tensor, weight: torch.Tensor, z: torch.Tensor, epsilon: float
    ) -> torch.Tensor:
        ctx.save_for_backward(x, weight, z)
        ctx.epsilon = epsilon
        return z.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:  # type: ignore[override]
        x, weight, z = ctx.saved_tensors
        w_pos, w_neg = weight.clamp(min=0), weight.clamp(max=0)
        x_pos, x_neg = x.clamp(min=0), x.clamp(max=0)
        z_pos = x_pos @ w_pos.T + x_neg @ w_neg.T  # sum of the positive contributions, (..., out)
        relevance = z * grad
        share = torch.where(z_pos > 0, relevance / (z_pos + ctx.epsilon), torch.zeros_like(relevance))
        grad_in = torch.where(x > 0, share @ w_pos, share @ w_neg)
        return grad_in, None, None, None


class IdentityRule(torch.autograd.Function):
    """Identity rule for an element-wise activation ``y = f(x)`` (GELU, tanh, ReLU).

    AttnLRP (Achtibat et al. 2024) and Mask-LRP Sec. 3.2's remark that LRP cannot split relevance
    through signed activations like GELU: the relevance passes unchanged, ``R(x) = R(y)``. With
    ``R(y) = y * g`` this needs ``g_in = g * y / x`` (0 where ``x = 0``, where ``y`` and hence the
    relevance are 0 as well). Forward: returns ``y``; the gradient goes to ``x`` only.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, y)
        return y.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        x, y = ctx.saved_tensors
        nonzero = x != 0
        ratio = torch.where(nonzero, y / torch.where(nonzero, x, torch.ones_like(x)), torch.zeros_like(x))
        return grad * ratio, None


class LayerNormRule(torch.autograd.Function):
    """LayerNorm with its normalising denominator held constant (Ali et al. 2022, AttnLRP).

    ``y = w * (x - mean(x)) / s + b`` with ``s = sqrt(var(x) + eps)`` treated as a constant is
    linear in ``x``: ``dy_i/dx_j = w_i / s * (delta_ij - 1/n)``. Its gradient form is exact
    Gradient x Input, conservative without ``b``: ``sum_j x_j g_in_j = sum_i (y_i - b_i) g_i``.
    Forward: returns the LayerNorm's own output ``y`` (computed by the module); the gradient goes to
    ``x`` only, and ``s`` is computed in the backward pass.

    Inputs: ``x`` the LayerNorm input, ``y`` its output, ``weight`` (or ``None``), ``eps``.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None, eps: float
    ) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_weight = weight is not None
        ctx.eps = eps
        return y.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:  # type: ignore[override]
        x, weight = ctx.saved_tensors
        scale = torch.sqrt(x.var(dim=-1, unbiased=False, keepdim=True) + ctx.eps)
        scaled = grad / scale
        if ctx.has_weight:
            scaled = scaled * weight
        return scaled - scaled.mean(dim=-1, keepdim=True), None, None, None


class HeadGate:
    """Which heads of one layer pass relevance, and how kept heads are renormalised (Sec. 4.3).

    Attributes:
        groups: ``(heads,)`` long tensor: the group of each kept head (0, 1, ...) or -1 for a
            dropped head. Mask-LRP's union mask has two groups, syntactic and positional.
        gate_attention: Whether the attention relevance ``R(A)`` (the rollout's input) is taken
            from the gated head relevance (the paper's text, Sec. 4.3: masked heads carry no
            ``R(A)``) or from the relevance before the gate (the authors' published code: only the
            relevance passed to the layer below is masked). The relevance reaching ``V`` is gated
            either way.
    """

    def __init__(self, groups: torch.Tensor, gate_attention: bool = True) -> None:
        self.groups = groups
        self.gate_attention = gate_attention
        self.num_groups = int(groups.max().item()) + 1 if bool((groups >= 0).any()) else 0
        self.keeps_all = bool((groups >= 0).all())
        #: ``(groups, heads)`` 0/1 membership, built once per layer (not per backward pass).
        self.members = torch.stack([groups == k for k in range(self.num_groups)]) if self.num_groups else None

    def scale(self, head_relevance: torch.Tensor) -> torch.Tensor:
        """Per-row, per-head factors ``(batch, heads)`` applied to the relevance of each head.

        Mask-LRP Sec. 4.3: the relevance of group ``k`` (``R_synt``, ``R_pos``) is rescaled by
        ``|S_k| / sum_k' |S_k'| * S / S_k``, with ``S_k`` the relevance sum of the group's heads and
        ``S`` the sum over all heads before masking. The paper prints the denominator as
        ``|sum R|``; only ``sum_k' |S_k'|`` makes its stated identity ``sum_k S_k' = S`` hold when the
        group sums differ in sign, so that is used (they agree when the signs agree). Dropped heads
        get 0. A layer that keeps every head is left unchanged (nothing was removed to restore).

        Args:
            head_relevance: ``(batch, heads)`` relevance of each head's output before masking.
        """
        if self.keeps_all:
            return torch.ones_like(head_relevance)
        total = head_relevance.sum(dim=1)  # (batch,)
        factors = torch.zeros_like(head_relevance)
        if self.num_groups == 0:
            return factors
        members = self.members.to(head_relevance.dtype)  # type: ignore[union-attr]
        group_sums = head_relevance @ members.T  # (batch, groups)
        denominator = group_sums.abs().sum(dim=1, keepdim=True)  # (batch, 1)
        safe_den = torch.where(denominator != 0, denominator, torch.ones_like(denominator))
        safe_sums = torch.where(group_sums != 0, group_sums, torch.ones_like(group_sums))
        group_factor = torch.where(
            (group_sums != 0) & (denominator != 0),
            group_sums.abs() / safe_den * total[:, None] / safe_sums,
            torch.zeros_like(group_sums),
        )  # (batch, groups)
        kept = self.groups >= 0
        factors[:, kept] = group_factor[:, self.groups[kept]]
        return factors


class AttentionValueRule(torch.autograd.Function):
    """The attention product ``O = A V`` with the attention probabilities held constant.

    Ali et al. 2022 (CP-LRP) and the brief of Mask-LRP Sec. 4.3: relevance reaches the layer below
    only through the values, ``R(V)_jd = sum_i A_ij V_jd R(O)_id / O_id`` (Mask-LRP Eq. 2 with ``A``
    as the fixed weight), which is exactly conservative. The relevance of the attention map used by
    the rollout (Eq. 10) is the share the uniform rule for a product of two operands gives ``A``
    (Chefer et al. 2021, each operand of ``A V`` receives half):
    ``R(A)_ij = 1/2 sum_d A_ij V_jd R(O)_id / O_id``; it is returned as the gradient of ``A`` so that
    ``R(A) = A * g_A``. With a :class:`HeadGate`, the relevance of each head's output is masked and
    renormalised (Mask-LRP Sec. 4.3) before it is split, so masked heads pass nothing to ``V`` and
    carry no ``R(A)`` (unless the gate's ``gate_attention`` is off: then ``R(A)`` is split from the
    relevance before the gate, the reading of the authors' code).

    ``record``, when given, is called in the backward pass with the ``(batch, heads)`` relevance
    of each head's output before and after the gate (Voita et al. 2019's head relevance).
    ``on_attention``, when given, is called with ``R(A)`` ``(batch, heads, seq, seq)`` as soon as the
    backward pass reaches this product, so a rollout can reduce it at once instead of keeping every
    layer's attention relevance alive until the pass ends.

    Inputs: ``attention`` ``(batch, heads, seq, seq)`` (constant; give it ``requires_grad`` to get
    ``g_A``), ``value`` ``(batch, heads, seq, head_dim)``. Output ``(batch, heads, seq, head_dim)``.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        attention: torch.Tensor,
        value: torch.Tensor,
        gate: HeadGate | None,
        record: Callable[[torch.Tensor, torch.Tensor], None] | None,
        on_attention: Callable[[torch.Tensor], None] | None = None,
    ) -> torch.Tensor:
        output = attention @ value
        ctx.save_for_backward(attention, value, output)
        ctx.gate = gate
        ctx.record = record
        ctx.on_attention = on_attention
        return output

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, grad: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor, None, None, None]:
        attention, value, output = ctx.saved_tensors
        gate: HeadGate | None = ctx.gate
        if gate is not None and gate.keeps_all:
            gate = None  # a layer keeping every head is left exactly as it is
        ungated = grad
        if gate is not None or ctx.record is not None:
            before = (output * grad).sum(dim=(-2, -1))  # (batch, heads)
            if gate is not None:
                grad = grad * gate.scale(before)[:, :, None, None]
            if ctx.record is not None:
                ctx.record(before.detach(), (output * grad).sum(dim=(-2, -1)).detach())
        grad_value = attention.transpose(-2, -1) @ grad
        grad_attention = None
        if ctx.needs_input_grad[0] or ctx.on_attention is not None:
            source = ungated if gate is not None and not gate.gate_attention else grad
            grad_attention = 0.5 * (source @ value.transpose(-2, -1))
        if ctx.on_attention is not None:
            ctx.on_attention(attention * grad_attention)
        return grad_attention if ctx.needs_input_grad[0] else None, grad_value, None, None, None
