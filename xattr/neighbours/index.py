"""Nearest-neighbour search over text embeddings with FAISS."""

from __future__ import annotations

from typing import Literal

import faiss
import numpy as np

IndexType = Literal["flat_l2"]


def build_index(vectors: np.ndarray, index_type: IndexType = "flat_l2") -> faiss.Index:
    """Build an exact FAISS index over ``(n, dim)`` float32 vectors.

    Args:
        vectors: The embeddings, one row per text.
        index_type: ``"flat_l2"``: exact search by squared Euclidean distance.

    Returns:
        The filled index; position ``i`` is row ``i`` of ``vectors``.

    Raises:
        ValueError: Empty or non-2-D input, non-finite values, or an unknown index type.
    """
    if vectors.ndim != 2 or vectors.shape[0] == 0:
        raise ValueError(f"need a non-empty (n, dim) array of vectors, got shape {vectors.shape}")
    if not np.isfinite(vectors).all():
        raise ValueError("embeddings contain NaN or infinite values")
    if index_type != "flat_l2":
        raise ValueError(f"unknown index type {index_type!r}; valid: flat_l2")
    index = faiss.IndexFlatL2(int(vectors.shape[1]))
    index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return index


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
        ``(distances, ids)``, each ``(m, k')``; distances are squared L2; missing slots are -1.
    """
    k = max(0, min(k, index.ntotal - (1 if exclude_self else 0)))
    if k == 0:
        return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
    fetch = k + 1 if exclude_self else k
    dist, ids = index.search(np.ascontiguousarray(queries, dtype=np.float32), fetch)
    if not exclude_self:
        return dist, ids
    out_d = np.zeros((len(queries), k), np.float32)
    out_i = np.full((len(queries), k), -1, np.int64)
    for row in range(len(queries)):
        keep = ids[row] != row
        d, i = dist[row][keep][:k], ids[row][keep][:k]
        out_d[row, : len(d)], out_i[row, : len(i)] = d, i
    return out_d, out_i
