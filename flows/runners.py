"""The flow's task runner, chosen by ``runner`` in the settings: sequential, a thread pool, or Dask;
and the temporary Prefect API a run needs when no server is configured.

Everything started here listens on 127.0.0.1 unless the settings ask otherwise: the local Dask
cluster's scheduler, workers and dashboard (``runner.host``), and Prefect's temporary server.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from flows.settings import RunnerSettings


class RunnerError(RuntimeError):
    """The configured task runner cannot be used (e.g. the Dask scheduler does not answer)."""


def check_scheduler(address: str, timeout: float) -> None:
    """Connect to the Dask scheduler at ``address`` once, failing within ``timeout`` seconds.

    Raises:
        RunnerError: The scheduler did not answer in time or refused the connection.
    """
    from distributed import Client

    try:
        client = Client(address, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise RunnerError(
            f"runner.address: the Dask scheduler at {address!r} did not answer within {timeout:g} s ({exc})"
        ) from exc
    client.close()


def build_task_runner(settings: RunnerSettings) -> TaskRunner:
    """The Prefect task runner for ``settings``; shards submitted to it run in parallel.

    ``sequential`` is a one-thread pool; ``dask`` is prefect-dask's ``DaskTaskRunner`` on the
    scheduler at ``address`` (checked first) or on a local cluster of ``workers`` processes.
    """
    if settings.type == "sequential":
        return ThreadPoolTaskRunner(max_workers=1)
    if settings.type == "thread":
        return ThreadPoolTaskRunner(max_workers=settings.workers)
    from prefect_dask import DaskTaskRunner

    if settings.address:
        check_scheduler(settings.address, settings.connect_timeout)
        return DaskTaskRunner(address=settings.address)
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={
            "n_workers": settings.workers,
            "threads_per_worker": 1,
            "processes": True,
            "host": settings.host,
            "dashboard_address": f"{settings.host}:0",  # ":0" would listen on every interface
            # Keep task results in memory: a spilling worker creates ``<local dir>/storage/`` and
            # distributed puts that local dir first on the worker's sys.path, so ``import storage``
            # found the empty spill folder (a namespace package) before our package whenever the
            # package is importable only through the editable install's finder (ImportError:
            # cannot import name 'ArtifactRef' from 'storage' (unknown location)).
            "data": dict,
            # A worker's death fails the task it ran at once (distributed's default reruns it on 3
            # more workers, each of which may die the same way, and a run whose workers died of an
            # import error printed nothing and hung); StageRunner.run_sharded says so in one line.
            # A worker silent for worker_timeout seconds (hung, its machine lost) counts as dead.
            "scheduler_kwargs": {"allowed_failures": 0, "worker_ttl": settings.worker_timeout},
        },
    )


def worker_failure(exc: BaseException, stage: str) -> RunnerError | None:
    """One-line :class:`RunnerError` for a shard whose Dask worker died (``None`` for any other error)."""
    try:
        from distributed.scheduler import KilledWorker
    except ImportError:  # distributed is optional: without it no task ran on a worker
        return None
    if isinstance(exc, KilledWorker):
        return RunnerError(
            f"{stage}: the Dask worker running it died (killed or out of memory); the run stops here. "
            "Finished shards are cached: run again to resume"
        )
    return None


#: Run by ``sys.executable -c`` beside a temporary Prefect server: stops the server when the process
#: that started it is gone. Prefect stops its temporary server at exit (``atexit``), which a SIGKILL
#: or a lost terminal never runs, and nothing else knows the server; no library offers a parent-death
#: signal for a process it does not spawn itself, hence these lines.
_SERVER_WATCHDOG = """
import os, signal, sys, time
parent, server = int(sys.argv[1]), int(sys.argv[2])
def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
while alive(server) and os.getppid() == parent:
    time.sleep(0.5)
if alive(server):
    os.kill(server, signal.SIGTERM)
    for _ in range(20):
        time.sleep(0.25)
        if not alive(server):
            break
    else:
        os.kill(server, signal.SIGKILL)
"""


def _watch_server(server: object) -> None:
    process = getattr(server, "server_process", None)
    if process is None:
        return
    subprocess.Popen(  # noqa: S603 - our own interpreter and code
        [sys.executable, "-c", _SERVER_WATCHDOG, str(os.getpid()), str(process.pid)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def start_prefect_api(log: Callable[[str], None] | None = None) -> str | None:
    """Start Prefect's temporary server (on 127.0.0.1) now when no ``PREFECT_API_URL`` is set; retry once.

    Without a configured server Prefect starts a temporary one at the first flow call and, on a
    fresh ``PREFECT_HOME`` under load, can give up with "Timed out while attempting to connect to
    ephemeral Prefect API server". Started here, a first failure is stopped and retried once with
    twice the time (``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS``); the flow then uses this
    server (Prefect keeps one per process). Prefect stops it when this process exits normally or
    on an exception (Ctrl-C included); a watchdog process stops it when this process is killed.

    Returns:
        The temporary server's API URL, or ``None`` when a server is configured.

    Raises:
        RunnerError: The server did not start on either attempt (one line, with what to do).
    """
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS

    if PREFECT_API_URL.value():
        return None
    log = log or logging.getLogger(__name__).warning
    timeout = int(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value())
    for attempt in (1, 2):
        server = SubprocessASGIServer()
        try:
            server.start(timeout=timeout * attempt)
            _watch_server(server)
            return str(server.api_url)
        except Exception as exc:  # noqa: BLE001 - Prefect raises RuntimeError or HTTP errors; all mean "not up"
            cause = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)[:300]
            server.stop()  # a timed-out start leaves its process running
            if attempt == 2:
                raise RunnerError(
                    f"the temporary Prefect server did not start (twice, {timeout} s then {2 * timeout} s): {cause}; "
                    "start one with `prefect server start --host 127.0.0.1` and set "
                    "PREFECT_API_URL=http://127.0.0.1:4200/api"
                ) from exc
            log(f"the temporary Prefect server did not start within {timeout} s ({cause}); retrying once")
    return None


@contextmanager
def prefect_api(
    home: Path | None = None, log: Callable[[str], None] | None = None, *, startup_timeout: int | None = None
) -> Iterator[str]:
    """A temporary Prefect server for this block, shared with the processes it starts.

    Started by :func:`start_prefect_api` (with its own ``PREFECT_HOME`` when ``home`` is given,
    whatever ``PREFECT_API_URL`` said before); inside the block ``PREFECT_API_URL`` names it, in
    this process' settings and environment (CLI subprocesses, Dask workers); on any exit it is
    stopped and both are restored. What benches and tests use for a standing server.

    Args:
        home: The server's ``PREFECT_HOME`` (its database); default the configured one.
        log: Where a first failed start is reported (default a logging warning).
        startup_timeout: Seconds the first start may take (the second gets twice as long);
            default ``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS``.

    Yields:
        The server's API URL.
    """
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_HOME,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        temporary_settings,
    )

    saved = {key: os.environ.get(key) for key in ("PREFECT_API_URL", "PREFECT_HOME")}
    os.environ.pop("PREFECT_API_URL", None)
    updates: dict = {}
    if home is not None:
        home.mkdir(parents=True, exist_ok=True)
        os.environ["PREFECT_HOME"] = str(home)
        updates[PREFECT_HOME] = str(home)
    if startup_timeout is not None:
        updates[PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS] = startup_timeout
    try:
        with temporary_settings(updates=updates, restore_defaults={PREFECT_API_URL}):
            url = start_prefect_api(log)
        if url is None:  # PREFECT_API_URL is unset above, so only a changed Prefect could get here
            raise RunnerError("Prefect reported a configured server where none was set")
        os.environ["PREFECT_API_URL"] = url
        with temporary_settings(updates={**updates, PREFECT_API_URL: url}):
            yield url
    finally:
        SubprocessASGIServer().stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
