"""Which similar texts smooth an explanation: LAFA Eq. 4 with at most M neighbours.

Neighbours of ``X0`` are texts ``X`` with ``||H(X) - H(X0)||_2 < epsilon`` in a hidden layer of
the explained model, at most ``M`` of them, nearest first. ``epsilon`` is a quantile of the L2
distances of randomly sampled pairs of corpus texts (LAFA Sec. 3 and Appendix D.1, which uses the
0.05 quantile). Optionally only neighbours sharing the text's label or predicted class are kept.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch

from xattr.neighbours.index import nearest_neighbours

if TYPE_CHECKING:
    from xattr.neighbours.index import SearchIndex

logger = logging.getLogger(__name__)

NeighbourFilter = Literal["none", "label", "prediction"]


@dataclass(frozen=True)
class NeighbourRequest:
    """What a method asks of the neighbour search.

    Attributes:
        max_neighbours: ``M``, at most this many neighbours per text.
        epsilon_quantile: Quantile of sampled pairwise distances used as the cut-off
            ``epsilon``; ``None`` for no cut-off.
        filter: Keep only neighbours with the same ``label`` or ``prediction`` (``none``: all).
        layer: The hidden layer the index must have been built on (``None``: any).
    """

    max_neighbours: int = 10
    epsilon_quantile: float | None = 0.05
    filter: NeighbourFilter = "none"
    layer: int | None = None


@dataclass(frozen=True)
class NeighbourSelection:
    """Neighbours by corpus position, and what the selection did.

    Attributes:
        neighbours: For every text position, its neighbours' positions, nearest first.
        epsilon: The distance cut-off applied (``None``: none).
        without_neighbours: Texts left with no neighbour inside the cut-off.
        max_neighbours: ``M`` after capping at the corpus size minus one.
    """

    neighbours: dict[int, list[int]] = field(default_factory=dict)
    epsilon: float | None = None
    without_neighbours: int = 0
    max_neighbours: int = 0


def cutoff_pairs(n: int, *, sample_pairs: int = 20_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The pairs of distinct texts (positions ``i``, ``j``) whose distances :func:`distance_cutoff` takes.

    Every pair when there are at most ``sample_pairs``, else a seeded draw of that many.
    """
    if n * (n - 1) // 2 <= sample_pairs:
        return np.triu_indices(n, k=1)
    rng = np.random.default_rng(seed)
    i = rng.integers(0, n, size=sample_pairs)
    j = (i + rng.integers(1, n, size=sample_pairs)) % n  # never equal to i
    return i, j


def distance_cutoff(
    vectors: np.ndarray,
    quantile: float,
    *,
    sample_pairs: int = 20_000,
    seed: int = 0,
    pairs: tuple[np.ndarray, np.ndarray] | None = None,
) -> float:
    """``epsilon``: the ``quantile`` of L2 distances between random pairs of distinct texts.

    Args:
        vectors: ``(n, dim)`` text embeddings; with ``pairs``, the rows those pairs index.
        quantile: In (0, 1].
        sample_pairs: Pairs drawn (all pairs when there are fewer): :func:`cutoff_pairs`.
        seed: Seed of the draw.
        pairs: The pairs already drawn, as indices into ``vectors`` (a caller that reads only the
            sampled rows of a large corpus).

    Raises:
        ValueError: Fewer than two texts or a quantile outside (0, 1].
    """
    n = len(vectors)
    if n < 2:
        raise ValueError("a distance cut-off needs at least two texts")
    if not 0.0 < quantile <= 1.0:
        raise ValueError(f"epsilon quantile must be in (0, 1], got {quantile}")
    i, j = pairs if pairs is not None else cutoff_pairs(n, sample_pairs=sample_pairs, seed=seed)
    diff = vectors[i].astype(np.float64) - vectors[j].astype(np.float64)
    return float(np.quantile(np.sqrt((diff**2).sum(axis=1)), quantile))


def candidates_needed(request: NeighbourRequest) -> int:
    """Nearest candidates per text that :func:`select_neighbours` examines (before capping at ``n - 1``).

    ``M`` without a filter; with one, more, so that ``M`` of the right group can remain.
    """
    m = request.max_neighbours
    return m if request.filter == "none" else max(4 * m, m + 50)


def select_neighbours(
    index: SearchIndex | None,
    vectors: np.ndarray,
    request: NeighbourRequest,
    *,
    groups: Sequence[object] | None = None,
    seed: int = 0,
    candidates: tuple[np.ndarray, np.ndarray] | None = None,
    device: torch.device | str | None = None,
    queries: np.ndarray | None = None,
    query_groups: Sequence[object] | None = None,
    rows: range | None = None,
    epsilon: float | None = None,
) -> NeighbourSelection:
    """Neighbours of every indexed text (LAFA Eq. 4), excluding the text itself, or of other query texts.

    Args:
        index: The FAISS index (or :class:`~xattr.neighbours.index.TorchExactIndex`) over
            ``vectors`` (position ``i`` is text ``i``); searched only when ``candidates`` are
            missing or too few.
        vectors: ``(n, dim)`` the indexed embeddings (the reference corpus).
        request: ``M``, the cut-off quantile and the filter.
        groups: Per indexed text, its label or predicted class when ``request.filter`` is not ``none``.
        seed: Seed of the pair sample for ``epsilon``.
        candidates: A search already made (``(squared distances, ids)``, ``(n, k)``, nearest
            first, the text itself excluded, ``-1`` for empty slots), e.g. the build_index
            stage's neighbours table; used when ``k`` covers :func:`candidates_needed`.
        device: Where exact search runs (:func:`~xattr.neighbours.index.search_index`; ``None``:
            CUDA when available).
        queries: ``(m, dim)`` embeddings of texts outside the index whose neighbours among the
            indexed texts are wanted (``None``: the indexed texts themselves, each excluding
            itself). ``epsilon`` is always a quantile of the indexed texts' pairwise distances.
        query_groups: Per query, its group when ``queries`` and a filter are given.
        rows: Only the neighbours of the indexed texts at these positions (one shard), without
            ``queries``; ``candidates``, when given, then hold these rows only, in order.
        epsilon: The cut-off already computed (:func:`distance_cutoff` of ``vectors``); then
            ``vectors`` may hold no columns (only its length, the corpus size, is read) when
            ``candidates`` serve the selection.

    Returns:
        The selection, keyed by indexed position (or query row with ``queries``); texts without
        neighbours inside the cut-off get an empty list.

    Raises:
        ValueError: A filter without groups, or ``max_neighbours`` below 1.
    """
    n = len(vectors)
    if request.max_neighbours < 1:
        raise ValueError(f"max_neighbours must be at least 1, got {request.max_neighbours}")
    if request.filter != "none" and (groups is None or len(groups) != n):
        raise ValueError(f"neighbour filter {request.filter!r} needs one {request.filter} per text")
    external = queries is not None
    if external and request.filter != "none" and (query_groups is None or len(query_groups) != len(queries)):
        raise ValueError(f"neighbour filter {request.filter!r} needs one {request.filter} per query text")
    available = n if external else n - 1
    m = min(request.max_neighbours, available)
    if m < request.max_neighbours:
        logger.warning("M=%d neighbours asked but the corpus has %d texts; using %d", request.max_neighbours, n, m)
    if epsilon is None and request.epsilon_quantile and n > 1:
        epsilon = distance_cutoff(vectors, request.epsilon_quantile, seed=seed)
    elif not request.epsilon_quantile:
        epsilon = None
    # With a filter, fetch more candidates so that M of the right group can remain.
    fetch = min(available, candidates_needed(dataclasses.replace(request, max_neighbours=m)))
    if queries is not None:
        if index is None:
            raise ValueError("neighbours of outside queries need the index of the reference corpus")
        squared, ids = nearest_neighbours(index, queries, fetch, exclude_self=False, device=device)
        own_groups = query_groups
    else:
        if candidates is not None and candidates[1].shape[1] >= fetch:
            squared, ids = candidates[0][:, :fetch], candidates[1][:, :fetch]
        elif index is not None:
            squared, ids = nearest_neighbours(index, vectors, fetch, device=device)
            if rows is not None:
                squared, ids = squared[rows.start : rows.stop], ids[rows.start : rows.stop]
        else:
            raise ValueError(f"{fetch} neighbour candidates per text are needed; give an index or that many candidates")
        own_groups = groups
    keys = rows if rows is not None and queries is None else range(len(ids))
    if len(keys) != len(ids):
        raise ValueError(f"neighbour candidates for {len(ids)} texts, but {len(keys)} rows are asked for")
    out: dict[int, list[int]] = {}
    empty = 0
    for row, key in enumerate(keys):
        chosen: list[int] = []
        for dist2, j in zip(squared[row], ids[row], strict=True):
            if j < 0 or len(chosen) == m:
                break
            if epsilon is not None and np.sqrt(max(float(dist2), 0.0)) >= epsilon:
                break  # nearest first: every later candidate is farther
            if request.filter != "none" and groups[int(j)] != own_groups[key]:  # type: ignore[index]
                continue
            chosen.append(int(j))
        out[key] = chosen
        empty += not chosen
    if empty:
        logger.warning(
            "%d of %d texts have no neighbour inside the cut-off; they keep their base attribution", empty, len(ids)
        )
    return NeighbourSelection(out, epsilon, empty, m)
