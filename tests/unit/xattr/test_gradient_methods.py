"""SimpleGrad and Grad*Input against torch.autograd by hand and against Captum as an oracle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from captum.attr import InputXGradient, Saliency

from xattr.methods import attribute_corpus, get_method
from xattr.models.encoding import collate, encode_texts
from xattr.models.loading import load_model

TEXTS = [
    "the movie was great",
    "bad acting and a boring plot , not fun",
    "new laptop intel core i7 16gb ram",
    "awful",
]


@pytest.fixture(scope="module")
def loaded(tiny_classifier_dir: Path):
    return load_model(tiny_classifier_dir, dtype=torch.float64, device="cpu")


def _embeds_and_forward(loaded, text: str):
    (enc,) = encode_texts(loaded.tokenizer, [text], max_length=64)
    batch = collate([enc], [0], 0)
    emb = loaded.model.get_input_embeddings()(batch.input_ids).detach()

    def forward(e: torch.Tensor) -> torch.Tensor:
        return loaded.model(
            inputs_embeds=e, attention_mask=batch.attention_mask, token_type_ids=batch.token_type_ids
        ).logits

    return enc, emb, forward


def _one(method: str, loaded, text: str, target: int, **params) -> np.ndarray:
    (enc,) = encode_texts(loaded.tokenizer, [text], max_length=64)
    (result,) = attribute_corpus(get_method(method, params), loaded, [enc], [[target]])
    return result.scores


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("target", [0, 1])
def test_simple_grad_equals_hand_autograd_and_captum_saliency(loaded, text: str, target: int) -> None:
    _, emb, forward = _embeds_and_forward(loaded, text)
    x = emb.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(forward(x)[0, target], x)
    by_hand = grad.pow(2).sum(-1)[0].detach().numpy()
    oracle = Saliency(forward).attribute(emb.clone(), target=target, abs=False).pow(2).sum(-1)[0].detach().numpy()
    ours = _one("simple_grad", loaded, text, target)
    np.testing.assert_allclose(ours, by_hand, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(ours, oracle, rtol=1e-12, atol=1e-15)
    assert ours.max() > 0


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("reduction", ["sum_of_squares", "sum"])
def test_grad_input_equals_captum_input_x_gradient(loaded, text: str, reduction: str) -> None:
    _, emb, forward = _embeds_and_forward(loaded, text)
    oracle = InputXGradient(forward).attribute(emb.clone(), target=1)[0].detach()
    expected = (oracle.pow(2).sum(-1) if reduction == "sum_of_squares" else oracle.sum(-1)).numpy()
    ours = _one("grad_input", loaded, text, 1, reduction=reduction)
    np.testing.assert_allclose(ours, expected, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("method", ["simple_grad", "grad_input"])
@pytest.mark.parametrize("batch_size", [1, 3, 32])
def test_batched_equals_one_by_one(loaded, method: str, batch_size: int) -> None:
    encoded = encode_texts(loaded.tokenizer, TEXTS, max_length=64)
    targets = [[0], [1, 0], [1], [0]]
    batched = attribute_corpus(get_method(method), loaded, encoded, targets, batch_size=batch_size)
    assert [(r.position, r.target) for r in batched] == [(0, 0), (1, 1), (1, 0), (2, 1), (3, 0)]
    for r in batched:
        single = _one(method, loaded, TEXTS[r.position], r.target)
        assert r.scores.shape == (len(encoded[r.position]),)
        np.testing.assert_allclose(r.scores, single, rtol=1e-10, atol=1e-13)


def test_parameters_are_restored_after_attribution(loaded) -> None:
    flags = [p.requires_grad for p in loaded.model.parameters()]
    encoded = encode_texts(loaded.tokenizer, TEXTS[:1], max_length=64)
    attribute_corpus(get_method("simple_grad"), loaded, encoded, [[0]])
    assert [p.requires_grad for p in loaded.model.parameters()] == flags


def test_unknown_method_and_bad_parameters_are_named() -> None:
    with pytest.raises(
        ValueError, match="unknown attribution method 'nope'; valid methods: .*grad_input, .*simple_grad"
    ):
        get_method("nope")
    with pytest.raises(ValueError, match="invalid parameters for method 'simple_grad'"):
        get_method("simple_grad", {"reduction": "max"})
    with pytest.raises(ValueError, match="invalid parameters for method 'grad_input'"):
        get_method("grad_input", {"steps": 3})


def test_sentence_pairs_use_segment_ids_and_match_captum(loaded) -> None:
    (enc,) = encode_texts(loaded.tokenizer, ["the movie was great"], ["not fun"], max_length=64)
    batch = collate([enc], [0], 0)
    assert batch.token_type_ids.tolist() == [[0, 0, 0, 0, 0, 0, 1, 1, 1]]
    emb = loaded.model.get_input_embeddings()(batch.input_ids).detach()

    def forward(e: torch.Tensor) -> torch.Tensor:
        return loaded.model(
            inputs_embeds=e, attention_mask=batch.attention_mask, token_type_ids=batch.token_type_ids
        ).logits

    oracle = Saliency(forward).attribute(emb.clone(), target=0, abs=False).pow(2).sum(-1)[0].detach().numpy()
    (ours,) = attribute_corpus(get_method("simple_grad"), loaded, [enc], [[0]])
    np.testing.assert_allclose(ours.scores, oracle, rtol=1e-12, atol=1e-15)


def test_opt_in_bf16_autocast_runs_the_gradient_pass_in_bf16_and_is_off_by_default(tiny_classifier_dir: Path) -> None:
    """``autocast_dtype=bfloat16`` equals the same gradient taken by hand under torch.autocast; default off."""
    from dataclasses import replace

    from scipy.stats import spearmanr

    fp32 = load_model(tiny_classifier_dir, device="cpu")
    assert fp32.autocast_dtype is None
    bf16 = replace(fp32, autocast_dtype=torch.bfloat16)
    text = TEXTS[1]
    _, emb, forward = _embeds_and_forward(fp32, text)
    x = emb.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        (grad,) = torch.autograd.grad(forward(x)[0, 1], x)
    assert grad.dtype == torch.float32
    by_hand = grad.pow(2).sum(-1)[0].detach().numpy().astype(np.float64)
    ours = _one("simple_grad", bf16, text, 1)
    np.testing.assert_allclose(ours, by_hand, rtol=1e-6, atol=1e-12)
    full = _one("simple_grad", fp32, text, 1)
    assert not np.allclose(ours, full, rtol=1e-5, atol=0)  # bf16 really ran
    assert spearmanr(ours, full)[0] > 0.99
