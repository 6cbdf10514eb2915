from __future__ import annotations

import numpy as np
import pytest

from xattr.neighbours.index import build_index, nearest_neighbours


def test_exact_neighbours_match_brute_force_and_exclude_self() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 8)).astype(np.float32)
    dist, ids = nearest_neighbours(build_index(x), x, k=5)
    full = ((x[:, None, :].astype(np.float64) - x[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(full, np.inf)
    expected = np.argsort(full, axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(ids, expected)
    np.testing.assert_allclose(dist, np.take_along_axis(full, expected, axis=1), rtol=1e-4)


def test_k_is_capped_by_corpus_size() -> None:
    x = np.eye(3, dtype=np.float32)
    dist, ids = nearest_neighbours(build_index(x), x, k=10)
    assert ids.shape == (3, 2)
    assert all(row not in ids[row] for row in range(3))


def test_bad_vectors_are_refused() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        build_index(np.zeros((0, 4), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        build_index(np.array([[np.nan, 1.0]], np.float32))


def test_torch_exact_search_finds_faiss_exact_neighbours_in_blocks() -> None:
    """TorchExactIndex (the GPU fallback, run here on the CPU) against faiss.IndexFlatL2: same ids, same distances."""
    import faiss

    from xattr.neighbours.index import TorchExactIndex

    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 24)).astype(np.float32)
    queries = rng.normal(size=(70, 24)).astype(np.float32)
    flat = faiss.IndexFlatL2(24)
    flat.add(x)
    want_d, want_i = flat.search(queries, 7)
    # 4 * 300 * 8 bytes: blocks of 8 queries, the last one short.
    got_d, got_i = TorchExactIndex(x, "cpu", block_bytes=4 * 300 * 8).search(queries, 7)
    np.testing.assert_array_equal(got_i, want_i)
    np.testing.assert_allclose(got_d, want_d, rtol=1e-5, atol=1e-4)
    assert got_d.dtype == np.float32 and got_i.dtype == np.int64


def test_torch_exact_search_pads_like_faiss_when_k_exceeds_the_index() -> None:
    import faiss

    from xattr.neighbours.index import TorchExactIndex

    x = np.eye(3, dtype=np.float32)
    flat = faiss.IndexFlatL2(3)
    flat.add(x)
    want_d, want_i = flat.search(x, 5)
    got_d, got_i = TorchExactIndex(x).search(x, 5)
    np.testing.assert_array_equal(got_i, want_i)  # -1 in the two empty slots
    assert np.all(np.isinf(got_d[:, 3:])) and np.allclose(got_d[:, :3], want_d[:, :3])


def test_search_backend_sends_exact_indexes_on_cuda_to_torch_unless_faiss_gpu_is_there() -> None:
    from xattr.neighbours.index import TorchExactIndex, search_backend, search_index

    x = np.random.default_rng(0).normal(size=(100, 8)).astype(np.float32)
    flat, hnsw = build_index(x, "flat_l2"), build_index(x, "hnsw")
    assert search_backend(flat, "cuda", gpu_faiss=False) == "torch"
    assert search_backend(flat, "cuda", gpu_faiss=True) == "faiss_gpu"
    assert search_backend(hnsw, "cuda", gpu_faiss=False) == "faiss"  # approximate: FAISS on the CPU
    assert search_backend(flat, "cpu", gpu_faiss=False) == "faiss"
    torch_index = TorchExactIndex(x)
    assert search_backend(torch_index, "cpu", gpu_faiss=False) == "torch"
    assert search_index(flat, "cpu") is flat and search_index(torch_index, "cpu") is torch_index


def test_neighbour_selection_is_the_same_with_the_torch_index() -> None:
    from xattr.neighbours.index import TorchExactIndex
    from xattr.neighbours.selection import NeighbourRequest, select_neighbours

    x = np.random.default_rng(5).normal(size=(120, 16)).astype(np.float32)
    request = NeighbourRequest(max_neighbours=6, epsilon_quantile=0.2)
    with_faiss = select_neighbours(build_index(x), x, request)
    with_torch = select_neighbours(TorchExactIndex(x), x, request)
    assert with_torch == with_faiss
    assert sum(map(len, with_faiss.neighbours.values())) > 0


def test_dropping_the_query_itself_equals_the_row_by_row_rule() -> None:
    """Own id dropped, else the last result (vectorised): equal to the rule applied row by row."""
    rng = np.random.default_rng(9)
    m, k = 200, 5
    others = np.stack([rng.choice(m - 1, size=k + 1, replace=False) for _ in range(m)])
    ids = (others + (others >= np.arange(m)[:, None])).astype(np.int64)  # distinct ids, never the row's own
    own_rows = rng.random(m) < 0.5
    ids[own_rows, rng.integers(0, k + 1, size=int(own_rows.sum()))] = np.flatnonzero(own_rows)
    ids[rng.random((m, k + 1)) < 0.1] = -1  # empty slots of an approximate search
    dist = rng.random((m, k + 1)).astype(np.float32)

    class Prepared:
        ntotal = m

        def search(self, x: np.ndarray, kk: int) -> tuple[np.ndarray, np.ndarray]:
            assert kk == k + 1
            return dist, ids

    got_d, got_i = nearest_neighbours(Prepared(), np.zeros((m, 4), np.float32), k, device="cpu")
    for row in range(m):
        keep = ids[row] != row
        np.testing.assert_array_equal(got_i[row], ids[row][keep][:k])
        np.testing.assert_array_equal(got_d[row], dist[row][keep][:k])
    has_own = (ids == np.arange(m)[:, None]).any(axis=1)
    assert 10 < has_own.sum() < m - 10  # both cases occur


def test_neighbours_of_outside_queries_come_from_the_reference_only() -> None:
    from xattr.neighbours.selection import NeighbourRequest, select_neighbours

    rng = np.random.default_rng(1)
    reference = rng.normal(size=(40, 6)).astype(np.float32)
    queries = rng.normal(size=(7, 6)).astype(np.float32)
    queries[0] = reference[3]  # a query equal to a reference text keeps it as its nearest neighbour
    request = NeighbourRequest(max_neighbours=4, epsilon_quantile=None)
    selection = select_neighbours(build_index(reference), reference, request, queries=queries)
    full = ((queries[:, None, :].astype(np.float64) - reference[None, :, :]) ** 2).sum(-1)
    expected = np.argsort(full, axis=1, kind="stable")[:, :4]
    assert [selection.neighbours[i] for i in range(7)] == expected.tolist()
    assert selection.neighbours[0][0] == 3
    groups = [i % 2 for i in range(40)]
    filtered = select_neighbours(
        build_index(reference),
        reference,
        NeighbourRequest(max_neighbours=3, epsilon_quantile=None, filter="label"),
        groups=groups,
        queries=queries,
        query_groups=[1] * 7,
    )
    assert all(j % 2 == 1 for js in filtered.neighbours.values() for j in js)
    with pytest.raises(ValueError, match="needs one label per query text"):
        select_neighbours(
            build_index(reference),
            reference,
            NeighbourRequest(filter="label"),
            groups=groups,
            queries=queries,
        )
