"""The flow's task runner, chosen by ``runner`` in the settings: sequential, a thread pool, or Dask."""

from __future__ import annotations

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
            "dashboard_address": ":0",
            # Keep task results in memory: a spilling worker creates ``<local dir>/storage/`` and
            # distributed puts that local dir first on the worker's sys.path, so ``import storage``
            # found the empty spill folder (a namespace package) before our package whenever the
            # package is importable only through the editable install's finder (ImportError:
            # cannot import name 'ArtifactRef' from 'storage' (unknown location)).
            "data": dict,
        },
    )
