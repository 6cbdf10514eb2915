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

On a CUDA device exact search runs on the GPU: with faiss-gpu through FAISS, without it through
:class:`TorchExactIndex` (matrix product and top-k in blocks), see :func:`search_index`. FAISS is
imported when an index is built or searched, so the rest of the library runs where it is absent.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, get_args

import numpy as np
import torch

from xattr.device import pick_device

if TYPE_CHECKING:
    import faiss

IndexType = Literal["flat_l2", "ivf_flat", "hnsw", "ivf_pq"]
INDEX_TYPES: tuple[str, ...] = get_args(IndexType)

#: Where a search runs: FAISS on the CPU, FAISS on the GPU (faiss-gpu), or :class:`TorchExactIndex`.
SearchBackend = Literal["faiss", "faiss_gpu", "torch"]


class SearchIndex(Protocol):
    """What a neighbour search needs of an index: FAISS indexes and :class:`TorchExactIndex` both have it."""

    @property
    def ntotal(self) -> int: ...

    def search(self, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...


def require_faiss() -> Any:
    """The ``faiss`` module.

    Raises:
        ImportError: FAISS is not installed (the message says what to install).
    """
    try:
        import faiss
    except ImportError as exc:
        raise ImportError(
            "FAISS is not installed: install faiss-cpu (or faiss-gpu) to build or search FAISS indexes;"
            " exact search on a torch device (TorchExactIndex) needs none"
        ) from exc
    return faiss


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
    faiss = require_faiss()
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
    faiss = require_faiss()
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
    faiss = require_faiss()
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
    if len(ids) == 0:
        return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
    # Vectorised (a Python loop costs seconds per million queries): per row, the kept results in
    # their order come first (a stable sort on "is own"), then the first k of them. Each row has
    # k + 1 results and its own id at most once, so at least k are kept.
    order = np.argsort(ids == np.asarray(own_ids)[:, None], axis=1, kind="stable")[:, :k]
    return (
        np.take_along_axis(dist, order, axis=1).astype(np.float32),
        np.take_along_axis(ids, order, axis=1).astype(np.int64),
    )


def nearest_neighbours(
    index: SearchIndex,
    queries: np.ndarray,
    k: int,
    *,
    exclude_self: bool = True,
    device: torch.device | str | None = None,
    progress: Callable[[int, int], None] | None = None,
    block_rows: int = 16_384,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest indexed texts of each query.

    Args:
        index: A FAISS index or a :class:`TorchExactIndex`.
        queries: ``(m, dim)`` float32 query vectors; with ``exclude_self`` row ``i`` is the
            indexed text ``i`` itself.
        k: Neighbours per query (capped at the index size, minus one when excluding self).
        exclude_self: Drop each query's own position from its result.
        device: Where exact search runs (see :func:`search_index`); ``None`` for CUDA when
            available. Approximate indexes always search with FAISS on the CPU.
        progress: Called with ``(queries searched, m)``; the queries are then searched in blocks
            of ``block_rows`` (each query's result does not depend on the others in its call).
        block_rows: Queries per search call when ``progress`` is given.

    Returns:
        ``(distances, ids)``, each ``(m, k')``; distances are squared L2 (approximate for
        ``ivf_pq``); missing slots are -1.
    """
    k = max(0, min(k, index.ntotal - (1 if exclude_self else 0)))
    if k == 0:
        return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    searcher = search_index(index, device)
    wanted = k + 1 if exclude_self else k
    if progress is None or len(queries) <= block_rows:
        found = searcher.search(queries, wanted)
        if progress is not None:
            progress(len(queries), len(queries))
    else:
        blocks = []
        for start in range(0, len(queries), block_rows):
            blocks.append(searcher.search(queries[start : start + block_rows], wanted))
            progress(min(start + block_rows, len(queries)), len(queries))
        found = (np.concatenate([d for d, _ in blocks]), np.concatenate([i for _, i in blocks]))
    if not exclude_self:
        return found
    return _drop_own(*found, np.arange(len(queries)), k)


class TorchExactIndex:
    """Exact squared-L2 search with torch on any device: the neighbours ``faiss.IndexFlatL2`` finds.

    Hand-written because faiss-gpu is often not installed where a GPU is (it has no wheels on
    PyPI), while exact search over a million texts is one large matrix product that a GPU does in
    seconds. Distances are ``|q|^2 - 2 q.x + |x|^2`` in float32, as FAISS's BLAS path computes them
    for batches of queries; queries go in blocks whose ``(block, n)`` distance matrix stays within
    ``block_bytes``, each block one matrix product and one ``topk``; results stay on the device
    until the last block is done.

    Args:
        vectors: ``(n, dim)`` the indexed vectors (position ``i`` is text ``i``).
        device: Where the vectors live and the search runs.
        block_bytes: Most bytes of one block's distance matrix.
    """

    def __init__(
        self, vectors: np.ndarray | torch.Tensor, device: torch.device | str = "cpu", *, block_bytes: int = 1 << 30
    ) -> None:
        data = vectors if isinstance(vectors, torch.Tensor) else torch.from_numpy(np.asarray(vectors))
        if data.ndim != 2 or data.shape[0] == 0:
            raise ValueError(f"need a non-empty (n, dim) array of vectors, got shape {tuple(data.shape)}")
        if block_bytes < 1:
            raise ValueError(f"block_bytes must be at least 1, got {block_bytes}")
        self.device = torch.device(device)
        self.vectors = data.to(self.device, torch.float32).contiguous()  # (n, dim)
        if not bool(torch.isfinite(self.vectors).all()):
            raise ValueError("embeddings contain NaN or infinite values")
        self.norms = self.vectors.pow(2).sum(dim=1)  # (n,)
        self.block_bytes = int(block_bytes)

    @property
    def ntotal(self) -> int:
        """Number of indexed vectors (FAISS's name)."""
        return int(self.vectors.shape[0])

    @property
    def d(self) -> int:
        """Vector dimension (FAISS's name)."""
        return int(self.vectors.shape[1])

    def search(self, x: np.ndarray | torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest indexed vectors of each query, nearest first, as ``IndexFlatL2.search``.

        Args:
            x: ``(m, dim)`` queries.
            k: Neighbours per query; slots beyond the index size get id -1 and distance ``inf``.

        Returns:
            ``(distances, ids)``: ``(m, k)`` float32 squared L2 and ``(m, k)`` int64 positions.
        """
        queries = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        queries = queries.to(self.device, torch.float32)  # (m, dim)
        m, n = int(queries.shape[0]), self.ntotal
        kk = min(int(k), n)
        rows = max(1, self.block_bytes // (4 * n))
        dist_blocks, id_blocks = [], []
        for start in range(0, m, rows):
            block = queries[start : start + rows]  # (block, dim)
            dist = torch.addmm(self.norms.unsqueeze(0), block, self.vectors.T, alpha=-2.0)  # (block, n)
            dist += block.pow(2).sum(dim=1, keepdim=True)
            values, ids = torch.topk(dist.clamp_(min=0.0), kk, dim=1, largest=False, sorted=True)  # (block, kk)
            dist_blocks.append(values)
            id_blocks.append(ids)
        distances = np.full((m, int(k)), np.inf, np.float32)
        positions = np.full((m, int(k)), -1, np.int64)
        if m and kk:
            distances[:, :kk] = torch.cat(dist_blocks).cpu().numpy()
            positions[:, :kk] = torch.cat(id_blocks).cpu().numpy()
        return distances, positions


def search_backend(index: object, device_type: str, *, gpu_faiss: bool) -> SearchBackend:
    """Which search an index gets on a device of type ``device_type``.

    Exact flat L2 indexes search on a CUDA device: through FAISS when faiss-gpu is installed
    (``gpu_faiss``), else through :class:`TorchExactIndex`. Everything else (CPU devices,
    approximate indexes) searches with FAISS as built; a :class:`TorchExactIndex` searches itself.
    """
    if isinstance(index, TorchExactIndex):
        return "torch"
    if device_type != "cuda" or not _is_exact_flat(index):
        return "faiss"
    return "faiss_gpu" if gpu_faiss else "torch"


def _is_exact_flat(index: object) -> bool:
    faiss = require_faiss()
    return isinstance(index, faiss.IndexFlat) and index.metric_type == faiss.METRIC_L2


def search_index(index: SearchIndex, device: torch.device | str | None = None) -> SearchIndex:
    """The index to search with on ``device`` (``None``: CUDA when available), as :func:`search_backend` decides.

    Exact flat indexes move to the GPU (their vectors copied once per call); other indexes are
    returned unchanged.
    """
    target = pick_device(device) if not isinstance(device, torch.device) else device
    if isinstance(index, TorchExactIndex):
        return index
    faiss = require_faiss()
    backend = search_backend(index, target.type, gpu_faiss=hasattr(faiss, "StandardGpuResources"))
    if backend == "faiss":
        return index
    if backend == "faiss_gpu":  # needs faiss-gpu and a GPU: not run by the CPU tests
        return faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), target.index or 0, index)  # type: ignore[no-any-return]
    return TorchExactIndex(index.reconstruct_n(0, index.ntotal), target)  # type: ignore[attr-defined]
