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
