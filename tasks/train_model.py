"""Stage: fine-tune a model on a corpus (optionally with LDAV class vectors) and save its directory."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from mlflow.utils.time import get_current_time_millis
from prefect import task
from prefect.logging import get_run_logger

from tasks.progress import StageProgress
from xattr.data.corpus import CorpusColumns
from xattr.training.data import labelled_corpus, rows_of
from xattr.training.recipe import holdout_split
from xattr.training.trainer import TrainConfig, TrainResult, train_model
from xattr.types import TaskName


@task(name="train_model", task_run_name="train-{name}")
def train_model_stage(
    name: str,
    corpus_path: Path,
    columns: CorpusColumns,
    base_model: str,
    output_dir: Path,
    config: TrainConfig,
    *,
    task_name: TaskName | None = None,
    validation_path: Path | None = None,
    validation_fraction: float = 0.1,
    split_seed: int = 0,
    empty_texts: str = "error",
    missing_labels: str = "error",
) -> dict[str, Any]:
    """Read the corpus, split it, train and return a JSON-able summary (paths, sizes, history).

    Training is never cached: a model directory is an output that is never overwritten.
    """
    logger = get_run_logger()
    data = labelled_corpus(corpus_path, columns, task=task_name, empty_texts=empty_texts, missing_labels=missing_labels)
    frame = data.corpus.frame
    if validation_path is not None:
        validation_data = labelled_corpus(
            validation_path,
            columns,
            task=data.task,
            id2label=data.id2label if data.task != "regression" else None,
            empty_texts=empty_texts,
            missing_labels=missing_labels,
        )
        train_rows, validation_rows = rows_of(frame), rows_of(validation_data.corpus.frame)
    else:
        train_idx, val_idx = holdout_split(len(frame), validation_fraction, split_seed)
        train_rows = rows_of(frame, train_idx)
        validation_rows = rows_of(frame, val_idx) if len(val_idx) else None
    logger.info(
        "training %s (%d classes) on %d rows, validating on %d; LDAV %s",
        data.task,
        data.num_labels,
        len(train_rows),
        len(validation_rows) if validation_rows else 0,
        "on" if config.ldav.enabled else "off",
    )
    bar = StageProgress(f"train-{name}")
    result: TrainResult = train_model(
        base_model,
        train_rows,
        output_dir,
        task=data.task,
        num_labels=data.num_labels,
        validation=validation_rows,
        id2label=data.id2label or None,
        config=config,
        progress=lambda step, total, loss: bar(step, total),
    )
    return {
        "output_dir": str(result.output_dir),
        "task": result.task,
        "num_labels": data.num_labels,
        "id2label": {str(k): v for k, v in data.id2label.items()},
        "train_rows": result.train_rows,
        "validation_rows": result.validation_rows,
        "rows_dropped": data.corpus.dropped,
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
