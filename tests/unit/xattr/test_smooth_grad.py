"""SmoothGrad against a float64 hand autograd loop using the same noise, and against Captum.

Captum's ``NoiseTunnel`` draws its own noise, so it cannot reproduce these scores; the hand loop
regenerates our noise with :func:`row_noise` instead. With ``noise_scale=0`` every sample is the
plain gradient, which is compared to Captum's ``Saliency``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from captum.attr import Saliency

import xattr.methods.smooth_grad  # noqa: F401  (registers the method)
from xattr.methods import attribute_corpus, get_method
from xattr.methods.references import content_mask, special_token_ids
from xattr.methods.smooth_grad import noise_sigma, row_noise
from xattr.models.encoding import collate, encode_texts

TEXTS = [
    "the movie was great",
    "bad acting and a boring plot , not fun",
    "new laptop intel core i7 16gb ram",
    "awful",
]


@pytest.fixture(scope="module")
def loaded(amplified_classifier):
    return amplified_classifier


def _setup(loaded, text: str):
    """Encoded text, its word embeddings ``(seq, hidden)``, content mask ``(seq,)`` and a forward."""
    (enc,) = encode_texts(loaded.tokenizer, [text], max_length=64)
    batch = collate([enc], [0], 0)
    emb = loaded.model.get_input_embeddings()(batch.input_ids).detach()[0]
    content = content_mask(batch, special_token_ids(loaded))[0]

    def forward(e: torch.Tensor) -> torch.Tensor:
        n = e.shape[0]
        return loaded.model(
            inputs_embeds=e,
            attention_mask=batch.attention_mask.expand(n, -1),
            token_type_ids=batch.token_type_ids.expand(n, -1),
        ).logits

    return enc, emb, content, forward


def _ours(loaded, text: str, target: int, **params) -> np.ndarray:
    (enc,) = encode_texts(loaded.tokenizer, [text], max_length=64)
    (result,) = attribute_corpus(get_method("smooth_grad", params), loaded, [enc], [[target]])
    return result.scores


def _hand_gradients(loaded, text: str, target: int, samples: int, noise_scale: float, seed: int) -> torch.Tensor:
    """``S(H0 + eps_k)`` for each sample, one autograd call per sample: ``(samples, seq, hidden)``."""
    enc, emb, content, forward = _setup(loaded, text)
    noise = row_noise(emb, content, enc.input_ids, samples=samples, noise_scale=noise_scale, seed=seed)
    grads = []
    for k in range(samples):
        x = (emb + noise[k]).unsqueeze(0).requires_grad_(True)
        (grad,) = torch.autograd.grad(forward(x)[0, target], x)
        grads.append(grad[0])
    return torch.stack(grads)


@pytest.mark.parametrize("text", TEXTS[1:3])
def test_equals_hand_loop_with_the_same_noise(loaded, text: str) -> None:
    grads = _hand_gradients(loaded, text, 1, samples=6, noise_scale=0.5, seed=3)  # (6, seq, hidden)
    mean = grads.mean(0)
    expected = {
        ("square_of_mean", "sum_of_squares"): mean.pow(2).sum(-1),  # LAFA's M_SmoothGrad
        ("square_of_mean", "sum"): mean.sum(-1),
        ("mean_of_squares", "sum_of_squares"): grads.pow(2).sum(-1).mean(0),
        ("mean_of_squares", "sum"): grads.sum(-1).mean(0),
    }
    for (aggregate, reduction), values in expected.items():
        ours = _ours(
            loaded,
            text,
            1,
            samples=6,
            noise_scale=0.5,
            seed=3,
            aggregate=aggregate,
            reduction=reduction,
            rows_per_pass=4,
        )
        np.testing.assert_allclose(ours, values.numpy(), rtol=1e-10, atol=1e-14)
    # The two aggregates are different methods (Jensen: mean of squares >= square of mean).
    square_of_mean = expected[("square_of_mean", "sum_of_squares")]
    mean_of_squares = expected[("mean_of_squares", "sum_of_squares")]
    assert torch.all(mean_of_squares >= square_of_mean)
    assert torch.all(mean_of_squares[1:-1] > 1.01 * square_of_mean[1:-1])
    # With the signed sum they coincide (linear reduction).
    np.testing.assert_allclose(
        expected[("square_of_mean", "sum")].numpy(),
        expected[("mean_of_squares", "sum")].numpy(),
        rtol=1e-10,
        atol=1e-14,
    )


def test_noise_is_scaled_to_the_embedding_norm_on_content_tokens_only(loaded) -> None:
    enc, emb, content, _ = _setup(loaded, TEXTS[1])
    special = torch.tensor(enc.special)
    assert torch.equal(content, ~special)
    sigma = noise_sigma(emb, content, 0.1)
    expected_sigma = 0.1 * float(emb[~special].norm(dim=-1).mean()) / math.sqrt(emb.shape[-1])
    assert math.isclose(float(sigma), expected_sigma, rel_tol=1e-12)
    noise = row_noise(emb, content, enc.input_ids, samples=200, noise_scale=0.1, seed=0)  # (200, seq, hidden)
    assert noise.shape == (200, *emb.shape)
    assert torch.all(noise[:, special] == 0)
    assert torch.all(noise[:, ~special] != 0)
    # Standard normals times sigma: the empirical spread and norm match the definition.
    assert math.isclose(float(noise[:, ~special].std()), expected_sigma, rel_tol=0.02)
    ratio = float(noise[:, ~special].norm(dim=-1).mean() / emb[~special].norm(dim=-1).mean())
    assert 0.095 < ratio < 0.1  # E||z|| = sqrt(d) * (1 - 1/(4d) + ...) for z ~ N(0, I_d), d = 32
    # A text without content tokens gets no noise.
    assert float(noise_sigma(emb, torch.zeros_like(content), 0.1)) == 0.0
    with pytest.raises(ValueError, match="pass the text without padding"):
        row_noise(emb, content, enc.input_ids[:-1], samples=1, noise_scale=0.1, seed=0)


@pytest.mark.parametrize("batch_size", [1, 3, 32])
@pytest.mark.parametrize("aggregate", ["square_of_mean", "mean_of_squares"])
def test_batched_and_chunked_equal_one_by_one(loaded, batch_size: int, aggregate: str) -> None:
    encoded = encode_texts(loaded.tokenizer, TEXTS, max_length=64)
    targets = [[0], [1, 0], [1], [0]]
    params = {"samples": 4, "noise_scale": 0.5, "aggregate": aggregate}
    # rows_per_pass 3 with 4 samples: chunks end mid-text, so one pass mixes two texts' samples.
    batched = attribute_corpus(
        get_method("smooth_grad", {**params, "rows_per_pass": 3}), loaded, encoded, targets, batch_size=batch_size
    )
    assert [(r.position, r.target) for r in batched] == [(0, 0), (1, 1), (1, 0), (2, 1), (3, 0)]
    for r in batched:
        single = _ours(loaded, TEXTS[r.position], r.target, **params)
        assert r.scores.shape == (len(encoded[r.position]),)
        np.testing.assert_allclose(r.scores, single, rtol=1e-10, atol=1e-14)


def test_seed_reproduces_and_different_seeds_differ(loaded) -> None:
    text = TEXTS[2]
    first = _ours(loaded, text, 0, samples=3, noise_scale=0.5, seed=7)
    again = _ours(loaded, text, 0, samples=3, noise_scale=0.5, seed=7)
    other = _ours(loaded, text, 0, samples=3, noise_scale=0.5, seed=8)
    np.testing.assert_array_equal(first, again)
    assert np.all(np.abs(first - other)[1:-1] > 1e-12 * np.abs(first[1:-1]))
    assert not np.allclose(first, other, rtol=1e-3)


@pytest.mark.parametrize("aggregate", ["square_of_mean", "mean_of_squares"])
def test_zero_noise_equals_captum_saliency(loaded, aggregate: str) -> None:
    text, target = TEXTS[1], 1
    _, emb, _, forward = _setup(loaded, text)
    oracle = Saliency(forward).attribute(emb.unsqueeze(0).clone(), target=target, abs=False)[0]
    ours = _ours(loaded, text, target, samples=3, noise_scale=0.0, aggregate=aggregate)
    np.testing.assert_allclose(ours, oracle.pow(2).sum(-1).detach().numpy(), rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(ours, _ours_simple_grad(loaded, text, target), rtol=1e-10, atol=1e-15)


def _ours_simple_grad(loaded, text: str, target: int) -> np.ndarray:
    (enc,) = encode_texts(loaded.tokenizer, [text], max_length=64)
    (result,) = attribute_corpus(get_method("simple_grad"), loaded, [enc], [[target]])
    return result.scores


def test_parameters_are_validated(loaded) -> None:
    defaults = get_method("smooth_grad").params
    assert defaults.model_dump() == {
        "samples": 25,
        "noise_scale": 0.1,
        "aggregate": "square_of_mean",
        "reduction": "sum_of_squares",
        "seed": 0,
        "rows_per_pass": 256,
    }
    for bad in ({"samples": 0}, {"noise_scale": -0.1}, {"aggregate": "mean"}, {"rows_per_pass": 0}, {"sigma": 1}):
        with pytest.raises(ValueError, match="invalid parameters for method 'smooth_grad'"):
            get_method("smooth_grad", bad)
    flags = [p.requires_grad for p in loaded.model.parameters()]
    _ours(loaded, TEXTS[0], 0, samples=2)
    assert [p.requires_grad for p in loaded.model.parameters()] == flags
