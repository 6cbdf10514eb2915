"""Approximate FAISS index types: build, save/load through storage, recall against exact search."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import pytest

from storage import read_index, write_index
from xattr.neighbours.index import (
    IndexParams,
    auto_nlist,
    build_index,
    measure_recall,
    nearest_neighbours,
    recall_at_k,
)


def clustered(n: int = 3000, dim: int = 32, clusters: int = 30, seed: int = 0) -> np.ndarray:
    """``clusters`` well-separated Gaussian blobs (centres 3x the unit within-cluster spread)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32) * 3
    labels = rng.integers(0, clusters, n)
    return (centres[labels] + rng.standard_normal((n, dim)).astype(np.float32)).astype(np.float32)


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    return clustered()


# Thresholds sit below recall measured on this data (flat 1.0, ivf_flat 1.0, hnsw 1.0,
# ivf_pq with 16 x 8-bit codes 0.889; 500 queries, seed 0).
CASES = [
    ("flat_l2", IndexParams(), 1.0, faiss.IndexFlatL2),
    ("ivf_flat", IndexParams(nlist=30, nprobe=4), 0.99, faiss.IndexIVFFlat),
    ("hnsw", IndexParams(hnsw_m=16, ef_search=64), 0.98, faiss.IndexHNSWFlat),
    ("ivf_pq", IndexParams(nlist=30, nprobe=4, pq_m=16, pq_bits=8), 0.85, faiss.IndexIVFPQ),
]


@pytest.mark.parametrize(("index_type", "params", "threshold", "cls"), CASES, ids=[c[0] for c in CASES])
def test_each_type_builds_round_trips_and_reaches_its_recall(
    tmp_path: Path, vectors: np.ndarray, index_type: str, params: IndexParams, threshold: float, cls: type
) -> None:
    index = build_index(vectors, index_type, params)  # type: ignore[arg-type]
    assert type(index) is cls
    assert index.ntotal == len(vectors)
    recall = measure_recall(index, vectors, k=10, queries=500, seed=0)
    assert recall >= threshold

    ref = write_index(index, tmp_path / "index", name="index", manifest={"model": "m"})
    loaded, manifest = read_index(ref)
    assert type(loaded) is cls
    assert manifest["index_type"] == cls.__name__
    queries = vectors[:50]
    before = nearest_neighbours(index, queries, 10)
    after = nearest_neighbours(loaded, queries, 10)
    np.testing.assert_array_equal(after[1], before[1])
    np.testing.assert_array_equal(after[0], before[0])
    # Search settings travel inside the file.
    if index_type.startswith("ivf"):
        assert faiss.extract_index_ivf(loaded).nprobe == params.nprobe
    if index_type == "hnsw":
        assert loaded.hnsw.efSearch == params.ef_search
    assert measure_recall(loaded, vectors, k=10, queries=500, seed=0) == recall


def test_flat_neighbours_equal_brute_force_and_nprobe_trades_recall(vectors: np.ndarray) -> None:
    x = vectors[:400]
    _, ids = nearest_neighbours(build_index(x), x, 5)
    full = ((x[:, None, :].astype(np.float64) - x[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(full, np.inf)
    np.testing.assert_array_equal(ids, np.argsort(full, axis=1, kind="stable")[:, :5])
    # Measured on this data: nprobe 1 -> 0.941, nprobe 4 -> 1.0.
    one = measure_recall(build_index(vectors, "ivf_flat", IndexParams(nlist=30, nprobe=1)), vectors, queries=500)
    four = measure_recall(build_index(vectors, "ivf_flat", IndexParams(nlist=30, nprobe=4)), vectors, queries=500)
    assert 0.85 < one < four


@pytest.mark.parametrize(("index_type", "params"), [(c[0], c[1]) for c in CASES[:3]], ids=[c[0] for c in CASES[:3]])
def test_searching_in_blocks_with_progress_equals_one_search(
    vectors: np.ndarray, index_type: str, params: IndexParams
) -> None:
    index = build_index(vectors, index_type, params)  # type: ignore[arg-type]
    whole = nearest_neighbours(index, vectors, 7)
    seen: list[tuple[int, int]] = []
    blocked = nearest_neighbours(
        index, vectors, 7, progress=lambda done, total: seen.append((done, total)), block_rows=700
    )
    np.testing.assert_array_equal(blocked[1], whole[1])
    np.testing.assert_array_equal(blocked[0], whole[0])
    assert seen == [(700, 3000), (1400, 3000), (2100, 3000), (2800, 3000), (3000, 3000)]


def test_recall_at_k_by_hand() -> None:
    exact = np.array([[1, 2, 3], [4, 5, 6]])
    found = np.array([[3, 9, 1], [-1, -1, 4]])
    assert recall_at_k(found, exact) == pytest.approx(3 / 6)
    assert recall_at_k(exact, exact) == 1.0
    with pytest.raises(ValueError, match="equal, non-empty"):
        recall_at_k(found[:, :2], exact)


def test_auto_nlist_and_training_sample() -> None:
    assert auto_nlist(1_000_000) == 1000
    assert auto_nlist(3000) == 55  # sqrt(3000) = 54.8
    assert auto_nlist(400) == 10  # 400 // 39: at least 39 training vectors per cell
    assert auto_nlist(10) == 1
    x = clustered(n=2000)
    index = build_index(x, "ivf_flat", IndexParams(nprobe=100, train_size=500))
    assert faiss.extract_index_ivf(index).nlist == auto_nlist(2000)
    assert faiss.extract_index_ivf(index).nprobe == auto_nlist(2000)  # nprobe capped at nlist
    assert index.ntotal == 2000


@pytest.mark.parametrize(
    ("index_type", "params", "message"),
    [
        ("ivf_flat", IndexParams(nlist=500), r"index.nlist=500 needs at least 500 training vectors, but 300"),
        ("ivf_flat", IndexParams(nlist=50, train_size=20), r"index.nlist=50 .* but 20 .*raise index.train_size"),
        ("ivf_pq", IndexParams(nlist=4, pq_m=5), r"index.pq_m=5 must divide the embedding dimension 32"),
        ("ivf_pq", IndexParams(nlist=4, pq_m=8, pq_bits=9), r"index.pq_bits=9 needs at least 512 training vectors"),
        ("annoy", IndexParams(), r"unknown index type 'annoy'; valid: flat_l2, ivf_flat, hnsw, ivf_pq"),
    ],
)
def test_settings_that_cannot_work_are_named(index_type: str, params: IndexParams, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_index(clustered(n=300), index_type, params)  # type: ignore[arg-type]


def test_out_of_range_settings_are_refused() -> None:
    with pytest.raises(ValueError, match=r"at least 1: nprobe=0, nlist=0"):
        IndexParams(nprobe=0, nlist=0)
    with pytest.raises(ValueError, match=r"pq_bits=17 must be between 1 and 16"):
        IndexParams(pq_bits=17)
    with pytest.raises(ValueError, match=r"hnsw_m=1 must be at least 2"):
        IndexParams(hnsw_m=1)
