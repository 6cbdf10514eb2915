from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from distributed import LocalCluster
from prefect.task_runners import ThreadPoolTaskRunner
from prefect_dask import DaskTaskRunner

from flows.runners import RunnerError, build_task_runner, check_scheduler
from flows.settings import RunnerSettings, SettingsError, load_settings


def test_sequential_and_thread_runners() -> None:
    sequential = build_task_runner(RunnerSettings())
    assert isinstance(sequential, ThreadPoolTaskRunner) and sequential._max_workers == 1
    threads = build_task_runner(RunnerSettings(type="thread", workers=3))
    assert isinstance(threads, ThreadPoolTaskRunner) and threads._max_workers == 3


def test_dask_runner_on_a_local_cluster_of_worker_processes() -> None:
    runner = build_task_runner(RunnerSettings(type="dask", workers=2))
    assert isinstance(runner, DaskTaskRunner)
    assert runner.cluster_class == "distributed.LocalCluster"
    assert runner.cluster_kwargs["n_workers"] == 2 and runner.cluster_kwargs["processes"] is True


def test_dask_runner_at_a_live_scheduler_address() -> None:
    with LocalCluster(n_workers=0, processes=False, dashboard_address=None) as cluster:
        check_scheduler(cluster.scheduler_address, 10)
        runner = build_task_runner(RunnerSettings(type="dask", address=cluster.scheduler_address))
        assert isinstance(runner, DaskTaskRunner) and runner.address == cluster.scheduler_address


def test_a_scheduler_that_does_not_answer_fails_within_the_timeout() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(RunnerError, match=rf"runner.address: the Dask scheduler at 'tcp://127.0.0.1:{port}' did not"):
        build_task_runner(RunnerSettings(type="dask", address=f"tcp://127.0.0.1:{port}", connect_timeout=2))
    assert time.monotonic() - started < 15


def test_unknown_runner_type_is_a_settings_error(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("corpus: {path: x.csv}\nmodel: {path: m}\nrunner: {type: ray}\n")
    with pytest.raises(SettingsError, match="runner.type: Input should be 'sequential', 'thread' or 'dask'"):
        load_settings(config)


_PROBE = """
import sys
sys.path.insert(0, sys.argv[1])
from distributed import Client, LocalCluster
from flows.runners import build_task_runner
from flows.settings import RunnerSettings
sys.path.remove(sys.argv[1])  # the workers find our packages only as an editable install would: not on sys.path


def probe():
    import importlib.util
    return importlib.util.find_spec("storage").origin


if __name__ == "__main__":
    kwargs = {**build_task_runner(RunnerSettings(type="dask", workers=1)).cluster_kwargs, "n_workers": 1}
    with LocalCluster(**kwargs) as cluster, Client(cluster) as client:
        print("origin:", client.submit(probe).result())
"""


def test_a_local_dask_worker_imports_the_storage_package_not_its_spill_folder(tmp_path: Path) -> None:
    """distributed puts the worker's local directory first on sys.path; a spill folder there is named storage."""
    import subprocess
    import sys

    script = tmp_path / "probe.py"
    script.write_text(_PROBE)
    repo = Path(__file__).resolve().parents[3]
    done = subprocess.run(
        [sys.executable, str(script), str(repo)], cwd=tmp_path, capture_output=True, text=True, timeout=240
    )
    origin = next(line for line in done.stdout.splitlines() if line.startswith("origin:"))
    # A namespace package (the spill folder) has no origin; ours is a regular package.
    assert origin.endswith("storage/__init__.py"), done.stdout + done.stderr[-2000:]
