"""The hooked LRP engine on tiny float64 BERT, DistilBERT and RoBERTa models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import erf
from transformers import GPT2Config, GPT2ForSequenceClassification

from xattr.lrp import (
    LrpUnsupportedModelError,
    attention_gradients,
    lrp_rules,
    propagate_relevance,
    relevance_rollout,
)

KINDS = ["bert", "distilbert", "roberta"]


def _hook_count(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.mark.parametrize("kind", KINDS)
def test_forward_inside_the_rules_is_the_ordinary_forward(kind, make_encoder, make_inputs) -> None:
    model = make_encoder(kind)
    inputs = make_inputs(kind, [6, 4, 5])
    with torch.no_grad():
        plain = model(**inputs, output_attentions=True)
    with torch.no_grad(), lrp_rules(model) as session:
        hooked = model(**inputs).logits
    np.testing.assert_allclose(hooked.numpy(), plain.logits.numpy(), rtol=1e-12, atol=1e-14)
    # the engine's recomputed attention probabilities are the model's own
    for ours, theirs in zip(session.attention, plain.attentions, strict=True):
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("kind", KINDS)
def test_relevance_is_conserved_layer_to_layer_without_biases(kind, make_encoder, make_inputs, without_biases) -> None:
    """Every rule is conservative once biases and LayerNorm shifts are zero (epsilon = 1e-9)."""
    model = without_biases(make_encoder(kind))
    inputs = make_inputs(kind, [7, 5])
    targets = torch.tensor([0, 2])
    relevance = propagate_relevance(model, inputs, targets, layer_outputs=True)
    sums = [relevance.input.sum((1, 2))] + [r.sum((1, 2)) for r in relevance.layers]
    for s in sums:  # R^(0) = 1 at the explained logit reaches every layer whole
        np.testing.assert_allclose(s.numpy(), np.ones(2), rtol=0, atol=1e-6)
    # padding carries no relevance
    assert relevance.input[1, 5:].abs().max() == 0


@pytest.mark.parametrize("kind", KINDS)
def test_positive_rule_conserves_with_linear_biases(kind, make_encoder, make_inputs) -> None:
    """Eq. 4 gives biases no share: only the LayerNorm shifts need zeroing for conservation."""
    model = make_encoder(kind)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.bias.zero_()
    inputs = make_inputs(kind, [7, 5])
    relevance = propagate_relevance(model, inputs, torch.tensor([0, 2]), linear_rule="positive", layer_outputs=True)
    for s in [relevance.input.sum((1, 2))] + [r.sum((1, 2)) for r in relevance.layers]:
        np.testing.assert_allclose(s.numpy(), np.ones(2), rtol=0, atol=1e-6)
    epsilon = propagate_relevance(model, inputs, torch.tensor([0, 2]))
    assert np.abs(epsilon.input.sum((1, 2)).numpy() - 1).max() > 1e-3  # the epsilon rule lets biases absorb


def test_biases_absorb_relevance_so_conservation_needs_them_zeroed(make_encoder, make_inputs) -> None:
    model = make_encoder("bert")
    relevance = propagate_relevance(model, make_inputs("bert", [7]), torch.tensor([1]), layer_outputs=True)
    assert abs(relevance.input.sum().item() - 1.0) > 1e-3


def test_hooks_are_removed_on_exit_and_after_an_exception(make_encoder, make_inputs) -> None:
    model = make_encoder("bert")
    before = _hook_count(model)
    with lrp_rules(model):
        assert _hook_count(model) > before
    assert _hook_count(model) == before
    with pytest.raises(RuntimeError, match="boom"), lrp_rules(model):
        raise RuntimeError("boom")
    assert _hook_count(model) == before
    propagate_relevance(model, make_inputs("bert", [5]), torch.tensor([0]))
    assert _hook_count(model) == before


def test_an_sdpa_model_runs_eager_inside_and_is_restored(make_encoder, make_inputs) -> None:
    model = make_encoder("bert", attn="sdpa")
    assert model.config._attn_implementation == "sdpa"
    eager = make_encoder("bert")
    inputs = make_inputs("bert", [6, 3])
    targets = torch.tensor([0, 1])
    ours = propagate_relevance(model, inputs, targets, attention_relevance=True)
    reference = propagate_relevance(eager, inputs, targets, attention_relevance=True)
    assert model.config._attn_implementation == "sdpa"
    np.testing.assert_allclose(ours.input.numpy(), reference.input.numpy(), rtol=1e-12, atol=1e-14)
    grads = attention_gradients(model, inputs, targets)
    assert model.config._attn_implementation == "sdpa"
    assert len(grads) == 2


def test_unsupported_architectures_are_named() -> None:
    config = GPT2Config(n_layer=1, n_head=2, n_embd=8, vocab_size=20, n_positions=16, num_labels=2)
    model = GPT2ForSequenceClassification(config).eval()
    with pytest.raises(LrpUnsupportedModelError, match="'gpt2'"), lrp_rules(model):
        pass


def test_eval_mode_is_required(make_encoder) -> None:
    model = make_encoder("bert").train()
    with pytest.raises(ValueError, match="eval mode"), lrp_rules(model):
        pass


@pytest.mark.parametrize("kind", KINDS)
def test_batched_relevance_equals_one_by_one_with_padding(kind, make_encoder, make_inputs) -> None:
    model = make_encoder(kind)
    lengths = [3, 8, 5]
    inputs = make_inputs(kind, lengths, seed=4)
    targets = torch.tensor([2, 0, 1])
    batched = propagate_relevance(model, inputs, targets, attention_relevance=True)
    grads = attention_gradients(model, inputs, targets)
    rollout = relevance_rollout(grads, batched.attention)
    for row, n in enumerate(lengths):
        single = {k: v[row : row + 1, :n] for k, v in inputs.items()}
        alone = propagate_relevance(model, single, targets[row : row + 1], attention_relevance=True)
        np.testing.assert_allclose(batched.input[row, :n].numpy(), alone.input[0].numpy(), rtol=1e-9, atol=1e-12)
        for a, b in zip(batched.attention, alone.attention, strict=True):
            np.testing.assert_allclose(a[row, :, :n, :n].numpy(), b[0].numpy(), rtol=1e-9, atol=1e-12)
        one_rollout = relevance_rollout(attention_gradients(model, single, targets[row : row + 1]), alone.attention)
        np.testing.assert_allclose(rollout[row, :n].numpy(), one_rollout[0].numpy(), rtol=1e-9, atol=1e-12)
        if n < rollout.shape[1]:  # padding gets no score
            assert rollout[row, n:].abs().max() == 0


# --- a one-layer BERT by hand: the LRP relevance written as explicit sums in numpy -------------


def _lin(layer: torch.nn.Linear) -> tuple[np.ndarray, np.ndarray]:
    return layer.weight.detach().numpy(), layer.bias.detach().numpy()


def _stab(z: np.ndarray, eps: float) -> np.ndarray:
    return z + eps * np.where(z >= 0, 1.0, -1.0)


def _linear_relevance(x: np.ndarray, w: np.ndarray, z: np.ndarray, r: np.ndarray, eps: float) -> np.ndarray:
    """Eq. 2 for ``z = x W^T + b``: ``R_j = sum_i x_j W_ij R_i / (z_i + eps)`` (rows of ``x`` independent)."""
    return np.einsum("...j,ij,...i->...j", x, w, r / _stab(z, eps))


def _layer_norm(x: np.ndarray, ln: torch.nn.LayerNorm) -> tuple[np.ndarray, np.ndarray]:
    s = np.sqrt(x.var(-1, keepdims=True) + ln.eps)
    return (x - x.mean(-1, keepdims=True)) / s * ln.weight.detach().numpy() + ln.bias.detach().numpy(), s


def _layer_norm_relevance(x: np.ndarray, y: np.ndarray, s: np.ndarray, ln: torch.nn.LayerNorm, r: np.ndarray):
    """``R_in_j = sum_i x_j M_ij R_i / y_i`` with ``M = diag(w / s) (I - 11^T / n)`` (scale held constant)."""
    n = x.shape[-1]
    out = np.empty_like(x)
    for t in range(x.shape[0]):
        m = np.diag(ln.weight.detach().numpy() / s[t, 0]) @ (np.eye(n) - np.ones((n, n)) / n)
        out[t] = x[t] * (m.T @ (r[t] / y[t]))
    return out


def test_one_layer_bert_matches_hand_written_relevance(make_encoder, make_inputs) -> None:
    eps = 1e-9
    model = make_encoder("bert", heads=2, layers=1, seed=3)
    inputs = make_inputs("bert", [5], seed=5)
    target = 1
    with torch.no_grad():
        x0 = model(**inputs, output_hidden_states=True).hidden_states[0][0].numpy()  # (seq, hidden)
    layer = model.bert.encoder.layer[0]
    sa = layer.attention.self
    heads, dh = sa.num_attention_heads, sa.attention_head_size
    seq = x0.shape[0]
    wq, bq = _lin(sa.query)
    wk, bk = _lin(sa.key)
    wv, bv = _lin(sa.value)
    wo, bo = _lin(layer.attention.output.dense)
    w1, b1 = _lin(layer.intermediate.dense)
    w2, b2 = _lin(layer.output.dense)
    wp, bp = _lin(model.bert.pooler.dense)
    wc, bc = _lin(model.classifier)
    # forward
    q, k, v = x0 @ wq.T + bq, x0 @ wk.T + bk, x0 @ wv.T + bv
    qh, kh, vh = (t.reshape(seq, heads, dh).transpose(1, 0, 2) for t in (q, k, v))
    scores = qh @ kh.transpose(0, 2, 1) / np.sqrt(dh)
    att = np.exp(scores - scores.max(-1, keepdims=True))
    att /= att.sum(-1, keepdims=True)  # (heads, seq, seq)
    oh = att @ vh
    o = oh.transpose(1, 0, 2).reshape(seq, heads * dh)
    a = o @ wo.T + bo
    u = a + x0
    h1, s1 = _layer_norm(u, layer.attention.output.LayerNorm)
    f = h1 @ w1.T + b1
    gl = 0.5 * f * (1 + erf(f / np.sqrt(2)))
    o2 = gl @ w2.T + b2
    u2 = o2 + h1
    h2, s2 = _layer_norm(u2, layer.output.LayerNorm)
    zp = h2[0] @ wp.T + bp
    p = np.tanh(zp)
    logits = p @ wc.T + bc
    # relevance, top down
    r_logits = np.zeros_like(logits)
    r_logits[target] = 1.0
    r_logits = r_logits * logits / _stab(logits, eps)  # the seed 1 / (z + eps)
    r_p = _linear_relevance(p, wc, logits, r_logits, eps)
    r_zp = r_p  # tanh: identity rule
    r_h2 = np.zeros_like(h2)
    r_h2[0] = _linear_relevance(h2[0], wp, zp, r_zp, eps)
    r_u2 = _layer_norm_relevance(u2, h2, s2, layer.output.LayerNorm, r_h2)
    r_o2, r_h1 = o2 / u2 * r_u2, h1 / u2 * r_u2  # residual: proportional split
    r_gl = _linear_relevance(gl, w2, o2, r_o2, eps)
    r_h1 = r_h1 + _linear_relevance(h1, w1, f, r_gl, eps)  # GELU: identity rule
    r_u = _layer_norm_relevance(u, h1, s1, layer.attention.output.LayerNorm, r_h1)
    r_a, r_x0 = a / u * r_u, x0 / u * r_u
    r_o = _linear_relevance(o, wo, a, r_a, eps)
    r_oh = r_o.reshape(seq, heads, dh).transpose(1, 0, 2)
    ratio = r_oh / oh
    r_vh = np.einsum("hij,hjd,hid->hjd", att, vh, ratio)  # attention constant: all through V
    r_att = 0.5 * np.einsum("hij,hjd,hid->hij", att, vh, ratio)  # uniform share of A in A V
    r_v = r_vh.transpose(1, 0, 2).reshape(seq, heads * dh)
    r_x0 = r_x0 + _linear_relevance(x0, wv, v, r_v, eps)

    relevance = propagate_relevance(model, inputs, torch.tensor([target]), epsilon=eps, attention_relevance=True)
    np.testing.assert_allclose(relevance.input[0].numpy(), r_x0, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(relevance.attention[0][0].numpy(), r_att, rtol=1e-8, atol=1e-12)
    assert np.abs(r_x0).max() > 1e-3 and np.abs(r_att).max() > 1e-4

    # rollout (Eq. 10-11) of one layer: the [CLS] row of I + mean_h (grad A * R(A))^+
    (grad_a,) = attention_gradients(model, inputs, torch.tensor([target]))
    expected = (np.eye(seq) + np.clip(grad_a[0].numpy() * r_att, 0, None).mean(0))[0]
    rollout = relevance_rollout([grad_a], relevance.attention)
    np.testing.assert_allclose(rollout[0].numpy(), expected, rtol=1e-8, atol=1e-12)
