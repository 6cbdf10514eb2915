"""``xattr ui``: the MLflow UI over a run's tracking store, on 127.0.0.1, stopped by process id.

The server is MLflow's own ``mlflow server`` (full mlflow: the UI is bundled and works
offline). It is started in a process group of its own, because ``mlflow server`` runs its web
server as a child process: stopping the group stops both, and nothing else.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx

from flows.config_files import installed_command
from tasks.tracking import sqlite_path


class UIError(RuntimeError):
    """The UI cannot be started; the message says why (port, store, server output)."""


def port_in_use(host: str, port: int) -> bool:
    """Whether something already listens on (or holds) ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def start_mlflow_server(
    tracking_uri: str, *, host: str = "127.0.0.1", port: int = 5000, timeout: float = 90.0
) -> subprocess.Popen[bytes]:
    """Start ``mlflow server`` over ``tracking_uri`` and wait until ``/health`` answers.

    Args:
        tracking_uri: The backend store (the runs' ``sqlite:///.../mlflow.db``).
        host: Interface to listen on.
        port: Port to listen on.
        timeout: Seconds to wait for the server to answer.

    Returns:
        The server process (leader of its own process group); stop it with :func:`stop_server`.

    Raises:
        UIError: The port is taken, the SQLite store does not exist, or the server exited or
            did not answer in time (its last output line is quoted).
    """
    database = sqlite_path(tracking_uri)
    if database is not None and not database.is_file():
        raise UIError(f"no MLflow store at {database} (run `xattr run CONFIG` first, or pass --tracking-uri)")
    if port_in_use(host, port):
        raise UIError(f"port {port} on {host} is already in use; choose another with --port")
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"xattr-mlflow-ui-{port}.log"
    command = [
        installed_command("mlflow", UIError, hint=" (install full mlflow)"),
        "server",
        "--backend-store-uri",
        tracking_uri,
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    # MLflow's background job runner (GenAI jobs, eight worker processes) is not needed to view runs.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command,
            cwd=str(database.parent) if database is not None else None,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://{host}:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
            raise UIError(f"mlflow server exited with code {process.returncode}: {lines[-1] if lines else 'no output'}")
        try:
            if httpx.get(f"{url}/health", timeout=2.0).status_code == 200:
                return process
        except httpx.HTTPError:
            pass  # not answering yet: poll again until the deadline
        time.sleep(0.5)
    stop_server(process)
    raise UIError(f"mlflow server did not answer at {url} within {timeout:.0f} s (log: {log})")


#: MLflow 3.17's UI picks the experiment page by a "workflow type" kept in the browser (default GenAI,
#: which opens a traces overview) and ignores the experiment's ``mlflow.experimentKind`` tag; a link
#: carrying ``workflowType=machine_learning`` opens the runs table.
RUNS_TABLE_QUERY = "workflowType=machine_learning"


def runs_table_urls(tracking_uri: str, base_url: str) -> dict[str, str]:
    """Per experiment of the store that has runs, the link that opens it on its runs table."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    return {
        e.name: f"{base_url}/#/experiments/{e.experiment_id}?{RUNS_TABLE_QUERY}"
        for e in client.search_experiments()
        if client.search_runs([e.experiment_id], max_results=1)
    }


def stop_server(process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """Stop the server's process group (SIGTERM, then SIGKILL after ``timeout`` seconds)."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout)
    except ProcessLookupError:
        return
    try:  # the leader is gone; take any child it left behind in its group
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
