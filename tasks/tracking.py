"""MLflow tracking: one parent run per flow run, one child run per stage.

MLflow's active run is thread-local and Prefect runs tasks in worker threads, so everything
goes through ``MlflowClient`` with explicit run ids.

The SQLite store is made safe to share (:func:`start_parent_run`): it is created under a file
lock next to it, built aside and renamed into place (so a failure mid-migration, a full disk
say, leaves no half-migrated ``mlflow.db``), the experiment is created under the same lock (two
first runs on one work directory both succeed), and a run left RUNNING by a process that died
(its ``xattr.pid``/``xattr.host`` tags) is marked KILLED. Store failures are one line
(:class:`storage.TrackingStoreError`) naming ``mlflow.db`` and the cause.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import logging
import os
import secrets
import socket
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import psutil
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.time import get_current_time_millis
from sqlalchemy.exc import SQLAlchemyError

from storage import TrackingStoreError
from tasks.results import StageResult

logger = logging.getLogger(__name__)

_MAX_PARAM = 6000
_PID_TAG, _HOST_TAG, _STARTED_TAG = "xattr.pid", "xattr.host", "xattr.process_started"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (four slashes before an absolute path), else ``None``."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return None
    return Path(unquote(uri[len(prefix) :].partition("?")[0]))


def _store_name(uri: str) -> str:
    database = sqlite_path(uri)
    return str(database) if database is not None else uri


def _cause(exc: BaseException) -> str:
    """The error's own first line (SQLAlchemy's driver message, not the statement it ran)."""
    inner = getattr(exc, "orig", None) or exc
    text = (getattr(inner, "strerror", None) if isinstance(inner, OSError) else None) or str(inner)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return f"{type(inner).__name__}: {lines[0][:300] if lines else ''}"


@contextlib.contextmanager
def store_errors(tracking_uri: str) -> Iterator[None]:
    """Turn MLflow, SQLAlchemy and OS errors inside into one-line :class:`storage.TrackingStoreError`."""
    try:
        yield
    except TrackingStoreError:
        raise
    except (MlflowException, SQLAlchemyError, OSError) as exc:
        raise TrackingStoreError(_store_name(tracking_uri), _cause(exc)) from exc


def _translated(function: Callable[..., Any]) -> Callable[..., Any]:
    """Run a ``(tracking_uri, ...)`` function under :func:`store_errors`."""

    @functools.wraps(function)
    def wrapper(tracking_uri: str, *args: Any, **kwargs: Any) -> Any:
        with store_errors(tracking_uri):
            return function(tracking_uri, *args, **kwargs)

    return wrapper


@contextlib.contextmanager
def _store_lock(tracking_uri: str) -> Iterator[None]:
    """An exclusive lock on ``.mlflow.db.lock`` beside a SQLite store (no lock for other stores)."""
    database = sqlite_path(tracking_uri)
    if database is None:
        yield
        return
    database.parent.mkdir(parents=True, exist_ok=True)
    with open(database.with_name(f".{database.name}.lock"), "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def _build_store(database: Path, artifact_root: Path) -> None:
    """Create and migrate a fresh SQLite store aside, then rename it to ``database``.

    MLflow creates a new store by running every schema migration; interrupted (a full disk, a
    kill) that leaves a database later runs cannot open. Built under a temporary name, the store
    appears complete or not at all.
    """
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    temporary = database.with_name(f".{database.name}.{secrets.token_hex(8)}.tmp")
    uri = f"sqlite:///{temporary}"
    try:
        SqlAlchemyStore(uri, artifact_root.resolve().as_uri())
        engine = getattr(SqlAlchemyStore, "_engine_map", {}).pop(uri, None)
        if engine is not None:
            engine.dispose()
        os.replace(temporary, database)
    finally:
        for leftover in (temporary, temporary.with_name(temporary.name + "-journal")):
            leftover.unlink(missing_ok=True)


def _process_started(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def _alive(tags: Mapping[str, str]) -> bool:
    """Whether the process that started a run (by its tags) is still running on this host."""
    try:
        pid, started = int(tags[_PID_TAG]), float(tags[_STARTED_TAG])
    except (KeyError, ValueError):
        return True  # not ours to judge
    now = _process_started(pid)
    return now is not None and abs(now - started) < 1.0  # a reused pid has another start time


def mark_dead_runs(client: MlflowClient, experiment: str) -> list[str]:
    """Mark KILLED every RUNNING run of this host whose process is gone (and its RUNNING children).

    Returns:
        The ids of the runs marked.
    """
    host = socket.gethostname()
    running = client.search_runs(
        [experiment], f"attributes.status = 'RUNNING' and tags.`{_HOST_TAG}` = '{host}'", max_results=1000
    )
    marked = []
    for run in running:
        if _alive(run.data.tags):
            continue
        children = client.search_runs(
            [experiment], f"attributes.status = 'RUNNING' and tags.`mlflow.parentRunId` = '{run.info.run_id}'"
        )
        for stale in [*children, run]:
            client.set_tag(stale.info.run_id, "xattr.killed", f"process {run.data.tags[_PID_TAG]} on {host} died")
            client.set_terminated(stale.info.run_id, "KILLED")
            marked.append(str(stale.info.run_id))
    return marked


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": "1"}``; lists become JSON."""
    out: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            out[name] = text[:_MAX_PARAM]
    return out


#: Experiment tag telling MLflow 3's UI that runs are model runs (runs table), not a GenAI app (traces overview).
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def experiment_id(client: MlflowClient, name: str, artifact_location: Path) -> str:
    """The experiment's id, creating it with artifacts under ``artifact_location`` if needed.

    The experiment is tagged :data:`EXPERIMENT_KIND` (also when it exists without the tag).
    """
    found = client.get_experiment_by_name(name)
    if found is not None:
        if any(found.tags.get(key) != value for key, value in EXPERIMENT_KIND.items()):
            for key, value in EXPERIMENT_KIND.items():
                client.set_experiment_tag(found.experiment_id, key, value)
        return str(found.experiment_id)
    location = artifact_location.resolve().as_uri()
    return str(client.create_experiment(name, artifact_location=location, tags=dict(EXPERIMENT_KIND)))


def _log(
    client: MlflowClient, run_id: str, params: Mapping[str, str], metrics: Mapping[str, float], tags: Mapping[str, str]
) -> None:
    now = get_current_time_millis()
    logged = []
    for key, value in metrics.items():
        name, _, step = key.partition("@")
        logged.append(Metric(name, float(value), now, int(step) if step else 0))
    client.log_batch(
        run_id,
        metrics=logged,
        params=[Param(k, str(v)[:_MAX_PARAM]) for k, v in params.items()],
        tags=[RunTag(k, str(v)) for k, v in tags.items()],
    )


def start_parent_run(
    tracking_uri: str,
    experiment: str,
    artifact_location: Path,
    run_name: str,
    config: Mapping[str, Any],
    tags: Mapping[str, str],
    *,
    log: Callable[[str], None] = logger.warning,
) -> str:
    """Create the flow's parent run, log the resolved config as params and ``config.json``.

    A missing SQLite store is built first (aside, under the store's lock), the experiment is
    found or created under that lock, and runs left RUNNING by dead processes are marked KILLED.
    The run is tagged with this process' id, start time and host, so a later start can tell.

    Args:
        log: Called with one line per run marked KILLED.

    Returns:
        The run id.

    Raises:
        TrackingStoreError: The store cannot be created, opened or written (one line).
    """
    with store_errors(tracking_uri):
        with _store_lock(tracking_uri):
            database = sqlite_path(tracking_uri)
            if database is not None and not database.exists():
                _build_store(database, artifact_location)
            client = MlflowClient(tracking_uri)
            experiment_key = experiment_id(client, experiment, artifact_location)
            for killed in mark_dead_runs(client, experiment_key):
                log(f"MLflow run {killed} was left RUNNING by a process that died; marked KILLED")
        pid = os.getpid()
        process = {_PID_TAG: str(pid), _HOST_TAG: socket.gethostname(), _STARTED_TAG: repr(_process_started(pid))}
        run = client.create_run(experiment_key, run_name=run_name, tags={**dict(tags), **process})
        _log(client, run.info.run_id, flatten(config), {}, {})
        client.log_dict(run.info.run_id, dict(config), "config.json")
    return str(run.info.run_id)


@_translated
def log_stage(tracking_uri: str, parent_run_id: str, result: StageResult, *, cached: bool) -> str:
    """One child run for a stage: its params, metrics, artifact references and cache status.

    A metric key ``"name@step"`` is logged as metric ``name`` at that step (curves over the
    removal percentage).
    """
    client = MlflowClient(tracking_uri)
    parent = client.get_run(parent_run_id)
    child = client.create_run(
        parent.info.experiment_id,
        run_name=result.stage,
        tags={"mlflow.parentRunId": parent_run_id, "xattr.stage": result.stage, "xattr.cache_hit": str(cached).lower()},
    )
    metrics = dict(result.metrics)
    metrics["seconds"] = result.seconds
    _log(client, child.info.run_id, result.params, metrics, {})
    client.log_dict(child.info.run_id, {name: ref.to_dict() for name, ref in result.refs.items()}, "artifact_refs.json")
    if result.notes:
        client.log_text(child.info.run_id, "\n".join(result.notes) + "\n", "notes.txt")
    for path in result.files.values():
        client.log_artifact(child.info.run_id, path, "files")
    client.set_terminated(child.info.run_id, "FINISHED")
    return str(child.info.run_id)


@_translated
def log_files(tracking_uri: str, run_id: str, files: Mapping[str, Path]) -> None:
    """Attach files to a run under the given artifact sub-directories."""
    client = MlflowClient(tracking_uri)
    for subdir, path in files.items():
        client.log_artifact(run_id, str(path), subdir or None)


@_translated
def log_text(tracking_uri: str, run_id: str, text: str, name: str) -> None:
    """Attach a text file (e.g. a markdown table) to a run."""
    MlflowClient(tracking_uri).log_text(run_id, text, name)


@_translated
def finish_parent_run(
    tracking_uri: str, run_id: str, metrics: Mapping[str, float], *, status: str = "FINISHED"
) -> None:
    """Log the run's headline metrics and close it."""
    client = MlflowClient(tracking_uri)
    _log(client, run_id, {}, metrics, {})
    client.set_terminated(run_id, status)


@_translated
def log_child_run(
    tracking_uri: str,
    parent_run_id: str,
    run_name: str,
    params: Mapping[str, Any],
    metrics: Mapping[str, float],
    *,
    tags: Mapping[str, str] | None = None,
    files: Mapping[str, Path] | None = None,
) -> str:
    """One finished child run with flattened params, metrics (``"name@step"`` as steps) and files."""
    client = MlflowClient(tracking_uri)
    parent = client.get_run(parent_run_id)
    child = client.create_run(
        parent.info.experiment_id,
        run_name=run_name,
        tags={"mlflow.parentRunId": parent_run_id, **dict(tags or {})},
    )
    _log(client, child.info.run_id, flatten(params), metrics, {})
    for subdir, path in (files or {}).items():
        client.log_artifact(child.info.run_id, str(path), subdir or None)
    client.set_terminated(child.info.run_id, "FINISHED")
    return str(child.info.run_id)
