"""LIME equals Captum's Lime run one text at a time with the same masks, kernel and surrogate."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from captum._utils.models.linear_model import SkLearnRidge
from captum.attr import Lime as CaptumLime

from tests.unit.xattr.perturbation_reference import content_forward
from xattr.methods import attribute_corpus, get_method
from xattr.methods.lime import lime_samples, lime_similarity
from xattr.models.encoding import encode_texts

TEXTS = ["the movie was great", "bad acting and a boring plot , not fun", "fastingly awful", "good"]


def _captum(loaded, enc, target: int, samples: int, seed: int, width: float, alpha: float) -> np.ndarray:
    forward, content_ids, content = content_forward(loaded, enc, target)
    z = lime_samples(seed, list(enc.input_ids), samples, len(content))

    def perturb(original, **kwargs):  # the same masks, one per call, as a generator
        for row in z:
            yield row.view(1, -1)

    def similarity(original, perturbed, interpretable, **kwargs):
        return float(lime_similarity(interpretable.view(1, -1), width)[0])

    lime = CaptumLime(forward, interpretable_model=SkLearnRidge(alpha=alpha), similarity_func=similarity,
                      perturb_func=perturb)  # fmt: skip
    with torch.no_grad():
        coefficients = lime.attribute(
            content_ids,
            baselines=float(loaded.tokenizer.mask_token_id),
            feature_mask=torch.arange(len(content)).view(1, -1),
            n_samples=samples,
            perturbations_per_eval=16,
        )
    scores = np.zeros(len(enc))
    scores[content] = coefficients[0].double().numpy()
    return scores


@pytest.mark.parametrize(("samples", "seed", "alpha"), [(40, 0, 1.0), (25, 7, 0.1)])
def test_equals_captum_one_text_at_a_time(amplified_classifier, samples: int, seed: int, alpha: float) -> None:
    loaded = amplified_classifier
    encoded = encode_texts(loaded.tokenizer, TEXTS, max_length=64)
    params = {"samples": samples, "seed": seed, "alpha": alpha, "rows_per_pass": 33}
    results = attribute_corpus(get_method("lime", params), loaded, encoded, [[1], [0], [1], [0]], batch_size=3)
    for r in results:
        enc = encoded[r.position]
        expected = _captum(loaded, enc, r.target, samples, seed, 25.0, alpha)
        np.testing.assert_allclose(r.scores, expected, rtol=1e-5, atol=1e-7)
        assert r.scores[0] == 0.0 and r.scores[-1] == 0.0
        assert np.abs(r.scores[1:-1]).max() > 0


def test_batched_equals_one_by_one_and_seed_matters(amplified_classifier) -> None:
    loaded = amplified_classifier
    encoded = encode_texts(loaded.tokenizer, TEXTS, max_length=64)
    method = get_method("lime", {"samples": 30})
    batched = attribute_corpus(method, loaded, encoded, [[0]] * 4, batch_size=4)
    single = attribute_corpus(method, loaded, encoded, [[0]] * 4, batch_size=1)
    for a, b in zip(batched, single, strict=True):
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5, atol=1e-7)
    other = attribute_corpus(get_method("lime", {"samples": 30, "seed": 1}), loaded, encoded, [[0]] * 4)
    assert not np.allclose(other[1].scores, batched[1].scores)


def test_lime_kernel_is_the_lime_packages_text_kernel() -> None:
    z = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [0, 0, 0, 0]])
    # cosine distance to all-ones: 0, 1 - 2 / (sqrt(2) * 2), 1; weight sqrt(exp(-(100 d)^2 / 25^2))
    d = np.array([0.0, 1 - 2 / (np.sqrt(2) * 2), 1.0]) * 100
    np.testing.assert_allclose(lime_similarity(z, 25.0).numpy(), np.sqrt(np.exp(-(d**2) / 625.0)))
