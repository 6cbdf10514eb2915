"""SHAP-Gradient against a float64 autograd loop by hand and against Captum's GradientShap."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from captum._utils import common as captum_common
from captum.attr import GradientShap
from captum.attr._core import gradient_shap as captum_gradient_shap

from xattr.methods import MethodContext, attribute_corpus, method_requirements
from xattr.methods.base import get_method
from xattr.methods.shap_grad import CONSTANT, NEIGHBOUR_REFERENCES, ShapGrad, ShapGradParams, shap_grad_draws
from xattr.models.encoding import EncodedText, encode_texts
from xattr.models.loading import load_model
from xattr.neighbours.selection import NeighbourRequest

TEXTS = [
    "the movie was great",
    "bad acting and a boring plot , not fun",
    "new laptop intel core i7 16gb ram",
    "awful",
    "cheap deal",
]
#: Corpus position -> neighbour positions, nearest first; text 3 has none (zero-reference fallback).
NEIGHBOURS = {0: [1, 4], 1: [0, 2, 4], 2: [1], 4: [3, 0, 1]}
RTOL, ATOL = 1e-10, 1e-13


@pytest.fixture(scope="module")
def loaded(tiny_classifier_dir: Path):
    return load_model(tiny_classifier_dir, dtype=torch.float64, device="cpu")


@pytest.fixture(scope="module")
def encoded(loaded) -> list[EncodedText]:
    return encode_texts(loaded.tokenizer, TEXTS, max_length=64)


def _embeddings(loaded, enc: EncodedText) -> torch.Tensor:
    """``(seq, hidden)`` word embeddings of one text."""
    return loaded.model.get_input_embeddings()(torch.tensor(enc.input_ids)).detach()


def _hand_reference(loaded, enc: EncodedText, reference: EncodedText | None) -> torch.Tensor:
    """``(seq, hidden)``: zeros, or the reference text's content pieces cut/padded with [PAD], on content only."""
    out = _embeddings(loaded, enc).clone()
    content = [i for i, special in enumerate(enc.special) if not special]
    if reference is None:
        out[content] = 0.0
        return out
    ids = [t for t, special in zip(reference.input_ids, reference.special, strict=True) if not special]
    ids = (ids + [loaded.tokenizer.pad_token_id] * len(content))[: len(content)]
    out[content] = loaded.model.get_input_embeddings()(torch.tensor(ids)).detach()
    return out


def _forward(loaded, enc: EncodedText):
    types = torch.tensor([enc.token_type_ids])

    def forward(e: torch.Tensor) -> torch.Tensor:
        n = e.shape[0]
        mask = torch.ones((n, e.shape[1]), dtype=torch.long)
        return loaded.model(inputs_embeds=e, attention_mask=mask, token_type_ids=types.expand(n, -1)).logits

    return forward


def _by_hand(
    loaded, enc: EncodedText, target: int, references: list[EncodedText], *, samples: int, seed: int, multiply: bool
) -> torch.Tensor:
    """``(seq, hidden)`` S_ShapGrad by a float64 autograd loop over the same draws."""
    forward = _forward(loaded, enc)
    h0 = _embeddings(loaded, enc)
    refs = [_hand_reference(loaded, enc, r) for r in references] or [_hand_reference(loaded, enc, None)]
    alphas, choices = shap_grad_draws(seed, enc.input_ids, samples, len(references))
    total = torch.zeros_like(h0)
    for alpha, choice in zip(alphas.tolist(), choices.tolist(), strict=True):
        ref = refs[0 if choice == CONSTANT else choice]
        x = (alpha * h0 + (1.0 - alpha) * ref).requires_grad_(True)
        (grad,) = torch.autograd.grad(forward(x.unsqueeze(0))[0, target], x)
        total += grad * (h0 - ref) if multiply else grad
    return total / samples


def _reduce(values: torch.Tensor, reduction: str) -> np.ndarray:
    return (values.pow(2).sum(-1) if reduction == "sum_of_squares" else values.sum(-1)).numpy()


def _run(loaded, encoded, targets, params, *, batch_size: int = 32):
    """Attribute the whole corpus (texts with no target are skipped) with NEIGHBOURS in the context.

    Returns the run's ``fallbacks`` (0 when the method reports none) and the results.
    """
    method = get_method("shap_grad", params)
    context = MethodContext(corpus=encoded, neighbours=NEIGHBOURS)
    results = attribute_corpus(method, loaded, encoded, targets, context=context, batch_size=batch_size)
    return method.diagnostics(context).get("fallbacks", 0.0), results


def _only(position: int, target: int) -> list[list[int]]:
    """Targets explaining one text of the corpus only."""
    return [[target] if i == position else [] for i in range(len(TEXTS))]


@pytest.mark.parametrize("position", [0, 3])
@pytest.mark.parametrize("multiply", [False, True])
@pytest.mark.parametrize("reduction", ["sum_of_squares", "sum"])
def test_zero_reference_equals_hand_autograd(loaded, encoded, position: int, multiply: bool, reduction: str) -> None:
    params = {"samples": 6, "seed": 3, "multiply_by_inputs": multiply, "reduction": reduction}
    _, (result,) = _run(loaded, encoded, _only(position, 1), params)
    expected = _reduce(_by_hand(loaded, encoded[position], 1, [], samples=6, seed=3, multiply=multiply), reduction)
    np.testing.assert_allclose(result.scores, expected, rtol=RTOL, atol=ATOL)
    assert np.abs(result.scores).max() > 0


@pytest.mark.parametrize("position", [0, 1, 2, 4])
def test_neighbour_references_equal_hand_autograd(loaded, encoded, position: int) -> None:
    params = {"samples": 7, "references": "neighbours", "seed": 11}
    fallbacks, (result,) = _run(loaded, encoded, _only(position, 0), params)
    references = [encoded[j] for j in NEIGHBOURS[position]]
    by_hand = _by_hand(loaded, encoded[position], 0, references, samples=7, seed=11, multiply=False)
    expected = _reduce(by_hand, "sum_of_squares")
    np.testing.assert_allclose(result.scores, expected, rtol=RTOL, atol=ATOL)
    assert fallbacks == 0


def _patch_captum_draws(monkeypatch, alphas: torch.Tensor, choices: torch.Tensor, n_baselines: int) -> None:
    """Make Captum's draws (``np.random.uniform`` and ``np.random.choice``) return ours."""

    def uniform(low: float, high: float, size: int) -> np.ndarray:
        assert (low, high, size) == (0.0, 1.0, len(alphas))
        return alphas.numpy().copy()

    def choice(n: int, size: int) -> np.ndarray:
        assert (n, size) == (n_baselines, len(choices))
        return np.where(choices.numpy() == CONSTANT, 0, choices.numpy())

    monkeypatch.setattr(captum_gradient_shap, "np", SimpleNamespace(random=SimpleNamespace(uniform=uniform)))
    monkeypatch.setattr(captum_common, "np", SimpleNamespace(random=SimpleNamespace(choice=choice)))


@pytest.mark.parametrize("multiply", [True, False])
def test_single_zero_reference_equals_captum_gradient_shap(monkeypatch, loaded, encoded, multiply: bool) -> None:
    enc = encoded[1]
    alphas, choices = shap_grad_draws(5, enc.input_ids, 8, 0)
    baseline = _hand_reference(loaded, enc, None).unsqueeze(0)  # (1, seq, hidden)
    _patch_captum_draws(monkeypatch, alphas, choices, 1)
    oracle = GradientShap(_forward(loaded, enc), multiply_by_inputs=multiply).attribute(
        _embeddings(loaded, enc).unsqueeze(0), baselines=baseline, n_samples=8, stdevs=0.0, target=1
    )[0]
    monkeypatch.undo()
    params = {"samples": 8, "seed": 5, "multiply_by_inputs": multiply, "reduction": "sum"}
    _, (result,) = _run(loaded, encoded, _only(1, 1), params)
    np.testing.assert_allclose(result.scores, oracle.sum(-1).detach().numpy(), rtol=RTOL, atol=ATOL)


def test_neighbour_references_equal_captum_gradient_shap_with_our_draws(monkeypatch, loaded, encoded) -> None:
    enc = encoded[1]
    references = [encoded[j] for j in NEIGHBOURS[1]]
    alphas, choices = shap_grad_draws(2, enc.input_ids, 9, len(references))
    baselines = torch.stack([_hand_reference(loaded, enc, r) for r in references])  # (3, seq, hidden)
    _patch_captum_draws(monkeypatch, alphas, choices, len(references))
    oracle = GradientShap(_forward(loaded, enc)).attribute(
        _embeddings(loaded, enc).unsqueeze(0), baselines=baselines, n_samples=9, stdevs=0.0, target=0
    )[0]
    monkeypatch.undo()
    params = {"samples": 9, "seed": 2, "references": "neighbours", "multiply_by_inputs": True}
    _, (result,) = _run(loaded, encoded, _only(1, 0), params)
    np.testing.assert_allclose(result.scores, oracle.pow(2).sum(-1).detach().numpy(), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("references", ["zero", "neighbours"])
def test_batched_equals_one_by_one(loaded, encoded, references: str) -> None:
    targets = [[0], [1, 0], [1], [0], [1]]
    params = {"samples": 4, "references": references, "multiply_by_inputs": True}
    _, single = _run(loaded, encoded, targets, dict(params, rows_per_pass=1), batch_size=1)
    for batch_size, rows_per_pass in [(2, 5), (32, 7), (32, 256)]:
        batched_params = dict(params, rows_per_pass=rows_per_pass)
        fallbacks, batched = _run(loaded, encoded, targets, batched_params, batch_size=batch_size)
        assert [(r.position, r.target) for r in batched] == [(0, 0), (1, 1), (1, 0), (2, 1), (3, 0), (4, 1)]
        for b, s in zip(batched, single, strict=True):
            assert b.scores.shape == (len(encoded[b.position]),)
            np.testing.assert_allclose(b.scores, s.scores, rtol=RTOL, atol=ATOL)
        assert fallbacks == (1 if references == "neighbours" else 0)


def test_same_seed_reproduces_and_other_seed_differs(loaded, encoded) -> None:
    targets = [[0], [1], [0], [1], [0]]
    runs = [_run(loaded, encoded, targets, {"samples": 3, "references": "neighbours", "seed": s})[1] for s in (0, 0, 1)]
    for a, b, c in zip(*runs, strict=True):
        np.testing.assert_array_equal(a.scores, b.scores)
        assert not np.allclose(a.scores, c.scores, rtol=1e-6, atol=0)


def test_row_without_neighbours_falls_back_to_zero_and_is_counted(loaded, encoded) -> None:
    fallbacks, (ref_result,) = _run(loaded, encoded, _only(3, 1), {"samples": 5, "references": "neighbours"})
    assert fallbacks == 1
    _, (zero_result,) = _run(loaded, encoded, _only(3, 1), {"samples": 5})
    np.testing.assert_array_equal(ref_result.scores, zero_result.scores)
    fresh = MethodContext(corpus=encoded, neighbours=NEIGHBOURS)  # counters belong to one run's context
    assert get_method("shap_grad", {"references": "neighbours"}).diagnostics(fresh) == {"fallbacks": 0.0}


def test_draws_are_stratified_and_alphas_independent_of_references() -> None:
    ids = [2, 10, 11, 3]
    alphas, choices = shap_grad_draws(0, ids, 25, 0)
    assert choices.tolist() == [CONSTANT] * 25
    assert ((alphas >= 0) & (alphas < 1)).all()
    for m in (1, 3, 10, 40):
        a, c = shap_grad_draws(0, ids, 25, m)
        torch.testing.assert_close(a, alphas, rtol=0, atol=0)
        counts = torch.bincount(c, minlength=m)
        assert counts.sum() == 25 and counts.max() - counts.min() <= 1
    assert not torch.equal(shap_grad_draws(1, ids, 25, 3)[0], alphas)
    assert not torch.equal(shap_grad_draws(0, [2, 10, 3], 25, 3)[0], alphas)


def test_parameters_and_neighbour_needs() -> None:
    assert ShapGrad.requirements(ShapGradParams(references="neighbours")).neighbours == NEIGHBOUR_REFERENCES
    assert method_requirements("shap_grad").neighbours is None
    assert method_requirements("shap_grad", {"references": "neighbours"}).neighbours == NeighbourRequest(10, None)
    params = get_method("shap_grad").params
    assert (params.samples, params.references, params.multiply_by_inputs, params.seed) == (25, "zero", False, 0)
    assert (params.rows_per_pass, params.reduction) == (256, "sum_of_squares")
    for bad in ({"samples": 0}, {"references": "pad"}, {"rows_per_pass": 0}, {"steps": 3}):
        with pytest.raises(ValueError, match="invalid parameters for method 'shap_grad'"):
            get_method("shap_grad", bad)
