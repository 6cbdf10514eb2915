"""The flow's task runner, chosen by ``runner`` in the settings: sequential, a thread pool, or Dask;
and the temporary Prefect API a run needs when no server is configured.

Everything started here listens on 127.0.0.1 unless the settings ask otherwise: the local Dask
cluster's scheduler, workers and dashboard (``runner.host``), and Prefect's temporary server.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

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
        },
    )


@contextmanager
def dask_limits(settings: RunnerSettings) -> Iterator[None]:
    """Inside the block, a local Dask cluster's scheduler fails a task instead of waiting on dead workers.

    distributed reruns a task whose worker died up to 3 times and keeps a task with no live
    worker waiting forever: a run whose workers died (killed, out of memory, an import error)
    printed nothing and hung. Here the first death fails the task (``allowed-failures: 0``;
    :meth:`flows.runtime.StageRunner.run_sharded` turns it into one line naming the stage) and a
    task left with no worker fails after ``worker_timeout`` seconds. The scheduler of a local
    cluster reads this configuration when the flow starts it; a scheduler at ``address`` keeps
    its own.
    """
    if settings.type != "dask":
        yield
        return
    import dask

    with dask.config.set(
        {
            "distributed.scheduler.allowed-failures": 0,
            "distributed.scheduler.no-workers-timeout": f"{settings.worker_timeout}s",
        }
    ):
        yield


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
    if isinstance(exc, TimeoutError) and "no-workers" in str(exc).lower().replace(" ", "-"):
        return RunnerError(f"{stage}: no Dask worker was alive to run it ({' '.join(str(exc).split())[:200]})")
    return None


def start_prefect_api(log: Callable[[str], None] | None = None) -> str | None:
    """Start Prefect's temporary server (on 127.0.0.1) now when no ``PREFECT_API_URL`` is set; retry once.

    Without a configured server Prefect starts a temporary one at the first flow call and, on a
    fresh ``PREFECT_HOME`` under load, can give up with "Timed out while attempting to connect to
    ephemeral Prefect API server". Started here, a first failure is stopped and retried once with
    twice the time (``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS``); the flow then uses this
    server (Prefect keeps one per process).

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
