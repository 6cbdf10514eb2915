"""Retention: remove runs and stage-cache entries older than a cut-off from a workdir.

A run directory ``artifacts/<run id>/`` is old when nothing in it was written after the cut-off.
It is kept anyway while a run that is not old still points into it: a cached stage of a newer
run serves artifacts written by an older run, and every run lists the artifacts of all its
stages, cached or not, in ``summary/summary.json``. A run without a summary (killed or failed)
points only into its own directory. Stage-cache entries (``stage-cache/``) older than the
cut-off are removed; a newer one whose artifacts were removed is recomputed by the stage runner
(``flows.runtime.StageRunner``), so removing never breaks a later run.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class PruneReport:
    """What :func:`prune_workdir` removed (or would remove, on a dry run) and what it kept.

    Attributes:
        removed_runs: Run directories removed.
        kept_runs: Old run directories kept because a newer run points into them.
        removed_cache_entries: Stage-cache files removed.
        freed_bytes: Bytes of the removed files.
    """

    removed_runs: list[Path] = field(default_factory=list)
    kept_runs: list[Path] = field(default_factory=list)
    removed_cache_entries: list[Path] = field(default_factory=list)
    freed_bytes: int = 0


def _newest_mtime(directory: Path) -> float:
    times = [p.stat().st_mtime for p in directory.rglob("*") if p.is_file()]
    return max(times, default=directory.stat().st_mtime)


def _referenced_paths(run_dir: Path) -> set[Path]:
    """Every artifact path the run's summary names (its own and those its cached stages reused)."""
    summary = run_dir / "summary" / "summary.json"
    if not summary.is_file():
        return set()
    try:
        payload = json.loads(summary.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{summary}: cannot read the run summary ({exc}); fix or remove it before pruning") from exc
    return {
        Path(ref["path"]).resolve()
        for stage in payload.get("stages", [])
        for ref in stage.get("refs", {}).values()
        if isinstance(ref, dict) and "path" in ref
    }


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def prune_workdir(
    workdir: Path, older_than_days: float, *, dry_run: bool = False, now: float | None = None
) -> PruneReport:
    """Remove from ``workdir`` the runs and stage-cache entries older than ``older_than_days``.

    Args:
        workdir: A flow workdir (holding ``artifacts/`` and ``stage-cache/``).
        older_than_days: The cut-off age in days (at least 0).
        dry_run: Report only; remove nothing.
        now: The current time (seconds since the epoch; default: now).

    Raises:
        ValueError: A negative age, a workdir without ``artifacts/``, or an unreadable run summary.
    """
    if older_than_days < 0:
        raise ValueError(f"older_than_days must be at least 0, got {older_than_days}")
    artifacts = workdir / "artifacts"
    if not artifacts.is_dir():
        raise ValueError(f"{workdir}: no artifacts/ directory; is this a flow workdir?")
    cutoff = (time.time() if now is None else now) - older_than_days * 86_400
    runs = sorted(p for p in artifacts.iterdir() if p.is_dir())
    old = {run for run in runs if _newest_mtime(run) < cutoff}
    wanted: set[Path] = set()
    for run in runs:
        if run not in old:
            wanted |= _referenced_paths(run)
    report = PruneReport()
    for run in sorted(old):
        root = run.resolve()
        if any(path == root or root in path.parents for path in wanted):
            report.kept_runs.append(run)
            continue
        report.removed_runs.append(run)
        report.freed_bytes += _size(run)
        if not dry_run:
            shutil.rmtree(run)
    cache = workdir / "stage-cache"
    if cache.is_dir():
        for entry in sorted(p for p in cache.rglob("*") if p.is_file()):
            if entry.stat().st_mtime < cutoff:
                report.removed_cache_entries.append(entry)
                report.freed_bytes += entry.stat().st_size
                if not dry_run:
                    entry.unlink()
    return report
