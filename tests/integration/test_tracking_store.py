"""The MLflow store cannot break a work directory: concurrent first runs, failed migrations,
read-only or corrupt stores, and runs left RUNNING by killed processes (issue "Hardening", 3)."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from storage import TrackingStoreError, WorkdirError, writable_directory
from tasks import tracking

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _uri(workdir: Path) -> str:
    return f"sqlite:///{workdir / 'mlflow.db'}"


def _start(workdir: Path, name: str = "run") -> str:
    return tracking.start_parent_run(_uri(workdir), "xattr", workdir / "mlflow-artifacts", name, {"a": 1}, {})


def _first_run(workdir: str, barrier, results) -> None:  # noqa: ANN001 - multiprocessing objects
    barrier.wait()
    try:
        run = _start(Path(workdir), f"run-{os.getpid()}")
        tracking.finish_parent_run(_uri(Path(workdir)), run, {"x": 1.0})
        results.put("ok")
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        results.put(f"{type(exc).__name__}: {exc}")


def test_concurrent_first_runs_on_a_fresh_workdir_all_succeed(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    processes = 4
    barrier, results = context.Barrier(processes), context.Queue()
    workers = [context.Process(target=_first_run, args=(str(tmp_path), barrier, results)) for _ in range(processes)]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=300) for _ in workers]
    for worker in workers:
        worker.join(60)
    assert outcomes == ["ok"] * processes
    client = MlflowClient(_uri(tmp_path))
    experiment = client.get_experiment_by_name("xattr")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == processes and {r.info.status for r in runs} == {"FINISHED"}


def test_a_migration_that_fails_half_way_leaves_no_store_and_the_next_run_succeeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import alembic.command
    from alembic.script import ScriptDirectory
    from mlflow.store.db.utils import _get_alembic_config

    real_upgrade = alembic.command.upgrade

    def upgrade_then_fill_the_disk(config, revision, *args, **kwargs):  # noqa: ANN001, ANN202
        revisions = list(ScriptDirectory.from_config(config).walk_revisions())
        real_upgrade(config, revisions[len(revisions) // 2].revision, *args, **kwargs)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(alembic.command, "upgrade", upgrade_then_fill_the_disk)
    assert _get_alembic_config  # the migration path the store takes
    with pytest.raises(TrackingStoreError) as caught:
        _start(tmp_path)
    message = str(caught.value)
    assert "\n" not in message and str(tmp_path / "mlflow.db") in message and "No space left on device" in message
    assert not (tmp_path / "mlflow.db").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith((".tmp", "-journal"))] == []

    monkeypatch.setattr(alembic.command, "upgrade", real_upgrade)
    run = _start(tmp_path)
    assert MlflowClient(_uri(tmp_path)).get_run(run).info.status == "RUNNING"


def test_a_store_that_is_not_a_database_is_one_line_naming_mlflow_db(tmp_path: Path) -> None:
    (tmp_path / "mlflow.db").write_bytes(b"this is not sqlite" * 100)
    started = time.monotonic()
    with pytest.raises(TrackingStoreError) as caught:
        _start(tmp_path)
    message = str(caught.value)
    assert message.startswith(f"MLflow store {tmp_path / 'mlflow.db'}: ") and "\n" not in message
    assert "not a database" in message
    assert time.monotonic() - started < 30


@pytest.fixture
def read_only_dir(tmp_path: Path):
    """A directory nobody can write: a read-only tmpfs as root (chmod does not stop root), else mode 0555."""
    directory = tmp_path / "ro"
    directory.mkdir()
    if os.geteuid() != 0:
        directory.chmod(0o555)
        yield directory
        directory.chmod(0o755)
        return
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(directory)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"running as root and cannot mount a read-only tmpfs: {mounted.stderr.decode().strip()}")
    try:
        yield directory
    finally:
        subprocess.run(["umount", str(directory)], check=True)


def test_a_read_only_workdir_is_refused_up_front_in_one_line(read_only_dir: Path) -> None:
    started = time.monotonic()
    with pytest.raises(WorkdirError) as caught:
        writable_directory(read_only_dir / "work")
    assert str(caught.value).startswith(f"work directory {read_only_dir / 'work'}: ")
    with pytest.raises(WorkdirError, match="is not writable"):
        writable_directory(read_only_dir)
    with pytest.raises(TrackingStoreError) as store:
        _start(read_only_dir)
    assert str(read_only_dir / "mlflow.db") in str(store.value) and "\n" not in str(store.value)
    assert time.monotonic() - started < 30  # no minutes of engine retries


_KILLED_CHILD = """
import os, signal, sys
from pathlib import Path
from tasks import tracking
workdir = Path(sys.argv[1])
run = tracking.start_parent_run(f"sqlite:///{workdir / 'mlflow.db'}", "xattr", workdir / "a", "doomed", {}, {})
print(run, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_run_left_running_by_a_killed_process_is_marked_killed_at_the_next_start(tmp_path: Path) -> None:
    child = subprocess.run(
        [sys.executable, "-c", _KILLED_CHILD, str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    doomed = child.stdout.split()[-1]
    client = MlflowClient(_uri(tmp_path))
    assert client.get_run(doomed).info.status == "RUNNING"
    alive = _start(tmp_path, "alive")  # this process is alive: its run must stay RUNNING
    assert client.get_run(doomed).info.status == "KILLED"
    _start(tmp_path, "next")
    assert client.get_run(alive).info.status == "RUNNING"
