"""Every server xattr starts listens on 127.0.0.1 only: read from the listening sockets themselves.

The MLflow UI (``xattr ui``), Prefect's temporary server (``flows.runners.start_prefect_api``) and
the local Dask cluster (scheduler, workers, dashboard) of ``runner.type: dask``.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows.runners import RunnerError, build_task_runner, prefect_api, start_prefect_api
from flows.settings import RunnerSettings
from flows.tracking_ui import free_port, start_mlflow_server, stop_server
from tasks import tracking

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def listening(pid: int) -> set[tuple[str, int]]:
    """Addresses the process and its descendants listen on (TCP, IPv4 and IPv6)."""
    root = psutil.Process(pid)
    found = set()
    for process in [root, *root.children(recursive=True)]:
        try:
            connections = process.net_connections(kind="inet")
        except psutil.NoSuchProcess:
            continue
        found |= {(c.laddr.ip, c.laddr.port) for c in connections if c.status == psutil.CONN_LISTEN}
    return found


def assert_loopback(addresses: set[tuple[str, int]]) -> None:
    assert addresses, "nothing listens"
    exposed = {a for a in addresses if not ipaddress.ip_address(a[0]).is_loopback}
    assert not exposed, f"listening beyond loopback: {sorted(exposed)}"


def test_mlflow_ui_listens_on_loopback_only(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracking.start_parent_run(uri, "xattr", tmp_path / "artifacts", "r", {}, {})
    server = start_mlflow_server(uri, port=free_port())
    try:
        assert_loopback(listening(server.pid))
    finally:
        stop_server(server)


def test_local_dask_cluster_scheduler_workers_and_dashboard_listen_on_loopback_only() -> None:
    from distributed import LocalCluster

    kwargs = build_task_runner(RunnerSettings(type="dask", workers=1)).cluster_kwargs
    with LocalCluster(**kwargs) as cluster:
        dashboard_port = cluster.scheduler.http_server.port
        addresses = listening(psutil.Process().pid)
        assert dashboard_port in {port for _, port in addresses}, "the dashboard is not among the sockets read"
        assert_loopback(addresses)


@pytest.fixture
def no_prefect_api():
    from prefect.server.api.server import SubprocessASGIServer

    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        yield
        SubprocessASGIServer().stop()


def test_temporary_prefect_server_retries_once_and_listens_on_loopback_only(
    no_prefect_api, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.server.api.server import SubprocessASGIServer

    real_start = SubprocessASGIServer.start
    attempts: list[int | None] = []

    def first_attempt_times_out(self, timeout=None):  # noqa: ANN001, ANN202
        attempts.append(timeout)
        if len(attempts) == 1:
            raise RuntimeError("Timed out while attempting to connect to ephemeral Prefect API server.")
        real_start(self, timeout)

    monkeypatch.setattr(SubprocessASGIServer, "start", first_attempt_times_out)
    said: list[str] = []
    url = start_prefect_api(said.append)
    assert url is not None and url.startswith("http://127.0.0.1:")
    assert len(attempts) == 2 and attempts[1] == 2 * attempts[0]
    assert len(said) == 1 and "did not start within" in said[0] and "retrying once" in said[0]
    server = SubprocessASGIServer()
    assert server.server_process is not None and server.api_url == url
    assert_loopback(listening(server.server_process.pid))


def test_temporary_prefect_server_failing_twice_is_one_line(no_prefect_api, monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.server.api.server import SubprocessASGIServer

    def times_out(self, timeout=None):  # noqa: ANN001, ANN202
        raise RuntimeError("Timed out while attempting to connect to ephemeral Prefect API server.\nstdout: ...")

    monkeypatch.setattr(SubprocessASGIServer, "start", times_out)
    with pytest.raises(RunnerError) as caught:
        start_prefect_api(lambda line: None)
    message = str(caught.value)
    assert "\n" not in message and "did not start (twice" in message and "PREFECT_API_URL" in message


def _gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            return True
        time.sleep(0.2)
    return False


def test_prefect_api_serves_the_block_with_its_own_home_and_stops_on_any_exit(tmp_path: Path) -> None:
    from prefect.server.api.server import SubprocessASGIServer

    before = os.environ.get("PREFECT_API_URL")
    with pytest.raises(KeyboardInterrupt), prefect_api(tmp_path / "home", startup_timeout=180) as url:
        assert url.startswith("http://127.0.0.1:") and PREFECT_API_URL.value() == url
        assert os.environ["PREFECT_API_URL"] == url  # what CLI subprocesses and Dask workers inherit
        with urllib.request.urlopen(f"{url}/health", timeout=10) as response:
            assert response.status == 200
        pid = SubprocessASGIServer().server_process.pid
        assert_loopback(listening(pid))
        assert (tmp_path / "home").is_dir()
        raise KeyboardInterrupt  # Ctrl-C inside the block
    assert _gone(pid, 30), "the temporary server outlived its block"
    assert os.environ.get("PREFECT_API_URL") == before


def test_temporary_prefect_server_stops_when_the_process_that_started_it_is_killed(tmp_path: Path) -> None:
    code = (
        "import sys, time\n"
        "from prefect.server.api.server import SubprocessASGIServer\n"
        "from flows.runners import start_prefect_api\n"
        "start_prefect_api()\n"
        "print(SubprocessASGIServer().server_process.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"} | {
        "PREFECT_HOME": str(tmp_path / "home"),
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    }
    starter = subprocess.Popen(
        [sys.executable, "-c", code], cwd=REPO, env=env, stdout=subprocess.PIPE, start_new_session=True
    )
    try:
        line = starter.stdout.readline()
        server = int(line)
        assert psutil.pid_exists(server)
        starter.kill()  # SIGKILL: no atexit handler runs
        starter.wait()
        assert _gone(server, 30), "the temporary server outlived the killed process that started it"
    finally:
        if starter.poll() is None:
            starter.kill()
