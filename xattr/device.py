"""Device choice (CUDA when present, CPU otherwise) and batch sizes from free device memory."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch


def pick_device(requested: str | None = None) -> torch.device:
    """Return the device to run models on.

    Args:
        requested: ``"cuda"``, ``"cpu"``, ``"cuda:1"`` or ``None``/``"auto"`` for CUDA when
            available, else CPU.

    Returns:
        The chosen ``torch.device``.

    Raises:
        ValueError: CUDA was requested but is not available.
    """
    if requested in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {requested!r} requested but CUDA is not available here")
    return device


class MemoryStats(Protocol):
    """The part of ``torch.cuda`` that measures a device's memory (tests pass a stand-in)."""

    def mem_get_info(self, device: torch.device) -> tuple[int, int]: ...

    def synchronize(self, device: torch.device) -> None: ...

    def reset_peak_memory_stats(self, device: torch.device) -> None: ...

    def memory_allocated(self, device: torch.device) -> int: ...

    def max_memory_allocated(self, device: torch.device) -> int: ...

    def memory_reserved(self, device: torch.device) -> int: ...


@dataclass(frozen=True)
class BatchCost:
    """Device memory one batch needs: ``fixed_bytes + rows * per_text_bytes``.

    Attributes:
        per_text_bytes: Bytes each text of the batch adds (activations, gradients).
        fixed_bytes: Bytes a batch needs whatever its size (workspaces).
    """

    per_text_bytes: int
    fixed_bytes: int = 0


def batch_size_for_memory(
    free_bytes: int, cost: BatchCost, *, headroom: float = 0.8, multiple: int = 8, limit: int | None = None
) -> int:
    """Most texts per batch whose memory fits in ``headroom`` of ``free_bytes``.

    Args:
        free_bytes: Free device memory (``torch.cuda.mem_get_info``'s first value).
        cost: What a batch needs (see :func:`measure_batch_cost`).
        headroom: Share of the free memory a batch may take (the allocator fragments the rest).
        multiple: Round down to a multiple of this (tensor cores work in multiples of 8).
        limit: Largest batch size wanted (``None``: no limit).

    Returns:
        At least 1, at most ``limit``.

    Raises:
        ValueError: A non-positive per-text cost or multiple, or a headroom outside (0, 1].
    """
    if cost.per_text_bytes <= 0 or multiple < 1:
        raise ValueError(f"per-text bytes and multiple must be positive, got {cost.per_text_bytes} and {multiple}")
    if not 0.0 < headroom <= 1.0:
        raise ValueError(f"headroom must be in (0, 1], got {headroom}")
    rows = int((headroom * free_bytes - cost.fixed_bytes) // cost.per_text_bytes)
    if rows >= multiple:
        rows -= rows % multiple
    rows = max(1, rows)
    return rows if limit is None else max(1, min(rows, limit))


def measure_batch_cost(
    run: Callable[[int], object], device: torch.device, *, rows: int = 16, memory: MemoryStats | None = None
) -> BatchCost:
    """What a batch costs on a CUDA device, from the peak memory of two probe batches.

    ``run(r)`` runs one batch of ``r`` texts; it is called with ``rows`` and ``2 * rows``, and
    the per-text cost is the difference of the two peaks (above what was allocated before) over
    ``rows``, the fixed cost what remains of the first peak.

    Args:
        run: Runs a batch of the given number of texts on ``device``.
        device: A CUDA device.
        rows: Texts in the smaller probe batch.
        memory: The memory statistics (``torch.cuda`` when ``None``).

    Raises:
        ValueError: ``device`` is not a CUDA device, or ``rows`` is below 1.
    """
    if device.type != "cuda":
        raise ValueError(f"memory can only be measured on a CUDA device, not {device}")
    if rows < 1:
        raise ValueError(f"rows must be at least 1, got {rows}")
    stats: MemoryStats = memory if memory is not None else torch.cuda  # type: ignore[assignment]
    peaks = []
    for r in (rows, 2 * rows):
        stats.synchronize(device)
        before = stats.memory_allocated(device)
        stats.reset_peak_memory_stats(device)
        run(r)
        stats.synchronize(device)
        peaks.append(max(0, stats.max_memory_allocated(device) - before))
    per_text = max(1, (peaks[1] - peaks[0]) // rows)
    return BatchCost(per_text, max(0, peaks[0] - rows * per_text))


def free_memory(device: torch.device, *, memory: MemoryStats | None = None) -> int | None:
    """Bytes torch can still allocate on a CUDA device, ``None`` on any other (its batches are not sized from memory).

    The device's free memory plus what torch's caching allocator holds reserved but unused (the
    device counts that as taken, torch reuses it).
    """
    if device.type != "cuda":
        return None
    stats: MemoryStats = memory if memory is not None else torch.cuda  # type: ignore[assignment]
    cached = max(0, stats.memory_reserved(device) - stats.memory_allocated(device))
    return int(stats.mem_get_info(device)[0]) + cached
