"""LAFA's issue-18 variants by hand: centred embeddings, per-text L1 normalisation, kernel spread diagnostics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from xattr.methods import MethodContext, attribute_corpus, get_method
from xattr.models.encoding import encode_texts
from xattr.models.loading import load_model

TEXTS = ["the movie was great", "bad acting and a boring plot", "not fun at all", "awful"]
NEIGHBOURS = {0: [1, 2], 1: [0], 2: [3, 1], 3: []}


@pytest.fixture(scope="module")
def loaded(tiny_classifier_dir: Path):
    return load_model(tiny_classifier_dir, dtype=torch.float64, device="cpu")


def _lafa(loaded, params: dict):
    encoded = encode_texts(loaded.tokenizer, TEXTS, max_length=64)
    method = get_method("lafa", params)
    context = MethodContext(corpus=encoded, neighbours=NEIGHBOURS)
    results = attribute_corpus(method, loaded, encoded, [[1]] * len(TEXTS), context=context, batch_size=2)
    return method.diagnostics(context), encoded, {r.position: r.scores for r in results}


def _expected(loaded, encoded, lam: float, *, centre: bool, l1: bool):
    """Eq. 6-7 written out with loops; returns per text its scores and (kernel values, base, term) of its content."""
    base = {
        r.position: r.scores for r in attribute_corpus(get_method("simple_grad"), loaded, encoded, [[1]] * len(TEXTS))
    }
    table = loaded.model.get_input_embeddings().weight.detach().numpy()
    shift = table.mean(0) if centre else np.zeros(table.shape[1])

    def content(i):
        return [k for k, s in enumerate(encoded[i].special) if not s]

    def scores(i):
        m = base[i][content(i)].astype(np.float64)
        return m / np.abs(m).sum() if l1 else m

    out, parts = {}, {}
    for i, neighbours in NEIGHBOURS.items():
        own = scores(i)
        result = base[i].copy()
        result[content(i)] = own
        if neighbours:
            kernel_rows, term = [], []
            for t in content(i):
                h = table[encoded[i].input_ids[t]] - shift
                total, row = 0.0, []
                for j in neighbours:
                    m_j = scores(j)
                    for m, k in zip(m_j, content(j), strict=True):
                        g = table[encoded[j].input_ids[k]] - shift
                        value = h @ g / (np.linalg.norm(h) * np.linalg.norm(g))
                        row.append(value)
                        total += m * value / len(m_j)
                kernel_rows.append(row)
                term.append(lam * total / len(neighbours))
            result[content(i)] = own + np.array(term)
            parts[i] = (np.array(kernel_rows), own, np.array(term))
        out[i] = result
    return out, parts


@pytest.mark.parametrize(("centre", "l1"), [(True, False), (False, True), (True, True), (False, False)])
def test_centred_and_normalised_eq_7_by_hand(loaded, centre: bool, l1: bool) -> None:
    params = {"lam": 1.5, "centre_embeddings": centre, "normalise": "l1" if l1 else "none"}
    diagnostics, encoded, ours = _lafa(loaded, params)
    expected, parts = _expected(loaded, encoded, 1.5, centre=centre, l1=l1)
    for i in NEIGHBOURS:
        np.testing.assert_allclose(ours[i], expected[i], rtol=1e-9, atol=1e-15)
    # spread diagnostics over the three texts with neighbours
    assert diagnostics["fallbacks"] == 1.0
    assert diagnostics["kernel_mean"] == pytest.approx(np.mean([k.mean() for k, _, _ in parts.values()]), rel=1e-9)
    assert diagnostics["kernel_sd"] == pytest.approx(np.mean([k.std() for k, _, _ in parts.values()]), rel=1e-9)
    ratio = np.mean([t.std() / b.std() for _, b, t in parts.values()])
    assert diagnostics["term_to_base_sd"] == pytest.approx(ratio, rel=1e-9)


def test_the_paper_reading_is_unchanged_and_centring_matters(loaded) -> None:
    _, _, paper = _lafa(loaded, {"lam": 1.5})
    _, _, centred = _lafa(loaded, {"lam": 1.5, "centre_embeddings": True})
    assert not np.allclose(paper[0], centred[0])
    # normalisation alone rescales a text without neighbours and never changes its ranking
    _, _, normalised = _lafa(loaded, {"lam": 0.0, "normalise": "l1"})
    np.testing.assert_array_equal(np.argsort(normalised[3][1:-1]), np.argsort(paper[3][1:-1]))
    with pytest.raises(ValueError, match="normalise"):
        get_method("lafa", {"normalise": "max"})
