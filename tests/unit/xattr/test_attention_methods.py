"""Attention-family methods against an independent float64 reference, one text at a time.

The reference re-implements the BERT forward pass from the model's weights (explicit softmax
attention, no padding, no batching, no transformers code), takes gradients of the explained logit
with respect to its own attention maps and hidden states, and evaluates each method's formula
with explicit loops in numpy. The library's batched, padded results must match it.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from xattr.methods import attribute_corpus, get_method
from xattr.methods.attention_maps import AttentionUnavailableError, attention_implementation, eager_attention
from xattr.models.encoding import encode_texts
from xattr.models.loading import load_model

TEXTS = [
    "the movie was great",
    "bad acting and a boring plot , not fun at all , really awful",
    "new laptop intel core i7 16gb ram",
    "awful",
    "love it",
]
METHODS = ["raw_attention", "rollout", "gae", "cam", "grad_cam", "attcat"]


def reference_pass(model, input_ids: list[int], token_types: list[int], head: str, target: int):
    """Explicit BERT forward in float64 for one unpadded text; returns (A, h, dA, dh) as numpy."""
    bert = model.bert
    cfg = model.config
    ids = torch.tensor(input_ids)
    n = len(input_ids)
    emb = bert.embeddings
    with torch.no_grad():
        x = (
            emb.word_embeddings.weight[ids]
            + emb.position_embeddings.weight[:n]
            + emb.token_type_embeddings.weight[torch.tensor(token_types)]
        )
    x = x.clone().requires_grad_(True)

    def ln(v, mod):
        mu = v.mean(-1, keepdim=True)
        var = ((v - mu) ** 2).mean(-1, keepdim=True)
        return (v - mu) / torch.sqrt(var + mod.eps) * mod.weight + mod.bias

    def lin(v, mod):
        return v @ mod.weight.T + mod.bias

    heads = cfg.num_attention_heads
    dh = cfg.hidden_size // heads
    h = ln(x, emb.LayerNorm)
    hidden, attentions = [h], []
    for layer in bert.encoder.layer:
        sa = layer.attention.self
        q = lin(h, sa.query).view(n, heads, dh).transpose(0, 1)  # (heads, n, dh)
        k = lin(h, sa.key).view(n, heads, dh).transpose(0, 1)
        v = lin(h, sa.value).view(n, heads, dh).transpose(0, 1)
        scores = q @ k.transpose(1, 2) / math.sqrt(dh)
        a = torch.exp(scores - scores.max(-1, keepdim=True).values)
        a = a / a.sum(-1, keepdim=True)  # (heads, n, n)
        attentions.append(a)
        ctx = (a @ v).transpose(0, 1).reshape(n, cfg.hidden_size)
        h1 = ln(lin(ctx, layer.attention.output.dense) + h, layer.attention.output.LayerNorm)
        inter = lin(h1, layer.intermediate.dense)
        inter = 0.5 * inter * (1 + torch.erf(inter / math.sqrt(2.0)))
        h = ln(lin(inter, layer.output.dense) + h1, layer.output.LayerNorm)
        hidden.append(h)
    if head == "qa":
        logit = lin(h, model.qa_outputs)[target[0], target[1]]
    else:
        pooled = torch.tanh(lin(h[0], bert.pooler.dense))
        logit = lin(pooled, model.classifier)[target]
    grads = torch.autograd.grad(logit, attentions + hidden)
    nl = len(attentions)
    to_np = [t.detach().numpy() for t in (*attentions, *hidden, *grads)]
    return to_np[:nl], to_np[nl : 2 * nl + 1], to_np[2 * nl + 1 : 3 * nl + 1], to_np[3 * nl + 1 :]


def reference_scores(model, method: str, enc, head: str, target) -> np.ndarray:
    """The method's formula on the reference pass, with explicit loops."""
    attn, hidden, d_attn, d_hidden = reference_pass(model, list(enc.input_ids), list(enc.token_type_ids), head, target)
    n = len(enc.input_ids)
    c = target[0] if head == "qa" else 0  # the explained token
    layers = len(attn)
    if method == "raw_attention":
        return np.array([attn[-1][:, c, j].mean() for j in range(n)])
    if method == "rollout":
        roll = np.eye(n)
        for a in attn:
            m = 0.5 * a.mean(0) + 0.5 * np.eye(n)
            m = m / m.sum(1, keepdims=True)
            roll = m @ roll
        return roll[c]
    if method == "gae":
        r = np.eye(n)
        for a, g in zip(attn, d_attn, strict=True):
            abar = np.maximum(g * a, 0).mean(0)
            r = r + abar @ r
        return r[c]
    if method == "cam":
        last = hidden[-1]
        if head == "qa":
            f, w = last, model.qa_outputs.weight[target[1]].detach().numpy()
        else:
            pooler = model.bert.pooler.dense
            f = np.tanh(last @ pooler.weight.detach().numpy().T + pooler.bias.detach().numpy())
            w = model.classifier.weight[target].detach().numpy()
        return np.array([float(f[t] @ w) for t in range(n)])
    if method == "grad_cam":
        w = d_hidden[-1].mean(0)
        return np.array([max(0.0, float(w @ hidden[-1][t])) for t in range(n)])
    if method == "attcat":
        out = np.zeros(n)
        for layer in range(layers):
            for i in range(n):
                cat = float((d_hidden[layer + 1][i] * hidden[layer + 1][i]).sum())
                out[i] += attn[layer][:, c, i].mean() * cat
        return out
    raise AssertionError(method)


@pytest.fixture(scope="module")
def classifier(amplified_classifier):
    return amplified_classifier


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("batch_size", [1, 5])
def test_batched_padded_equals_reference(classifier, method: str, batch_size: int) -> None:
    encoded = encode_texts(classifier.tokenizer, TEXTS, max_length=64)
    targets = [[1], [0], [1, 0], [0], [1]]
    results = attribute_corpus(get_method(method), classifier, encoded, targets, batch_size=batch_size)
    assert len(results) == 6
    largest = 0.0
    for r in results:
        expected = reference_scores(classifier.model, method, encoded[r.position], "cls", r.target)
        np.testing.assert_allclose(r.scores, expected, rtol=1e-9, atol=1e-12)
        largest = max(largest, float(np.abs(expected).max()))
    assert largest > 1e-6  # not a vacuous comparison


@pytest.mark.parametrize("layer", [0, 1, -2])
def test_raw_attention_layer_parameter(classifier, layer: int) -> None:
    encoded = encode_texts(classifier.tokenizer, TEXTS[:2], max_length=64)
    results = attribute_corpus(get_method("raw_attention", {"layer": layer}), classifier, encoded, [[0], [0]])
    for r in results:
        attn, *_ = reference_pass(
            classifier.model, list(encoded[r.position].input_ids), list(encoded[r.position].token_type_ids), "cls", 0
        )
        np.testing.assert_allclose(r.scores, attn[layer][:, 0, :].mean(0), rtol=1e-10)
    with pytest.raises(ValueError, match="layer 2 is out of range"):
        attribute_corpus(get_method("raw_attention", {"layer": 2}), classifier, encoded, [[0], [0]])


def test_rollout_rows_sum_to_one(classifier) -> None:
    encoded = encode_texts(classifier.tokenizer, TEXTS, max_length=64)
    for r in attribute_corpus(get_method("rollout"), classifier, encoded, [[0]] * len(TEXTS), batch_size=5):
        assert r.scores.sum() == pytest.approx(1.0, abs=1e-12)


def test_sdpa_model_is_switched_to_eager_and_restored(tiny_classifier_dir: Path, classifier) -> None:
    sdpa = load_model(tiny_classifier_dir, dtype=torch.float64, device="cpu")
    sdpa.model.set_attn_implementation("sdpa")
    sdpa.model.load_state_dict(classifier.model.state_dict())
    encoded = encode_texts(sdpa.tokenizer, TEXTS, max_length=64)
    for method in ("rollout", "gae"):
        got = attribute_corpus(get_method(method), sdpa, encoded, [[1]] * len(TEXTS), batch_size=5)
        want = attribute_corpus(get_method(method), classifier, encoded, [[1]] * len(TEXTS), batch_size=5)
        assert attention_implementation(sdpa.model) == "sdpa"
        for a, b in zip(got, want, strict=True):
            np.testing.assert_allclose(a.scores, b.scores, rtol=1e-9)


def test_restored_after_an_error(classifier) -> None:
    model = classifier.model
    model.set_attn_implementation("sdpa")
    try:
        with pytest.raises(RuntimeError, match="boom"), eager_attention(model):
            assert attention_implementation(model) == "eager"
            raise RuntimeError("boom")
        assert attention_implementation(model) == "sdpa"
    finally:
        model.set_attn_implementation("eager")


def test_model_that_cannot_switch_gets_a_clear_error() -> None:
    class Frozen(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.config = type("Config", (), {"_attn_implementation": "sdpa"})()

    with pytest.raises(AttentionUnavailableError, match="Frozen uses 'sdpa' attention"), eager_attention(Frozen()):
        pass
