"""The train flow's record of its fine-tune stage (:mod:`tasks.fine_tune`): summary and MLflow history."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from mlflow.utils.time import get_current_time_millis

from tasks.results import StageResult
from xattr.training.trainer import load_train_result


def training_summary(trained: StageResult) -> dict[str, Any]:
    """The train flow's JSON-able summary of a :func:`tasks.fine_tune.fine_tune_stage` result.

    Returns:
        Paths, task, classes, sizes, dropped rows, epochs, seconds, the best epoch's validation
        metrics and the per-epoch history (from the training report saved with the model).
    """
    result = load_train_result(trained.params["model_path"])
    dropped = {
        k.removeprefix("rows_dropped/"): int(v) for k, v in trained.metrics.items() if k.startswith("rows_dropped/")
    }
    return {
        "output_dir": str(result.output_dir),
        "task": result.task,
        "num_labels": result.num_labels,
        "id2label": {str(k): v for k, v in result.id2label.items()},
        "train_rows": result.train_rows,
        "validation_rows": result.validation_rows,
        "rows_dropped": dropped,
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early,
        "seconds": result.seconds,
        "metrics": result.metrics,
        "history": [asdict(record) for record in result.history],
    }


def log_history(tracking_uri: str, run_id: str, history: list[dict[str, Any]]) -> None:
    """Per-epoch metrics on an MLflow run: ``validation/<metric>`` and ``train/<loss term>``, step = epoch."""
    now = get_current_time_millis()
    metrics = []
    for record in history:
        epoch = int(record["epoch"])
        for key, value in record["validation"].items():
            metrics.append(Metric(f"validation/{key}", float(value), now, epoch))
        for key in ("train_loss", "train_l2", "train_l3"):
            metrics.append(Metric(f"train/{key.removeprefix('train_')}", float(record[key]), now, epoch))
    MlflowClient(tracking_uri).log_batch(run_id, metrics=metrics)


def log_directory(tracking_uri: str, run_id: str, directory: Path, artifact_path: str) -> None:
    """Attach a whole directory (the trained model) to an MLflow run under ``artifact_path``."""
    MlflowClient(tracking_uri).log_artifacts(run_id, str(directory), artifact_path)
