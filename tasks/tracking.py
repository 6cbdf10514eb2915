"""MLflow tracking: one parent run per flow run, one child run per stage.

MLflow's active run is thread-local and Prefect runs tasks in worker threads, so everything
goes through ``MlflowClient`` with explicit run ids.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from mlflow.utils.time import get_current_time_millis

from tasks.results import StageResult

_MAX_PARAM = 6000


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
) -> str:
    """Create the flow's parent run, log the resolved config as params and ``config.json``."""
    client = MlflowClient(tracking_uri)
    run = client.create_run(experiment_id(client, experiment, artifact_location), run_name=run_name, tags=dict(tags))
    _log(client, run.info.run_id, flatten(config), {}, {})
    client.log_dict(run.info.run_id, dict(config), "config.json")
    return str(run.info.run_id)


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


def log_files(tracking_uri: str, run_id: str, files: Mapping[str, Path]) -> None:
    """Attach files to a run under the given artifact sub-directories."""
    client = MlflowClient(tracking_uri)
    for subdir, path in files.items():
        client.log_artifact(run_id, str(path), subdir or None)


def log_text(tracking_uri: str, run_id: str, text: str, name: str) -> None:
    """Attach a text file (e.g. a markdown table) to a run."""
    MlflowClient(tracking_uri).log_text(run_id, text, name)


def finish_parent_run(
    tracking_uri: str, run_id: str, metrics: Mapping[str, float], *, status: str = "FINISHED"
) -> None:
    """Log the run's headline metrics and close it."""
    client = MlflowClient(tracking_uri)
    _log(client, run_id, {}, metrics, {})
    client.set_terminated(run_id, status)


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
