"""Occlusion equals Captum's Occlusion run one text at a time; special tokens are never occluded."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from captum.attr import Occlusion as CaptumOcclusion

from tests.unit.xattr.perturbation_reference import content_forward
from xattr.methods import attribute_corpus, get_method
from xattr.models.encoding import encode_texts

TEXTS = ["the movie was great", "bad acting and a boring plot , not fun", "fastingly awful", "good"]


def _captum(loaded, enc, target: int, window: int, token: int) -> np.ndarray:
    forward, content_ids, content = content_forward(loaded, enc, target)
    width = min(window, content_ids.shape[1])
    with torch.no_grad():
        attributions = CaptumOcclusion(forward).attribute(
            content_ids, sliding_window_shapes=(width,), strides=1, baselines=float(token), perturbations_per_eval=7
        )
    scores = np.zeros(len(enc))
    scores[content] = attributions[0].numpy()
    return scores


@pytest.mark.parametrize(("window", "replacement"), [(1, "mask"), (3, "pad"), (5, "unk")])
def test_equals_captum_one_text_at_a_time(amplified_classifier, window: int, replacement: str) -> None:
    loaded = amplified_classifier
    encoded = encode_texts(loaded.tokenizer, TEXTS, max_length=64)
    method = get_method("occlusion", {"window": window, "replacement": replacement, "rows_per_pass": 5})
    targets = [[1], [0], [1], [0]]
    results = attribute_corpus(method, loaded, encoded, targets, batch_size=3)
    token = {"mask": loaded.tokenizer.mask_token_id, "pad": 0, "unk": loaded.tokenizer.unk_token_id}[replacement]
    for r in results:
        enc = encoded[r.position]
        expected = _captum(loaded, enc, r.target, window, token)
        # Captum divides by the window count in float32 (feature_ablation: ``attrib.float() / weight``).
        np.testing.assert_allclose(r.scores, expected, rtol=3e-7, atol=1e-9)
        assert r.scores[0] == 0.0 and r.scores[-1] == 0.0  # [CLS], [SEP] never occluded
        assert np.abs(r.scores[1:-1]).min() > 0


def test_window_one_is_the_drop_of_removing_each_token(amplified_classifier) -> None:
    loaded = amplified_classifier
    (enc,) = encode_texts(loaded.tokenizer, ["the movie was great"], max_length=64)
    (r,) = attribute_corpus(get_method("occlusion"), loaded, [enc], [[1]])
    ids = torch.tensor([enc.input_ids])
    with torch.no_grad():
        base = loaded.model(input_ids=ids).logits[0, 1]
        for i in range(1, len(enc) - 1):
            occluded = ids.clone()
            occluded[0, i] = loaded.tokenizer.mask_token_id
            assert r.scores[i] == pytest.approx(float(base - loaded.model(input_ids=occluded).logits[0, 1]), abs=1e-12)


def test_sentence_pairs_keep_every_special_token(amplified_classifier) -> None:
    loaded = amplified_classifier
    (enc,) = encode_texts(loaded.tokenizer, ["bad movie"], ["not good"], max_length=64)
    (r,) = attribute_corpus(get_method("occlusion", {"window": 2}), loaded, [enc], [[0]])
    np.testing.assert_allclose(r.scores, _captum(loaded, enc, 0, 2, loaded.tokenizer.mask_token_id), rtol=3e-7)
    assert [r.scores[i] for i in (0, 3, 6)] == [0.0, 0.0, 0.0]


def test_bad_parameters_are_named() -> None:
    with pytest.raises(ValueError, match=r"(?s)invalid parameters for method 'occlusion'.*window"):
        get_method("occlusion", {"window": 0})
    with pytest.raises(ValueError, match="replacement"):
        get_method("occlusion", {"replacement": "delete"})
