"""Each LRP rule on its own: conservation (sum of relevance in = out) and the rule's exact formula."""

from __future__ import annotations

import numpy as np
import torch

from xattr.lrp.rules import AttentionValueRule, EpsilonRule, HeadGate, IdentityRule, LayerNormRule, PositiveRule

F64 = torch.float64


def _relevance_through(x: torch.Tensor, forward, seed_relevance: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``y = forward(x)`` and seed gradient ``R(y) / y``; return ``(R(x), y)``."""
    x = x.clone().requires_grad_(True)
    y = forward(x)
    y_safe = torch.where(y != 0, y, torch.ones_like(y)).detach()
    seed = torch.where(y != 0, seed_relevance / y_safe, torch.zeros_like(y))
    (grad,) = torch.autograd.grad(y, x, grad_outputs=seed)
    return (x * grad).detach(), y.detach()


def test_epsilon_rule_matches_formula_and_conserves_without_bias() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 7, generator=g, dtype=F64)
    weight = torch.randn(4, 7, generator=g, dtype=F64)
    r_out = torch.randn(5, 4, generator=g, dtype=F64)
    eps = 1e-9
    r_in, z = _relevance_through(x, lambda t: EpsilonRule.apply(t @ weight.T, eps), r_out)
    # R_j = sum_i x_j W_ij R_i / (z_i + eps sign z_i)
    xn, wn, rn, zn = x.numpy(), weight.numpy(), r_out.numpy(), z.numpy()
    expected = np.einsum("bj,ij,bi->bj", xn, wn, rn / (zn + eps * np.where(zn >= 0, 1, -1)))
    np.testing.assert_allclose(r_in.numpy(), expected, rtol=1e-12, atol=1e-13)
    # conservation without bias, up to the stabiliser
    np.testing.assert_allclose(r_in.sum(1).numpy(), r_out.sum(1).numpy(), rtol=1e-7, atol=1e-7)
    # with a bias, the bias absorbs sum_i b_i R_i / z_i
    bias = torch.randn(4, generator=g, dtype=F64)
    r_in_b, z_b = _relevance_through(x, lambda t: EpsilonRule.apply(t @ weight.T + bias, eps), r_out)
    absorbed = (bias * r_out / z_b).sum(1)
    np.testing.assert_allclose((r_in_b.sum(1) + absorbed).numpy(), r_out.sum(1).numpy(), rtol=1e-7, atol=1e-7)
    assert not np.allclose(r_in_b.sum(1).numpy(), r_out.sum(1).numpy(), rtol=1e-3)


def test_layer_norm_rule_is_the_linear_map_with_constant_scale_and_conserves_without_shift() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 6, generator=g, dtype=F64) * 2 + 0.5
    weight = 1 + 0.3 * torch.randn(6, generator=g, dtype=F64)
    bias = 0.2 * torch.randn(6, generator=g, dtype=F64)
    r_out = torch.randn(3, 6, generator=g, dtype=F64)

    def norm(t: torch.Tensor, shift: torch.Tensor | None = None) -> torch.Tensor:
        return LayerNormRule.apply(t, torch.nn.functional.layer_norm(t, (6,), weight, shift, 1e-12), weight, 1e-12)

    r_in, y = _relevance_through(x, norm, r_out)
    # explicit matrix M = diag(w / s) (I - 11^T / n):  R_in_j = sum_i x_j M_ij R_i / y_i
    for b in range(3):
        xb = x[b].numpy()
        s = np.sqrt(xb.var() + 1e-12)
        m = np.diag(weight.numpy() / s) @ (np.eye(6) - np.ones((6, 6)) / 6)
        expected = xb * (m.T @ (r_out[b].numpy() / y[b].numpy()))
        np.testing.assert_allclose(r_in[b].numpy(), expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(r_in.sum(1).numpy(), r_out.sum(1).numpy(), rtol=1e-10)
    # with the shift beta the rule gives the shift its share sum_i beta_i R_i / y_i
    r_in_b, y_b = _relevance_through(x, lambda t: norm(t, bias), r_out)
    absorbed = (bias * r_out / y_b).sum(1)
    np.testing.assert_allclose((r_in_b.sum(1) + absorbed).numpy(), r_out.sum(1).numpy(), rtol=1e-10)


def test_identity_rule_passes_relevance_unchanged_through_gelu_and_tanh() -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4, 5, generator=g, dtype=F64)
    x[0, 0] = 0.0  # f(0) = 0: relevance 0, no division by zero
    r_out = torch.randn(4, 5, generator=g, dtype=F64)
    for fn in (torch.nn.functional.gelu, torch.tanh):
        r_in, y = _relevance_through(x, lambda t, fn=fn: IdentityRule.apply(t, fn(t)), r_out)
        expected = r_out.clone()
        expected[0, 0] = 0.0
        np.testing.assert_allclose(r_in.numpy(), expected.numpy(), rtol=1e-12, atol=1e-15)
        assert torch.isfinite(r_in).all()


def test_attention_value_rule_sends_everything_through_values_and_half_to_the_attention_map() -> None:
    g = torch.Generator().manual_seed(3)
    scores = torch.randn(2, 3, 4, 4, generator=g, dtype=F64)
    attention = torch.softmax(scores, -1).requires_grad_(True)
    value = torch.randn(2, 3, 4, 5, generator=g, dtype=F64, requires_grad=True)
    out = AttentionValueRule.apply(attention, value, None, None)
    r_out = torch.randn(2, 3, 4, 5, generator=g, dtype=F64)
    grad_a, grad_v = torch.autograd.grad(out, [attention, value], grad_outputs=r_out / out.detach())
    r_v, r_a = (value * grad_v).detach().numpy(), (attention * grad_a).detach().numpy()
    an, vn, rn, on = attention.detach().numpy(), value.detach().numpy(), r_out.numpy(), out.detach().numpy()
    # R(V)_jd = sum_i A_ij V_jd R_id / O_id ; R(A)_ij = 1/2 sum_d A_ij V_jd R_id / O_id
    np.testing.assert_allclose(r_v, np.einsum("bhij,bhjd,bhid->bhjd", an, vn, rn / on), rtol=1e-10)
    np.testing.assert_allclose(r_a, 0.5 * np.einsum("bhij,bhjd,bhid->bhij", an, vn, rn / on), rtol=1e-10)
    # the value path alone is exactly conservative, per row and head
    np.testing.assert_allclose(r_v.sum((2, 3)), rn.sum((2, 3)), rtol=1e-10)


def test_head_gate_drops_masked_heads_and_renormalises_each_group_as_in_section_4_3() -> None:
    gate = HeadGate(torch.tensor([0, 1, -1, 0, 1]))
    before = torch.tensor([[0.3, 0.2, 0.4, -0.1, 0.5], [0.1, -0.4, 0.2, 0.3, 0.05]], dtype=F64)
    factors = gate.scale(before)
    total = before.sum(1)
    s_synt = before[:, [0, 3]].sum(1)
    s_pos = before[:, [1, 4]].sum(1)
    den = s_synt.abs() + s_pos.abs()
    f_synt = s_synt.abs() / den * total / s_synt
    f_pos = s_pos.abs() / den * total / s_pos
    expected = torch.stack([f_synt, f_pos, torch.zeros(2, dtype=F64), f_synt, f_pos], dim=1)
    np.testing.assert_allclose(factors.numpy(), expected.numpy(), rtol=1e-14)
    after = before * factors
    # row 0: both group sums positive, so the kept heads carry exactly the total of all heads
    np.testing.assert_allclose(after[0].sum().item(), total[0].item(), rtol=1e-14)
    assert after[0, 2] == 0
    # a layer keeping every head is untouched; a layer keeping none passes nothing
    assert torch.equal(HeadGate(torch.tensor([0, 1, 1])).scale(before[:, :3]), torch.ones(2, 3, dtype=F64))
    assert torch.equal(HeadGate(torch.tensor([-1, -1, -1])).scale(before[:, :3]), torch.zeros(2, 3, dtype=F64))


def test_positive_rule_is_equation_4_and_conserves_even_with_a_bias() -> None:
    g = torch.Generator().manual_seed(4)
    x = torch.randn(5, 7, generator=g, dtype=F64)
    weight = torch.randn(4, 7, generator=g, dtype=F64)
    bias = torch.randn(4, generator=g, dtype=F64)
    r_out = torch.randn(5, 4, generator=g, dtype=F64)
    r_in, _ = _relevance_through(x, lambda t: PositiveRule.apply(t, weight, t @ weight.T + bias, 0.0), r_out)
    # Eq. 4: R_j = sum_i [x_j W_ij]^+ / sum_j' [x_j' W_ij']^+ R_i
    contributions = np.clip(x.numpy()[:, None, :] * weight.numpy()[None], 0, None)  # (batch, out, in)
    expected = np.einsum("bij,bi->bj", contributions / contributions.sum(2, keepdims=True), r_out.numpy())
    np.testing.assert_allclose(r_in.numpy(), expected, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(r_in.sum(1).numpy(), r_out.sum(1).numpy(), rtol=1e-12)
