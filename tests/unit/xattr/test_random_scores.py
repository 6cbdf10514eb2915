"""The per-word random baseline: one uniform draw per word, split evenly over its word pieces."""

from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch

import xattr.methods.random_scores  # noqa: F401  (registers the method)
from xattr.methods import MethodContext, attribute_corpus, get_method
from xattr.methods.base import row_generator
from xattr.methods.random_scores import random_word_scores
from xattr.models.encoding import collate, encode_texts
from xattr.models.loading import load_model

TEXTS = [
    "the movie was great",
    "laptops with 16gb ram , boringly fast",
    "new laptop intel core i7 16gb ram",
    "fastingly awful",
]
# Words by word-piece count in the tiny vocabulary (e.g. "fastingly" -> fast ##ing ##ly).
ONE_PIECE = ["the", "movie", "good", "bad", "laptop", "ram", "fast", "plot", "acting", "fun"]
TWO_PIECES = ["laptops", "16gb", "boringly", "fastest", "movies", "512gb", "plots", "goodly"]
THREE_PIECES = ["fastingly", "boringlyest", "laptopsing", "16gbs", "movieser", "plotsly"]


@pytest.fixture(scope="module")
def loaded(tiny_classifier_dir: Path):
    return load_model(tiny_classifier_dir, dtype=torch.float64, device="cpu")


def _run(loaded, texts: list[str], seed: int = 0, batch_size: int = 32, targets=None):
    encoded = encode_texts(loaded.tokenizer, texts, max_length=64)
    method = get_method("random", {"seed": seed})
    targets = targets if targets is not None else [[0]] * len(texts)
    return encoded, attribute_corpus(method, loaded, encoded, targets, batch_size=batch_size)


def _word_sums(enc, scores: np.ndarray) -> dict[int, float]:
    sums: dict[int, float] = defaultdict(float)
    for w, s in zip(enc.word_index, scores, strict=True):
        if w >= 0:
            sums[w] += float(s)
    return dict(sums)


def test_each_word_sums_to_one_draw_and_specials_score_zero(loaded) -> None:
    encoded, results = _run(loaded, TEXTS, seed=5)
    assert [len(enc.input_ids) for enc in encoded] == [6, 12, 10, 6]
    for enc, r in zip(encoded, results, strict=True):
        n_words = max(enc.word_index) + 1
        draws = torch.rand(n_words, generator=row_generator(5, enc.input_ids), dtype=torch.float64).numpy()
        sums = _word_sums(enc, r.scores)
        assert sorted(sums) == list(range(n_words))
        np.testing.assert_allclose([sums[w] for w in range(n_words)], draws, rtol=1e-15, atol=0)
        assert np.all((draws >= 0) & (draws < 1))
        special = np.array(enc.special)
        np.testing.assert_array_equal(r.scores[special], 0.0)
        # Every piece of a word gets the same share: draw / number of pieces.
        for i, w in enumerate(enc.word_index):
            if w >= 0:
                assert r.scores[i] == draws[w] / enc.word_index.count(w)
    # "laptops" -> laptop ##s: two equal halves of one draw.
    second = results[1].scores
    assert encoded[1].word_index[1:3] == (0, 0) and second[1] == second[2]


def test_reproducible_and_independent_of_batch_target_and_seed_changes_it(loaded) -> None:
    targets = [[0], [1, 0], [1], [0]]
    _, first = _run(loaded, TEXTS, batch_size=1, targets=targets)
    _, again = _run(loaded, TEXTS, batch_size=3, targets=targets)
    _, other = _run(loaded, TEXTS, seed=1, targets=targets)
    for a, b, c in zip(first, again, other, strict=True):
        np.testing.assert_array_equal(a.scores, b.scores)
        content = a.scores != 0
        assert np.all(a.scores[content] != c.scores[content])
    np.testing.assert_array_equal(first[1].scores, first[2].scores)  # same text, other target
    # The same text alone in a fresh corpus gets the same scores.
    (enc,) = encode_texts(loaded.tokenizer, [TEXTS[2]], max_length=64)
    np.testing.assert_array_equal(random_word_scores(enc, 0), first[3].scores)


def test_mean_word_score_does_not_depend_on_piece_count(loaded) -> None:
    rng = random.Random(0)
    groups = {1: ONE_PIECE, 2: TWO_PIECES, 3: THREE_PIECES}
    texts = [" ".join(rng.choice(groups[rng.choice((1, 2, 3))]) for _ in range(8)) for _ in range(600)]
    encoded, results = _run(loaded, texts)
    by_pieces: dict[int, list[float]] = defaultdict(list)
    for enc, r in zip(encoded, results, strict=True):
        for w, total in _word_sums(enc, r.scores).items():
            by_pieces[enc.word_index.count(w)].append(total)
    assert sorted(by_pieces) == [1, 2, 3]
    for pieces, totals in by_pieces.items():
        assert len(totals) > 1400, pieces
        assert abs(np.mean(totals) - 0.5) < 0.03, pieces  # standard error about 0.008
        assert min(totals) >= 0 and max(totals) < 1


def test_needs_the_matching_corpus_in_its_context(loaded) -> None:
    encoded = encode_texts(loaded.tokenizer, TEXTS, max_length=64)
    batch = collate(encoded, [0, 1], 0)
    targets = torch.tensor([0, 0])
    method = get_method("random")
    with pytest.raises(ValueError, match="random needs the encoded corpus in its MethodContext"):
        method.attribute_batch(loaded, batch, targets, MethodContext())
    with pytest.raises(ValueError, match="batch row 0 does not match corpus text 0 of the context"):
        method.attribute_batch(loaded, batch, targets, MethodContext(corpus=list(reversed(encoded))))
    with pytest.raises(ValueError, match="batch row 1 is corpus position 1, outside the context's corpus"):
        method.attribute_batch(loaded, batch, targets, MethodContext(corpus=encoded[:1]))
    scores = method.attribute_batch(loaded, batch, targets, MethodContext(corpus=encoded))
    assert scores.shape == batch.input_ids.shape and scores.dtype == torch.float64
    np.testing.assert_array_equal(scores[0, len(encoded[0]) :].numpy(), 0.0)  # padding


def test_parameters() -> None:
    assert get_method("random").params.model_dump() == {"seed": 0}
    with pytest.raises(ValueError, match="invalid parameters for method 'random'"):
        get_method("random", {"samples": 3})
