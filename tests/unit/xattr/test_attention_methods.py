"""Attention-family methods against an independent float64 reference, one text at a time.

The reference re-implements the BERT forward pass from the model's weights (explicit softmax
attention, no padding, no batching, no transformers code), takes gradients of the explained logit
with respect to its own attention maps and hidden states, and evaluates each method's formula
with explicit loops in numpy. The library's batched, padded results must match it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from xattr.methods import attribute_corpus, get_method
from xattr.models.attention import AttentionUnavailableError, attention_implementation, eager_attention
from xattr.models.encoding import encode_texts
from xattr.models.loading import load_model

from .conftest import reference_pass, reference_scores

TEXTS = [
    "the movie was great",
    "bad acting and a boring plot , not fun at all , really awful",
    "new laptop intel core i7 16gb ram",
    "awful",
    "love it",
]
METHODS = ["raw_attention", "rollout", "gae", "cam", "grad_cam", "attcat"]


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
