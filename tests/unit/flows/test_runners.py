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
