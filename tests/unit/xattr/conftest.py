"""An independent float64 reference for the attention-family methods (shared by their tests).

``reference_pass`` re-implements the BERT forward pass from a model's weights for one unpadded
text (explicit softmax attention, no transformers code) and takes gradients of the explained logit
with respect to its own attention maps and hidden states; ``reference_scores`` evaluates each
method's formula on it with explicit loops in numpy.
"""

from __future__ import annotations

import math

import numpy as np
import torch


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
