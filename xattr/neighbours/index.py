"""Nearest-neighbour search over text embeddings with FAISS.

Four index types, chosen by name:

- ``flat_l2``: exact search (``IndexFlatL2``); memory ``4 * dim`` bytes per vector.
- ``ivf_flat``: inverted lists (``IndexIVFFlat``): k-means into ``nlist`` cells, a query scans the
  ``nprobe`` nearest cells; exact distances inside the scanned cells.
- ``hnsw``: a hierarchical navigable small-world graph (``IndexHNSWFlat``) with ``M`` links per
  node, searched with a beam of ``efSearch``; no training, exact distances, memory grows by
  about ``8 * M`` bytes per vector.
- ``ivf_pq``: inverted lists over product-quantised residuals (``IndexIVFPQ``): each vector is
  stored as ``pq_m`` codes of ``pq_bits`` bits, so memory drops ~``32 * dim / (pq_m * pq_bits)``
  fold; distances are approximate.

The search-time settings (``nprobe``, ``efSearch``) are stored in the index itself (FAISS
serialises them), so an index read back from disk searches as it was built.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

import faiss
import numpy as np

IndexType = Literal["flat_l2", "ivf_flat", "hnsw", "ivf_pq"]
INDEX_TYPES: tuple[str, ...] = get_args(IndexType)


@dataclass(frozen=True)
class IndexParams:
    """Settings of the approximate index types (each type reads only its own).

    Attributes:
        nlist: Inverted-list cells of ``ivf_flat``/``ivf_pq``; ``None`` picks ``round(sqrt(n))``,
            capped so that every cell gets at least 39 training points when possible.
        nprobe: Cells scanned per query (``ivf_*``); capped at ``nlist``.
        hnsw_m: Links per node of ``hnsw``.
        ef_construction: Beam width while building ``hnsw``.
        ef_search: Beam width while searching ``hnsw`` (at least the number of neighbours asked).
        pq_m: Sub-quantisers of ``ivf_pq``; must divide the vector dimension.
        pq_bits: Bits per sub-quantiser code of ``ivf_pq`` (1-16).
        train_size: Vectors (a seeded sample) the k-means of ``ivf_*`` trains on; ``None`` for all.
        seed: Seed of the training sample and of FAISS's k-means.
    """

    nlist: int | None = None
    nprobe: int = 16
    hnsw_m: int = 32
    ef_construction: int = 40
    ef_search: int = 64
    pq_m: int = 16
    pq_bits: int = 8
    train_size: int | None = 100_000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.hnsw_m < 2:
            raise ValueError(f"index setting hnsw_m={self.hnsw_m} must be at least 2")
        positive = {
            "nprobe": self.nprobe,
            "ef_construction": self.ef_construction,
            "ef_search": self.ef_search,
            "pq_m": self.pq_m,
        }
        if self.nlist is not None:
            positive["nlist"] = self.nlist
        if self.train_size is not None:
            positive["train_size"] = self.train_size
        bad = [f"{name}={value}" for name, value in positive.items() if value < 1]
        if bad:
            raise ValueError(f"index settings must be at least 1: {', '.join(bad)}")
        if not 1 <= self.pq_bits <= 16:
            raise ValueError(f"index setting pq_bits={self.pq_bits} must be between 1 and 16")


def auto_nlist(n: int) -> int:
    """``round(sqrt(n))`` cells, but no more than one per 39 vectors (FAISS's k-means minimum)."""
    return max(1, min(round(math.sqrt(n)), n // 39))


def _check_vectors(vectors: np.ndarray) -> None:
    if vectors.ndim != 2 or vectors.shape[0] == 0:
        raise ValueError(f"need a non-empty (n, dim) array of vectors, got shape {vectors.shape}")
    if not np.isfinite(vectors).all():
        raise ValueError("embeddings contain NaN or infinite values")


def _training_sample(vectors: np.ndarray, params: IndexParams) -> np.ndarray:
    n = len(vectors)
    if params.train_size is None or params.train_size >= n:
        return vectors
    rows = np.sort(np.random.default_rng(params.seed).choice(n, size=params.train_size, replace=False))
    return np.ascontiguousarray(vectors[rows])


def _ivf(vectors: np.ndarray, index_type: IndexType, params: IndexParams) -> faiss.Index:
    n, dim = vectors.shape
    nlist = params.nlist if params.nlist is not None else auto_nlist(n)
    sample = _training_sample(vectors, params)
    if nlist > len(sample):
        raise ValueError(
            f"index.nlist={nlist} needs at least {nlist} training vectors, but {len(sample)} are available"
            " (lower index.nlist or raise index.train_size)"
        )
    quantizer = faiss.IndexFlatL2(dim)
    if index_type == "ivf_flat":
        index: faiss.IndexIVF = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_L2)
    else:
        if dim % params.pq_m:
            raise ValueError(f"index.pq_m={params.pq_m} must divide the embedding dimension {dim}")
        if len(sample) < 2**params.pq_bits:
            raise ValueError(
                f"index.pq_bits={params.pq_bits} needs at least {2**params.pq_bits} training vectors, but"
                f" {len(sample)} are available (lower index.pq_bits)"
            )
        index = faiss.IndexIVFPQ(quantizer, dim, nlist, params.pq_m, params.pq_bits)
    index.cp.seed = params.seed
    index.train(sample)
    index.nprobe = min(params.nprobe, nlist)
    return index


def build_index(
    vectors: np.ndarray,
    index_type: IndexType = "flat_l2",
    params: IndexParams | None = None,
    *,
    chunk_rows: int = 100_000,
    progress: Callable[[int, int], None] | None = None,
) -> faiss.Index:
    """Build a FAISS index over ``(n, dim)`` float32 vectors, training it first when needed.

    Args:
        vectors: The embeddings, one row per text.
        index_type: ``flat_l2`` (exact), ``ivf_flat``, ``hnsw`` or ``ivf_pq`` (see the module).
        params: Settings of the approximate types; defaults of :class:`IndexParams` when ``None``.
        chunk_rows: Vectors added per call (bounds the temporary copy to float32).
        progress: Called with ``(vectors added, n)`` after each chunk.

    Returns:
        The filled index; position ``i`` is row ``i`` of ``vectors``.

    Raises:
        ValueError: Empty or non-2-D input, non-finite values, an unknown index type, or settings
            that cannot work for this data (the message names the setting).
    """
    _check_vectors(vectors)
    if index_type not in INDEX_TYPES:
        raise ValueError(f"unknown index type {index_type!r}; valid: {', '.join(INDEX_TYPES)}")
    params = params or IndexParams()
    n, dim = vectors.shape
    if index_type == "flat_l2":
        index: faiss.Index = faiss.IndexFlatL2(dim)
    elif index_type == "hnsw":
        index = faiss.IndexHNSWFlat(dim, params.hnsw_m, faiss.METRIC_L2)
        index.hnsw.efConstruction = params.ef_construction
        index.hnsw.efSearch = params.ef_search
    else:
        index = _ivf(np.ascontiguousarray(vectors, dtype=np.float32), index_type, params)
    for start in range(0, n, chunk_rows):
        index.add(np.ascontiguousarray(vectors[start : start + chunk_rows], dtype=np.float32))
        if progress is not None:
            progress(min(start + chunk_rows, n), n)
    return index


def recall_at_k(approximate_ids: np.ndarray, exact_ids: np.ndarray) -> float:
    """Mean share of each query's exact ``k`` nearest neighbours that the approximate search found.

    Args:
        approximate_ids: ``(m, k)`` ids returned by the index under test (-1 for empty slots).
        exact_ids: ``(m, k)`` ids of the exact search.

    Returns:
        ``1/m sum_q |A_q & E_q| / |E_q|`` (ids ``-1`` never count), in ``[0, 1]``.

    Raises:
        ValueError: The two arrays differ in shape or are empty.
    """
    if approximate_ids.shape != exact_ids.shape or exact_ids.size == 0:
        raise ValueError(
            f"need two equal, non-empty (m, k) id arrays, got {approximate_ids.shape} and {exact_ids.shape}"
        )
    hits = 0
    total = 0
    for found, truth in zip(approximate_ids, exact_ids, strict=True):
        wanted = set(truth[truth >= 0].tolist())
        hits += len(wanted & set(found[found >= 0].tolist()))
        total += len(wanted)
    return hits / total if total else 1.0


def measure_recall(
    index: faiss.Index, vectors: np.ndarray, *, k: int = 10, queries: int = 1000, seed: int = 0
) -> float:
    """Recall@k of ``index`` against exact search, for a seeded sample of the indexed texts.

    Each sampled text queries both indexes for its ``k`` nearest other texts (itself excluded,
    as the pipeline does).

    Args:
        index: The index under test, holding ``vectors`` in order.
        vectors: ``(n, dim)`` the indexed vectors.
        k: Neighbours per query.
        queries: Sampled texts (all when fewer).
        seed: Seed of the sample.

    Returns:
        :func:`recall_at_k` of the sample; 1.0 when there is no other text to find.
    """
    _check_vectors(vectors)
    n = len(vectors)
    kk = min(k, n - 1)
    if kk <= 0:
        return 1.0
    rows = np.sort(np.random.default_rng(seed).choice(n, size=min(queries, n), replace=False))
    database = np.ascontiguousarray(vectors, dtype=np.float32)
    sample = np.ascontiguousarray(database[rows])
    # faiss.knn is the brute-force search of IndexFlatL2 without copying the vectors into an index.
    exact = faiss.knn(sample, database, kk + 1)
    _, truth = _drop_own(*exact, rows, kk)
    _, found = _drop_own(*index.search(sample, kk + 1), rows, kk)
    return recall_at_k(found, truth)


def _drop_own(dist: np.ndarray, ids: np.ndarray, own_ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """From ``k + 1`` results per query drop the query's own id (or the last result when it is absent)."""
    out_d = np.zeros((len(ids), k), np.float32)
    out_i = np.full((len(ids), k), -1, np.int64)
    for row, own in enumerate(own_ids):
        keep = ids[row] != own
        d, i = dist[row][keep][:k], ids[row][keep][:k]
        out_d[row, : len(d)], out_i[row, : len(i)] = d, i
    return out_d, out_i


def nearest_neighbours(
    index: faiss.Index, queries: np.ndarray, k: int, *, exclude_self: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest indexed texts of each query.

    Args:
        index: A FAISS index.
        queries: ``(m, dim)`` float32 query vectors; with ``exclude_self`` row ``i`` is the
            indexed text ``i`` itself.
        k: Neighbours per query (capped at the index size, minus one when excluding self).
        exclude_self: Drop each query's own position from its result.

    Returns:
        ``(distances, ids)``, each ``(m, k')``; distances are squared L2 (approximate for
        ``ivf_pq``); missing slots are -1.
    """
    k = max(0, min(k, index.ntotal - (1 if exclude_self else 0)))
    if k == 0:
        return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if not exclude_self:
        return index.search(queries, k)
    return _drop_own(*index.search(queries, k + 1), np.arange(len(queries)), k)
