"""LAFA (Eq. 4-7): kernels, aggregation, neighbour selection, amortised base attributions."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import pytest
import torch

from xattr.methods import MethodContext, attribute_corpus, get_method, method_requirements
from xattr.methods.lafa_kernels import KernelParams, kernel_matrix
from xattr.models.encoding import encode_texts
from xattr.models.loading import load_model
from xattr.neighbours.index import build_index, nearest_neighbours
from xattr.neighbours.selection import NeighbourRequest, cutoff_pairs, distance_cutoff, select_neighbours

A = torch.tensor([[1.0, 0.0], [0.5, -2.0]], dtype=torch.float64)
B = torch.tensor([[1.0, 0.0], [0.0, 3.0], [-1.0, 1.0]], dtype=torch.float64)


def _hand(name: str, a: np.ndarray, b: np.ndarray) -> float:
    l2 = np.linalg.norm(a - b)
    return {
        "rbf": np.exp(-(l2**2) / 4.0),
        "cubic": (7.0 * a @ b + 0.0) ** 3,
        "cosine": a @ b / (np.linalg.norm(a) * np.linalg.norm(b)),
        "laplacian": np.exp(-np.abs(a - b).sum() / 4.0),
        "clipped_l2": 1.0 / np.clip(l2, 0.3, 3.0),
        "indicator": float(np.array_equal(a, b)),
    }[name]


@pytest.mark.parametrize("name", ["rbf", "cubic", "cosine", "laplacian", "clipped_l2", "indicator"])
def test_each_kernel_equals_its_formula(name: str) -> None:
    got = kernel_matrix(name, A, B, KernelParams()).numpy()
    expected = np.array([[_hand(name, a, b) for b in B.numpy()] for a in A.numpy()])
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_unknown_kernel_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="unknown kernel 'poly'; valid kernels: rbf, cubic, cosine, laplacian"):
        kernel_matrix("poly", A, B)
    with pytest.raises(ValueError, match="invalid parameters for method 'lafa'"):
        get_method("lafa", {"kernel": "poly"})
    with pytest.raises(ValueError, match="unknown attribution method 'nope'"):
        get_method("lafa", {"base": "nope"})


@pytest.fixture(scope="module")
def loaded(tiny_classifier_dir: Path):
    return load_model(tiny_classifier_dir, dtype=torch.float64, device="cpu")


TEXTS = ["the movie was great", "the movie was great", "bad acting and a boring plot", "not fun at all", "awful"]


def _run(loaded, params: dict, neighbours: dict[int, list[int]], targets=None, batch_size: int = 32):
    """LAFA over TEXTS with ``neighbours``; returns the run's diagnostics, the encoded texts and the results."""
    encoded = encode_texts(loaded.tokenizer, TEXTS, max_length=64)
    method = get_method("lafa", params)
    context = MethodContext(corpus=encoded, neighbours=neighbours)
    targets = targets or [[1]] * len(TEXTS)
    results = attribute_corpus(method, loaded, encoded, targets, context=context, batch_size=batch_size)
    return method.diagnostics(context), encoded, results


def _base(loaded, name: str = "simple_grad", params: dict | None = None):
    encoded = encode_texts(loaded.tokenizer, TEXTS, max_length=64)
    return attribute_corpus(get_method(name, params), loaded, encoded, [[1]] * len(TEXTS))


NEIGHBOURS = {0: [1, 2], 1: [0], 2: [3, 4, 0], 3: [2], 4: []}


@pytest.mark.parametrize("base", ["simple_grad", "grad_input"])
def test_lambda_zero_equals_the_base_method(loaded, base: str) -> None:
    _, _, lafa = _run(loaded, {"lam": 0.0, "base": base}, NEIGHBOURS)
    for ours, ref in zip(lafa, _base(loaded, base), strict=True):
        np.testing.assert_allclose(ours.scores, ref.scores, rtol=1e-12, atol=0)


def test_indicator_kernel_on_duplicated_texts_matches_hand_computation(loaded) -> None:
    # Text 0 and 1 are identical with distinct word pieces; 1 is 0's only neighbour, so for a
    # content token t: E(w_t) = m_t / T (T content tokens) and M_LAFA_t = m_t (1 + lam / T).
    _, encoded, lafa = _run(loaded, {"kernel": "indicator", "lam": 0.5}, {0: [1], 1: [], 2: [], 3: [], 4: []})
    base = _base(loaded)[0].scores
    special = np.array(encoded[0].special)
    content_count = int((~special).sum())
    expected = np.where(special, base, base * (1 + 0.5 / content_count))
    np.testing.assert_allclose(lafa[0].scores, expected, rtol=1e-12)


def test_eq_7_by_hand_with_cosine_kernel(loaded) -> None:
    _, encoded, lafa = _run(loaded, {"lam": 2.0}, NEIGHBOURS)
    base = {r.position: r.scores for r in _base(loaded)}
    table = loaded.model.get_input_embeddings().weight.detach().numpy()
    x0 = encoded[2]
    expected = base[2].copy()
    for t, (token, special) in enumerate(zip(x0.input_ids, x0.special, strict=True)):
        if special:
            continue
        h = table[token]
        total = 0.0
        for j in NEIGHBOURS[2]:
            nb = encoded[j]
            content = [k for k, s in enumerate(nb.special) if not s]
            total += sum(
                base[j][k] * (h @ table[nb.input_ids[k]]) / (np.linalg.norm(h) * np.linalg.norm(table[nb.input_ids[k]]))
                for k in content
            ) / len(content)
        expected[t] += 2.0 * total / len(NEIGHBOURS[2])
    np.testing.assert_allclose(lafa[2].scores, expected, rtol=1e-10)


def test_batched_equals_one_by_one_and_bases_are_computed_once(loaded) -> None:
    diagnostics, _, batched = _run(loaded, {"kernel": "rbf"}, NEIGHBOURS, batch_size=3)
    assert diagnostics["base_computations"] == len(TEXTS)  # every text once, though most are also neighbours
    assert diagnostics["fallbacks"] == 1  # text 4 has no neighbour
    _, _, single = _run(loaded, {"kernel": "rbf"}, NEIGHBOURS, batch_size=1)
    for a, b in zip(batched, single, strict=True):
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-10)
    np.testing.assert_allclose(batched[4].scores, _base(loaded)[4].scores, rtol=1e-12)


def test_lafa_needs_neighbours_in_its_context(loaded) -> None:
    encoded = encode_texts(loaded.tokenizer, TEXTS[:1], max_length=64)
    with pytest.raises(ValueError, match="lafa needs neighbours in its MethodContext"):
        attribute_corpus(get_method("lafa"), loaded, encoded, [[0]])


def test_requirements_come_from_the_parameters_and_the_base_method() -> None:
    params = {"max_neighbours": 4, "epsilon_quantile": 0.39, "neighbour_filter": "label", "layer": 2}
    requirements = method_requirements("lafa", params)
    assert requirements.neighbours == NeighbourRequest(4, 0.39, "label", 2)
    assert not requirements.head_masks and not requirements.ldav_vectors
    assert method_requirements("lafa", {"base": "ldav"}).ldav_vectors  # what the base method needs, too
    with pytest.raises(ValueError, match="invalid parameters for method 'lafa'"):
        method_requirements("lafa", {"kernel": "poly"})


def test_distance_cutoff_is_the_quantile_of_pairwise_distances() -> None:
    x = np.random.default_rng(0).normal(size=(30, 4)).astype(np.float32)
    i, j = np.triu_indices(30, k=1)
    expected = np.quantile(np.linalg.norm(x[i].astype(np.float64) - x[j], axis=1), 0.2)
    assert distance_cutoff(x, 0.2) == pytest.approx(expected, rel=1e-12)


def test_cutoff_from_the_sampled_rows_only_equals_the_whole_corpus_cutoff() -> None:
    x = np.random.default_rng(1).normal(size=(400, 5)).astype(np.float32)
    i, j = cutoff_pairs(400, sample_pairs=300, seed=3)
    sampled, inverse = np.unique(np.concatenate([i, j]), return_inverse=True)
    assert len(sampled) < 400
    part = distance_cutoff(x[sampled], 0.1, pairs=(inverse[:300], inverse[300:]))
    assert part == distance_cutoff(x, 0.1, sample_pairs=300, seed=3)


def test_selection_applies_cutoff_m_and_label_filter() -> None:
    # Two tight clusters far apart: the cut-off keeps neighbours inside a cluster only.
    x = np.array([[0, 0], [0.1, 0], [0.2, 0], [10, 10], [10.1, 10], [50, 50]], dtype=np.float32)
    index = build_index(x)
    sel = select_neighbours(index, x, NeighbourRequest(max_neighbours=10, epsilon_quantile=0.25))
    assert sel.max_neighbours == 5
    assert sel.neighbours[0] == [1, 2] and sel.neighbours[3] == [4] and sel.neighbours[5] == []
    assert sel.without_neighbours == 1
    labels = ["a", "b", "a", "c", "c", "c"]
    filtered = select_neighbours(index, x, NeighbourRequest(2, None, "label"), groups=labels)
    assert filtered.neighbours[0] == [2] and filtered.neighbours[3] == [4, 5]
    with pytest.raises(ValueError, match="needs one label per text"):
        select_neighbours(index, x, NeighbourRequest(2, None, "label"))
    assert isinstance(index, faiss.Index)


def test_selection_from_a_search_already_made_equals_searching() -> None:
    """build_index's table (wider than needed) serves the selection; too few candidates need the index."""
    x = np.random.default_rng(4).normal(size=(80, 6)).astype(np.float32)
    index = build_index(x)
    wide = nearest_neighbours(index, x, 60)
    groups = [i % 3 for i in range(80)]
    for request in (NeighbourRequest(5, 0.3), NeighbourRequest(4, None, "label")):
        searched = select_neighbours(index, x, request, groups=groups)
        given = select_neighbours(None, x, request, groups=groups, candidates=wide)
        assert given == searched
    with pytest.raises(ValueError, match="54 neighbour candidates per text are needed"):
        select_neighbours(
            None, x, NeighbourRequest(4, None, "label"), groups=groups, candidates=nearest_neighbours(index, x, 10)
        )
    # one shard's rows, from that shard's candidates or by searching: the whole selection's rows
    shard = range(30, 55)
    for request in (NeighbourRequest(5, 0.3), NeighbourRequest(4, None, "label")):
        whole = select_neighbours(index, x, request, groups=groups)
        rows = {i: whole.neighbours[i] for i in shard}
        part = (wide[0][30:55], wide[1][30:55])
        assert select_neighbours(None, x, request, groups=groups, candidates=part, rows=shard).neighbours == rows
        assert select_neighbours(index, x, request, groups=groups, rows=shard).neighbours == rows
        assert select_neighbours(None, x, request, groups=groups, candidates=part, rows=shard).epsilon == whole.epsilon


def test_stored_base_scores_are_used_and_only_missing_ones_computed(loaded) -> None:
    encoded = encode_texts(loaded.tokenizer, TEXTS, max_length=64)
    base = {(r.position, 1): torch.from_numpy(r.scores) for r in _base(loaded)}
    _, _, computed = _run(loaded, {"kernel": "rbf"}, NEIGHBOURS)
    # every base score given: none computed, same scores
    method = get_method("lafa", {"kernel": "rbf"})
    context = MethodContext(corpus=encoded, neighbours=NEIGHBOURS, base_scores=base)
    given = attribute_corpus(method, loaded, encoded, [[1]] * len(TEXTS), context=context)
    assert method.diagnostics(context)["base_computations"] == 0
    for a, b in zip(given, computed, strict=True):
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-12)
    # scores it is not given (text 3, the neighbour of text 2) are computed, once
    partial = {k: v for k, v in base.items() if k[0] != 3}
    context = MethodContext(corpus=encoded, neighbours=NEIGHBOURS, base_scores=partial)
    again = attribute_corpus(method, loaded, encoded, [[1]] * len(TEXTS), context=context)
    assert method.diagnostics(context)["base_computations"] == 1
    for a, b in zip(again, computed, strict=True):
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-12)


def test_requirements_name_the_base_method() -> None:
    assert method_requirements("lafa", {"base": "grad_input", "base_params": {"reduction": "sum"}}).base == (
        "grad_input",
        {"reduction": "sum"},
    )
    assert method_requirements("simple_grad").base is None
