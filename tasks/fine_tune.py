"""Stage: fine-tune a base model, or reuse the model fine-tuned before on the same content.

The one place in ``tasks/`` and ``flows/`` that fine-tunes (the benchmark, price-driver, train and
demo flows all call it). A model lives in ``<models_dir>/<name>-<key>/``, where the key hashes the
base model's files, the training rows' content and every training setting (:func:`fine_tune_key`),
and is reused when that directory holds its training report. A model trained into a named
``output_dir`` (the train flow) is never reused nor overwritten.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect.logging import get_run_logger

from storage import ArtifactRef, inside, read_artifact
from tasks.caching import canonical, stage_cache_key, stage_task
from tasks.progress import StageProgress
from tasks.results import StageResult
from xattr.data.corpus import CorpusColumns
from xattr.training.data import class_count, labelled_corpus, rows_of
from xattr.training.trainer import (
    TRAINING_REPORT,
    TrainConfig,
    TrainingRows,
    TrainResult,
    load_train_result,
    train_model,
)
from xattr.types import TaskName, TrainingProgress


@dataclass(frozen=True)
class CorpusFile:
    """Training rows in a corpus file, read by :func:`xattr.training.data.labelled_corpus`.

    Attributes:
        path: Parquet, CSV or JSONL file.
        columns: Which columns hold what (``columns.label`` is required).
        validation_path: Validation rows in a file with the same columns (then the
            ``TrainConfig.validation_fraction`` must be ``None``).
        empty_texts: ``error`` or ``drop`` rows with empty texts.
        missing_labels: ``error`` or ``drop`` rows without a label.
    """

    path: Path
    columns: CorpusColumns
    validation_path: Path | None = None
    empty_texts: str = "error"
    missing_labels: str = "error"


@dataclass(frozen=True)
class _Rows:
    train: TrainingRows
    validation: TrainingRows | None
    task: TaskName
    num_labels: int
    id2label: dict[int, str]
    dropped: dict[str, int] = field(default_factory=dict)


def fine_tune_key(
    rows: ArtifactRef | CorpusFile,
    base_model: Path,
    task: TaskName | None,
    num_labels: int | None,
    config: TrainConfig,
) -> str:
    """Content hash of what a fine-tuned model depends on.

    The base model's files (names and bytes), the training rows (an artifact's SHA-256, or the
    corpus and validation files' bytes with their columns and reading policies), the task, the
    number of outputs and every :class:`TrainConfig` field. Code is not part of it: a change of the
    library does not retrain the models.
    """
    payload = {"base": base_model, "rows": rows, "task": task, "num_labels": num_labels, "config": config}
    text = json.dumps(canonical(payload), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _cache_key(context: Any, parameters: dict[str, Any]) -> str | None:
    """Prefect's cross-run key; a model trained into a named ``output_dir`` is never served from cache."""
    if parameters.get("output_dir") is not None:
        return None
    return stage_cache_key(context, parameters)


@stage_task(name="fine_tune", task_run_name="{stage}", key=_cache_key)
def fine_tune_stage(
    rows: ArtifactRef | CorpusFile,
    base_model: Path,
    config: TrainConfig,
    models_dir: str | None = None,
    *,
    task: TaskName | None = None,
    num_labels: int | None = None,
    name: str = "model",
    stage: str = "fine_tune",
    output_dir: str | None = None,
    progress: TrainingProgress | None = None,
) -> StageResult:
    """Fine-tune ``base_model`` on ``rows`` (:func:`xattr.training.trainer.train_model`), or reuse the model.

    Args:
        rows: A canonical corpus artifact (``text``, ``text_pair``, ``label``, ``label_set``) or a
            corpus file.
        base_model: Local encoder directory with its tokenizer.
        config: Training settings (validation rows: ``config.validation_fraction`` of the rows, or
            the ``validation_path`` of a corpus file).
        models_dir: Root of the reusable models (a string: the Prefect cache key must not hash the
            models it holds).
        task: The task; ``None`` infers it from a corpus file's columns (an artifact needs it).
        num_labels: Outputs of the head; ``None``: the classes seen (1 for regression).
        name: Prefix of the model directory's name.
        stage: The stage's name in Prefect and MLflow.
        output_dir: Train into this directory instead (it must not exist; never reused).
        progress: Also called after every optimiser step, with the stage's progress artifact.

    Returns:
        The stage's record: ``params["model_path"]`` is the model directory; metrics hold
        ``reused``, the row counts, epochs, ``train_loss`` and ``validation/<metric>``;
        ``files["training_report"]`` is the saved training report.

    Raises:
        ValueError: Neither ``models_dir`` nor ``output_dir``, no training rows, an artifact
            without ``task``, or rows that do not fit the task (see ``train_model``).
        FileExistsError: ``output_dir`` exists.
    """
    started = time.perf_counter()
    logger = get_run_logger()
    if output_dir is None and models_dir is None:
        raise ValueError("fine_tune: give models_dir (reusable models) or output_dir")
    key = fine_tune_key(rows, base_model, task, num_labels, config)
    out = Path(output_dir) if output_dir is not None else inside(str(models_dir), f"{name}-{key}", what="model name")
    dropped: dict[str, int] = {}
    reused = output_dir is None and (out / TRAINING_REPORT).is_file()
    if reused:
        result = load_train_result(out)
        logger.info("reusing fine-tuned model %s (same base model files, rows and settings)", out)
    else:
        data = _read(rows, task, num_labels)
        dropped = data.dropped
        bar = StageProgress(f"{stage} (optimiser steps)")

        def step(done: int, total: int, loss: float) -> None:
            bar(done, total)
            if progress is not None:
                progress(done, total, loss)

        logger.info(
            "fine-tuning %s (%d outputs) on %d rows, validating on %d; LDAV %s",
            data.task,
            data.num_labels,
            len(data.train),
            len(data.validation) if data.validation else 0,
            "on" if config.ldav.enabled else "off",
        )
        result = train_model(
            base_model,
            data.train,
            out,
            task=data.task,
            num_labels=data.num_labels,
            validation=data.validation,
            id2label=data.id2label or None,
            config=config,
            progress=step,
        )
        logger.info("fine-tuned %s in %.0f s: %s", out, result.seconds, result.metrics)
    return _stage_result(stage, result, key, base_model, config, reused, dropped, time.perf_counter() - started)


def fine_tune_summary(result: StageResult, *, cached: bool = False) -> dict[str, Any]:
    """A JSON-able summary of a fine-tune stage for a flow's summary.

    Args:
        result: What :func:`fine_tune_stage` returned.
        cached: Whether Prefect served the stage from its cache (the model was then reused too).

    Returns:
        ``path``, ``reused``, ``seconds`` (of the training), ``train_rows``, ``validation_rows``,
        ``epochs_run``, ``best_epoch`` and ``metrics`` (the validation metrics and ``train_loss``).
    """
    m = result.metrics
    metrics = {k.removeprefix("validation/"): v for k, v in m.items() if k.startswith("validation/")}
    return {
        "path": result.params["model_path"],
        "reused": cached or m["reused"] == 1.0,
        "seconds": m["train_seconds"],
        "train_rows": int(m["train_rows"]),
        "validation_rows": int(m["validation_rows"]),
        "epochs_run": int(m["epochs_run"]),
        "best_epoch": int(m["best_epoch"]),
        "metrics": {**metrics, "train_loss": m["train_loss"]},
    }


def _read(rows: ArtifactRef | CorpusFile, task: TaskName | None, num_labels: int | None) -> _Rows:
    if isinstance(rows, CorpusFile):
        data = labelled_corpus(
            rows.path, rows.columns, task=task, empty_texts=rows.empty_texts, missing_labels=rows.missing_labels
        )
        validation = None
        if rows.validation_path is not None:
            held = labelled_corpus(
                rows.validation_path,
                rows.columns,
                task=data.task,
                id2label=data.id2label if data.task != "regression" else None,
                empty_texts=rows.empty_texts,
                missing_labels=rows.missing_labels,
            )
            validation = rows_of(held.corpus.frame)
        return _Rows(
            rows_of(data.corpus.frame),
            validation,
            data.task,
            num_labels or data.num_labels,
            data.id2label,
            dict(data.corpus.dropped),
        )
    if task is None:
        raise ValueError(f"fine_tune: the rows of artifact {rows.name!r} need a task")
    frame = read_artifact(rows).to_pandas()
    if len(frame) == 0:
        raise ValueError(f"fine_tune: artifact {rows.name!r} has no rows; cannot fine-tune")
    return _Rows(rows_of(frame), None, task, num_labels or class_count(frame, task), {})


def _stage_result(
    stage: str,
    result: TrainResult,
    key: str,
    base_model: Path,
    config: TrainConfig,
    reused: bool,
    dropped: dict[str, int],
    seconds: float,
) -> StageResult:
    metrics = {
        "reused": float(reused),
        "train_rows": float(result.train_rows),
        "validation_rows": float(result.validation_rows),
        "epochs_run": float(result.epochs_run),
        "best_epoch": float(result.best_epoch),
        "stopped_early": float(result.stopped_early),
        "train_seconds": result.seconds,
        "train_loss": result.train_loss,
        **{f"validation/{k}": float(v) for k, v in result.metrics.items()},
        **{f"rows_dropped/{k}": float(v) for k, v in dropped.items()},
    }
    settings = {f"config.{k}": str(v) for k, v in dataclasses.asdict(config).items() if k != "ldav"}
    settings |= {f"config.ldav.{k}": str(v) for k, v in dataclasses.asdict(config.ldav).items()}
    params = {
        "model_path": str(result.output_dir),
        "key": key,
        "base_model": str(base_model),
        "task": result.task,
        "num_labels": str(result.num_labels),
        **settings,
    }
    how = "reused" if reused else f"trained in {result.seconds:.0f} s"
    note = f"fine-tuned model {result.output_dir} ({how}; {result.train_rows} training rows)"
    files = {"training_report": str(result.output_dir / TRAINING_REPORT)}
    return StageResult(stage, {}, metrics, params, seconds, (note,), files)
