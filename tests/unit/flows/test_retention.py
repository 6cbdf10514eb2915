"""xattr prune: old runs and cache entries go, runs a newer run still points at stay."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.retention import prune_workdir

DAY = 86_400.0
NOW = 1_800_000_000.0


def _file(path: Path, age_days: float, text: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.utime(path, (NOW - age_days * DAY, NOW - age_days * DAY))
    return path


def _run(workdir: Path, run_id: str, age_days: float, uses: list[Path]) -> Path:
    run = workdir / "artifacts" / run_id
    own = _file(run / "attribute-x" / "attributions.parquet", age_days, "rows")
    refs = {f"r{i}": {"path": str(p)} for i, p in enumerate([own, *uses])}
    _file(run / "summary" / "summary.json", age_days, json.dumps({"stages": [{"stage": "s", "refs": refs}]}))
    return run


def _workdir(tmp_path: Path) -> tuple[Path, dict[str, Path]]:
    workdir = tmp_path / "work"
    oldest = _run(workdir, "r1-oldest", 30, [])
    reused = _run(workdir, "r2-reused", 20, [])
    killed = workdir / "artifacts" / "r3-killed"
    _file(killed / "encode_corpus" / "embeddings.parquet", 25)  # no summary: a killed run
    newest = _run(workdir, "r4-newest", 1, [reused / "attribute-x" / "attributions.parquet"])
    _file(workdir / "stage-cache" / "old-key", 15)
    _file(workdir / "stage-cache" / "new-key", 2)
    return workdir, {"oldest": oldest, "reused": reused, "killed": killed, "newest": newest}


def test_prune_keeps_runs_a_newer_run_points_at(tmp_path: Path) -> None:
    workdir, runs = _workdir(tmp_path)
    dry = prune_workdir(workdir, 10, dry_run=True, now=NOW)
    assert dry.removed_runs == [runs["oldest"], runs["killed"]] and dry.kept_runs == [runs["reused"]]
    assert all(p.exists() for p in runs.values())
    gone = [*(runs["oldest"].rglob("*")), *(runs["killed"].rglob("*")), workdir / "stage-cache" / "old-key"]
    expected_bytes = sum(p.stat().st_size for p in gone if p.is_file())
    report = prune_workdir(workdir, 10, now=NOW)
    assert report.freed_bytes == dry.freed_bytes == expected_bytes
    assert not runs["oldest"].exists() and not runs["killed"].exists()
    assert runs["reused"].exists() and runs["newest"].exists()
    assert report.removed_cache_entries == [workdir / "stage-cache" / "old-key"]
    assert (workdir / "stage-cache" / "new-key").exists() and not (workdir / "stage-cache" / "old-key").exists()
    # Once the newest run is old too, nothing points at the reused run any more.
    later = prune_workdir(workdir, 0.5, now=NOW)
    assert later.removed_runs == [runs["reused"], runs["newest"]]


def test_prune_refuses_what_is_not_a_workdir_and_a_negative_age(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no artifacts/ directory"):
        prune_workdir(tmp_path, 1)
    with pytest.raises(ValueError, match="at least 0"):
        prune_workdir(tmp_path, -1)


def test_prune_command(tmp_path: Path) -> None:
    workdir, runs = _workdir(tmp_path)
    result = CliRunner().invoke(app, ["prune", str(workdir), "--older-than", "10000", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "would remove 0 runs and 0 stage-cache entries" in result.output
    result = CliRunner().invoke(app, ["prune", str(tmp_path / "nowhere"), "--older-than", "1"])
    assert result.exit_code == 1 and "no artifacts/ directory" in result.output
