"""Integrated Gradients against a float64 hand loop of the LAFA formula and against Captum.

Captum's ``method="riemann_right"`` uses the same step points ``k/N`` and weights ``1/N`` as
LAFA's formula, but builds them in float32 (``torch.linspace(...).tolist()`` and
``torch.tensor(step_sizes).float()``). With ``N`` a power of two they are exact in float32, so
Captum is compared at ``rtol=1e-10`` with ``N = 8``; for other ``N`` the reference is the hand loop.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients as CaptumIntegratedGradients

import xattr.methods.integrated_gradients  # noqa: F401  (registers the method)
from xattr.methods import attribute_corpus, get_method
from xattr.methods.references import constant_reference, text_reference
from xattr.models.encoding import collate, encode_texts

TEXTS = [
    "the movie was great",
    "bad acting and a boring plot , not fun",
    "new laptop intel core i7 16gb ram",
    "awful",
]
REFERENCE_TEXT = "this film is not very good"


@pytest.fixture(scope="module")
def loaded(amplified_classifier):
    return amplified_classifier


def _setup(loaded, text: str, baseline: str):
    """The text's batch of one, its word embeddings, the reference and a forward on embeddings."""
    (enc,) = encode_texts(loaded.tokenizer, [text], max_length=64)
    batch = collate([enc], [0], 0)
    emb = loaded.model.get_input_embeddings()(batch.input_ids).detach()  # (1, seq, hidden)
    if baseline == "text":
        (ref_enc,) = encode_texts(loaded.tokenizer, [REFERENCE_TEXT], max_length=64)
        ref = text_reference(loaded, batch, emb, 0, ref_enc).unsqueeze(0).detach()
    else:
        ref = constant_reference(loaded, batch, emb, baseline).detach()

    def forward(e: torch.Tensor) -> torch.Tensor:
        n = e.shape[0]
        return loaded.model(
            inputs_embeds=e,
            attention_mask=batch.attention_mask.expand(n, -1),
            token_type_ids=batch.token_type_ids.expand(n, -1),
        ).logits

    return enc, emb, ref, forward


def _params(baseline: str, **params) -> dict:
    if baseline == "text":
        params["baseline_text"] = REFERENCE_TEXT
    return {"baseline": baseline, **params}


def _ours(loaded, text: str, target: int, **params) -> np.ndarray:
    (enc,) = encode_texts(loaded.tokenizer, [text], max_length=64)
    (result,) = attribute_corpus(get_method("integrated_gradients", params), loaded, [enc], [[target]])
    return result.scores


def _hand_ig(forward, emb: torch.Tensor, ref: torch.Tensor, target: int, steps: int) -> torch.Tensor:
    """LAFA Sec. 4 right Riemann sum in float64, ``(seq, hidden)``: the ``steps`` points
    ``H' + k/N (H0 - H')`` go through the model as one batch (rows are independent)."""
    alphas = torch.tensor([k / steps for k in range(1, steps + 1)], dtype=torch.float64).view(-1, 1, 1)
    x = (ref + alphas * (emb - ref)).requires_grad_(True)  # (steps, seq, hidden)
    (grad,) = torch.autograd.grad(forward(x)[:, target].sum(), x)
    return (emb[0] - ref[0]) * grad.sum(0) / steps


def _reduce(values: torch.Tensor, reduction: str) -> np.ndarray:
    out = values.pow(2).sum(-1) if reduction == "sum_of_squares" else values.sum(-1)
    return out.detach().numpy()


@pytest.mark.parametrize("baseline", ["zeros", "pad", "text"])
def test_equals_captum_riemann_right_and_hand_loop(loaded, baseline: str) -> None:
    text, target = TEXTS[1], 0
    enc, emb, ref, forward = _setup(loaded, text, baseline)
    oracle = CaptumIntegratedGradients(forward).attribute(
        emb.clone(), baselines=ref, target=target, n_steps=8, method="riemann_right"
    )[0]
    by_hand = _hand_ig(forward, emb, ref, target, 8)
    for reduction in ("sum_of_squares", "sum"):
        ours = _ours(loaded, text, target, **_params(baseline, steps=8, reduction=reduction))
        np.testing.assert_allclose(ours, _reduce(oracle, reduction), rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(ours, _reduce(by_hand, reduction), rtol=1e-10, atol=1e-14)
        special = np.array(enc.special)
        np.testing.assert_array_equal(ours[special], 0.0)  # H' keeps the specials' own embedding
        assert np.all(np.abs(ours[~special]) > 1e-8)


def test_steps_not_a_power_of_two_equal_the_hand_loop(loaded) -> None:
    _, emb, ref, forward = _setup(loaded, TEXTS[1], "pad")
    by_hand = _hand_ig(forward, emb, ref, 1, 7)
    ours = _ours(loaded, TEXTS[1], 1, steps=7, reduction="sum")
    np.testing.assert_allclose(ours, _reduce(by_hand, "sum"), rtol=1e-10, atol=1e-14)
    # Captum rounds 1/7 and k/7 to float32: equal only to about float32 precision.
    oracle = CaptumIntegratedGradients(forward).attribute(
        emb.clone(), baselines=ref, target=1, n_steps=7, method="riemann_right"
    )[0]
    np.testing.assert_allclose(ours, _reduce(oracle, "sum"), rtol=1e-5, atol=1e-9)


def test_one_step_is_difference_times_gradient_at_the_input(loaded) -> None:
    _, emb, ref, forward = _setup(loaded, TEXTS[0], "zeros")
    x = emb.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(forward(x)[0, 0], x)
    ours = _ours(loaded, TEXTS[0], 0, steps=1, baseline="zeros")
    np.testing.assert_allclose(ours, _reduce(((emb - ref) * grad)[0], "sum_of_squares"), rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("baseline", ["zeros", "pad", "text"])
def test_completeness_improves_with_steps(loaded, baseline: str) -> None:
    text, target = TEXTS[1], 1
    _, emb, ref, forward = _setup(loaded, text, baseline)
    with torch.no_grad():
        gap = float(forward(emb)[0, target] - forward(ref)[0, target])
    errors = {
        n: abs(_ours(loaded, text, target, **_params(baseline, steps=n, reduction="sum")).sum() - gap)
        for n in (10, 200)
    }
    assert abs(gap) > 1e-2
    assert errors[200] < errors[10] / 5  # the right Riemann sum's error falls like 1/N
    assert errors[200] < 1e-2 * abs(gap)


@pytest.mark.parametrize("baseline", ["zeros", "pad", "text"])
@pytest.mark.parametrize("batch_size", [1, 3, 32])
def test_batched_and_chunked_equal_one_by_one(loaded, baseline: str, batch_size: int) -> None:
    encoded = encode_texts(loaded.tokenizer, TEXTS, max_length=64)
    targets = [[0], [1, 0], [1], [0]]
    # rows_per_pass 6 with 4 steps: chunks end mid-text, so one pass mixes two texts' steps.
    method = get_method("integrated_gradients", _params(baseline, steps=4, rows_per_pass=6))
    batched = attribute_corpus(method, loaded, encoded, targets, batch_size=batch_size)
    assert [(r.position, r.target) for r in batched] == [(0, 0), (1, 1), (1, 0), (2, 1), (3, 0)]
    for r in batched:
        single = _ours(loaded, TEXTS[r.position], r.target, **_params(baseline, steps=4, rows_per_pass=256))
        assert r.scores.shape == (len(encoded[r.position]),)
        np.testing.assert_allclose(r.scores, single, rtol=1e-10, atol=1e-14)


def test_parameters_are_validated() -> None:
    defaults = get_method("integrated_gradients").params
    assert (defaults.steps, defaults.baseline, defaults.baseline_text, defaults.rows_per_pass, defaults.reduction) == (
        25,
        "pad",
        None,
        256,
        "sum_of_squares",
    )
    with pytest.raises(ValueError, match="baseline 'text' needs a non-empty baseline_text"):
        get_method("integrated_gradients", {"baseline": "text"})
    with pytest.raises(ValueError, match="baseline 'text' needs a non-empty baseline_text"):
        get_method("integrated_gradients", {"baseline": "text", "baseline_text": "  "})
    with pytest.raises(ValueError, match="baseline_text is only used with baseline 'text'"):
        get_method("integrated_gradients", {"baseline_text": "good"})
    for bad in ({"steps": 0}, {"rows_per_pass": 0}, {"baseline": "mask"}, {"reduction": "max"}):
        with pytest.raises(ValueError, match="invalid parameters for method 'integrated_gradients'"):
            get_method("integrated_gradients", bad)


def test_parameters_are_restored_after_attribution(loaded) -> None:
    flags = [p.requires_grad for p in loaded.model.parameters()]
    _ours(loaded, TEXTS[0], 0, steps=3)
    assert [p.requires_grad for p in loaded.model.parameters()] == flags
