"""SHAP-Deep against a float64 autograd loop by hand, and against Captum's DeepLift(Shap) on a linear model."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from captum.attr import DeepLift, DeepLiftShap

from xattr.methods import MethodContext, attribute_corpus, method_requirements
from xattr.methods.base import get_method
from xattr.methods.shap_deep import ShapDeep, ShapDeepParams, shap_deep_references
from xattr.models.encoding import EncodedText, encode_texts
from xattr.models.loading import LoadedModel, load_model
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
#: Captum warns that DeepLIFT sets hooks on nonlinear activations; the linear toy has none.
pytestmark = pytest.mark.filterwarnings("ignore:Setting forward, backward hooks:UserWarning")


@pytest.fixture(scope="module")
def loaded(tiny_classifier_dir: Path):
    return load_model(tiny_classifier_dir, dtype=torch.float64, device="cpu")


class LinearToy(torch.nn.Module):
    """Logits linear in the word embeddings: ``F_c = sum_i mask_i <A[c, i], h_i> + b_c``.

    The weights depend on the position, so tokens get different gradients; there is no
    nonlinearity, so DeepLIFT's multipliers equal the gradient everywhere.
    """

    def __init__(self, vocab_size: int, hidden: int = 8, num_labels: int = 2, max_length: int = 64) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(7)
        self.config = SimpleNamespace(num_labels=num_labels, num_hidden_layers=0)
        self.embeddings = torch.nn.Embedding(vocab_size, hidden).double()
        with torch.no_grad():
            self.embeddings.weight.copy_(torch.randn(vocab_size, hidden, generator=generator, dtype=torch.float64))
        self.weight = torch.nn.Parameter(torch.randn(num_labels, max_length, hidden, generator=generator).double())
        self.bias = torch.nn.Parameter(torch.randn(num_labels, generator=generator).double())

    def get_input_embeddings(self) -> torch.nn.Embedding:
        return self.embeddings

    def forward(self, inputs_embeds, attention_mask, token_type_ids):  # noqa: ANN001
        seq = inputs_embeds.shape[1]
        masked = inputs_embeds * attention_mask.unsqueeze(-1).to(inputs_embeds.dtype)  # (batch, seq, hidden)
        logits = torch.einsum("bsh,csh->bc", masked, self.weight[:, :seq]) + self.bias
        return SimpleNamespace(logits=logits)


class EmbeddingsForward(torch.nn.Module):
    """Captum's view of a model: ``(n, seq, hidden)`` embeddings of one text -> logits."""

    def __init__(self, model: torch.nn.Module, enc: EncodedText) -> None:
        super().__init__()
        self.model = model
        self.types = torch.tensor([enc.token_type_ids])

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        n = e.shape[0]
        mask = torch.ones((n, e.shape[1]), dtype=torch.long)
        return self.model(inputs_embeds=e, attention_mask=mask, token_type_ids=self.types.expand(n, -1)).logits


def _embeddings(loaded, enc: EncodedText) -> torch.Tensor:
    """``(seq, hidden)`` word embeddings of one text."""
    return loaded.model.get_input_embeddings()(torch.tensor(enc.input_ids)).detach()


def _hand_reference(loaded, enc: EncodedText, reference: EncodedText | str) -> torch.Tensor:
    """``(seq, hidden)``: ``"zeros"``, ``"pad"``, or a reference text's content pieces cut/padded with [PAD].

    Only content positions change; special tokens keep their own embedding.
    """
    table = loaded.model.get_input_embeddings()
    pad = loaded.tokenizer.pad_token_id
    out = _embeddings(loaded, enc).clone()
    content = [i for i, special in enumerate(enc.special) if not special]
    if reference == "zeros":
        out[content] = 0.0
    elif reference == "pad":
        out[content] = table(torch.tensor([pad] * len(content))).detach()
    else:
        ids = [t for t, special in zip(reference.input_ids, reference.special, strict=True) if not special]
        out[content] = table(torch.tensor((ids + [pad] * len(content))[: len(content)])).detach()
    return out


def _by_hand(loaded, enc: EncodedText, target: int, references: list) -> torch.Tensor:
    """``(seq, hidden)`` S_ShapDeep = 1/N sum_k S(H_k) * (H0 - H_k) by a float64 autograd loop."""
    forward = EmbeddingsForward(loaded.model, enc)
    h0 = _embeddings(loaded, enc)
    total = torch.zeros_like(h0)
    for reference in references:
        ref = _hand_reference(loaded, enc, reference)
        x = ref.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(forward(x.unsqueeze(0))[0, target], x)
        total += grad * (h0 - ref)
    return total / len(references)


def _reduce(values: torch.Tensor, reduction: str) -> np.ndarray:
    return (values.pow(2).sum(-1) if reduction == "sum_of_squares" else values.sum(-1)).detach().numpy()


def _run(loaded, encoded, targets, params, *, batch_size: int = 32):
    """Attribute the whole corpus (texts with no target are skipped) with NEIGHBOURS in the context.

    Returns the run's ``fallbacks`` (0 when the method reports none) and the results.
    """
    method = get_method("shap_deep", params)
    context = MethodContext(corpus=encoded, neighbours=NEIGHBOURS)
    results = attribute_corpus(method, loaded, encoded, targets, context=context, batch_size=batch_size)
    return method.diagnostics(context).get("fallbacks", 0.0), results


def _only(position: int, target: int) -> list[list[int]]:
    """Targets explaining one text of the corpus only."""
    return [[target] if i == position else [] for i in range(len(TEXTS))]


@pytest.mark.parametrize("position", [0, 1, 2, 4])
@pytest.mark.parametrize("reduction", ["sum_of_squares", "sum"])
def test_neighbour_references_equal_hand_autograd(loaded, position: int, reduction: str) -> None:
    encoded = encode_texts(loaded.tokenizer, TEXTS, max_length=64)
    params = {"max_references": 2, "reduction": reduction}
    fallbacks, (result,) = _run(loaded, encoded, _only(position, 1), params)
    references = [encoded[j] for j in NEIGHBOURS[position][:2]]
    expected = _reduce(_by_hand(loaded, encoded[position], 1, references), reduction)
    np.testing.assert_allclose(result.scores, expected, rtol=RTOL, atol=ATOL)
    assert np.abs(result.scores).max() > 0
    assert fallbacks == 0


@pytest.mark.parametrize("kind", ["zero", "pad"])
@pytest.mark.parametrize("position", [1, 3])
def test_constant_references_equal_hand_autograd(loaded, kind: str, position: int) -> None:
    encoded = encode_texts(loaded.tokenizer, TEXTS, max_length=64)
    fallbacks, (result,) = _run(loaded, encoded, _only(position, 0), {"references": kind})
    expected = _reduce(_by_hand(loaded, encoded[position], 0, ["zeros" if kind == "zero" else "pad"]), "sum_of_squares")
    np.testing.assert_allclose(result.scores, expected, rtol=RTOL, atol=ATOL)
    special = np.array(encoded[position].special)
    np.testing.assert_array_equal(result.scores[special], 0.0)
    assert fallbacks == 0


@pytest.fixture
def toy(tiny_tokenizer) -> LoadedModel:
    model = LinearToy(len(tiny_tokenizer)).eval()
    return LoadedModel(model, tiny_tokenizer, "classification", "linear-toy", torch.device("cpu"), "identity", 64)


@pytest.mark.parametrize("position", [0, 1, 4])
def test_equals_captum_deeplift_shap_on_a_linear_model(toy: LoadedModel, position: int) -> None:
    encoded = encode_texts(toy.tokenizer, TEXTS, max_length=64)
    enc = encoded[position]
    references = [encoded[j] for j in NEIGHBOURS[position]]
    baselines = torch.stack([_hand_reference(toy, enc, r) for r in references])  # (M, seq, hidden)
    h0 = _embeddings(toy, enc).unsqueeze(0)  # (1, seq, hidden)
    oracle = DeepLiftShap(EmbeddingsForward(toy.model, enc)).attribute(h0, baselines=baselines, target=1)[0]
    _, (result,) = _run(toy, encoded, _only(position, 1), {"reduction": "sum"})
    np.testing.assert_allclose(result.scores, oracle.sum(-1).detach().numpy(), rtol=RTOL, atol=ATOL)
    # DeepLIFT is exact for a linear model: the signed scores sum to F(H0) - mean_k F(H_k).
    forward = EmbeddingsForward(toy.model, enc)
    gap = (forward(h0)[0, 1] - forward(baselines)[:, 1].mean()).item()
    assert result.scores.sum() == pytest.approx(gap, rel=1e-10)


@pytest.mark.parametrize("kind", ["zero", "pad"])
def test_constant_reference_equals_captum_deeplift_on_a_linear_model(toy: LoadedModel, kind: str) -> None:
    encoded = encode_texts(toy.tokenizer, TEXTS, max_length=64)
    enc = encoded[2]
    baseline = _hand_reference(toy, enc, "zeros" if kind == "zero" else "pad").unsqueeze(0)  # (1, seq, hidden)
    h0 = _embeddings(toy, enc).unsqueeze(0)
    oracle = DeepLift(EmbeddingsForward(toy.model, enc)).attribute(h0, baselines=baseline, target=0)[0]
    _, (result,) = _run(toy, encoded, _only(2, 0), {"references": kind})
    np.testing.assert_allclose(result.scores, oracle.pow(2).sum(-1).detach().numpy(), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("references", ["neighbours", "pad"])
def test_batched_equals_one_by_one(loaded, references: str) -> None:
    encoded = encode_texts(loaded.tokenizer, TEXTS, max_length=64)
    targets = [[0], [1, 0], [1], [0], [1]]
    params = {"references": references, "max_references": 2}
    _, single = _run(loaded, encoded, targets, dict(params, rows_per_pass=1), batch_size=1)
    for batch_size, rows_per_pass in [(2, 3), (32, 5), (32, 256)]:
        chunked = dict(params, rows_per_pass=rows_per_pass)
        fallbacks, batched = _run(loaded, encoded, targets, chunked, batch_size=batch_size)
        assert [(r.position, r.target) for r in batched] == [(0, 0), (1, 1), (1, 0), (2, 1), (3, 0), (4, 1)]
        for b, s in zip(batched, single, strict=True):
            assert b.scores.shape == (len(encoded[b.position]),)
            np.testing.assert_allclose(b.scores, s.scores, rtol=RTOL, atol=ATOL)
        assert fallbacks == (1 if references == "neighbours" else 0)


def test_row_without_neighbours_falls_back_to_zero_and_is_counted(loaded) -> None:
    encoded = encode_texts(loaded.tokenizer, TEXTS, max_length=64)
    fallbacks, (ref_result,) = _run(loaded, encoded, _only(3, 1), {})
    assert fallbacks == 1
    _, (zero_result,) = _run(loaded, encoded, _only(3, 1), {"references": "zero"})
    np.testing.assert_array_equal(ref_result.scores, zero_result.scores)
    fresh = MethodContext(corpus=encoded, neighbours=NEIGHBOURS)  # counters belong to one run's context
    assert get_method("shap_deep", {"references": "neighbours"}).diagnostics(fresh) == {"fallbacks": 0.0}


def test_references_are_the_nearest_first_and_capped(loaded) -> None:
    encoded = encode_texts(loaded.tokenizer, TEXTS, max_length=64)
    assert shap_deep_references(encoded[:3], 2) == encoded[:2]
    assert shap_deep_references(encoded[:1], 10) == encoded[:1]
    assert shap_deep_references([], 10) == []


def test_parameters_and_neighbour_needs() -> None:
    assert ShapDeep.requirements(ShapDeepParams()).neighbours is not None and ShapDeep.multiplies_by_inputs
    assert method_requirements("shap_deep").neighbours == NeighbourRequest(10, None)
    assert method_requirements("shap_deep", {"references": "zero"}).neighbours is None
    assert method_requirements("shap_deep", {"references": "pad"}).neighbours is None
    params = get_method("shap_deep").params
    assert (params.references, params.max_references, params.reduction, params.rows_per_pass) == (
        "neighbours",
        10,
        "sum_of_squares",
        256,
    )
    for bad in ({"max_references": 0}, {"references": "mask"}, {"rows_per_pass": 0}, {"samples": 3}):
        with pytest.raises(ValueError, match="invalid parameters for method 'shap_deep'"):
            get_method("shap_deep", bad)
