"""Stages of the ``benchmark`` flow: dataset splits, fine-tuning (cached by content), MAPE text selection."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from prefect import task
from prefect.logging import get_run_logger

from storage import ArtifactRef, ArtifactStore, read_artifact
from storage.text_files import write_text_file
from tasks.caching import canonical, content_fingerprint, stage_cache_key
from tasks.corpus_io import read_corpus
from tasks.models import loaded_model
from tasks.progress import StageProgress
from tasks.results import RunContext, StageResult
from xattr.data.datasets import read_dataset, split_frame, subsample
from xattr.metrics.mape import select_accurate_texts, to_quantity
from xattr.models.forward import predict_logits
from xattr.models.loading import ModelSpec
from xattr.training.finetune import FineTuneConfig, ProgressCallback, fine_tune
from xattr.training.multilabel import fine_tune_multi_label
from xattr.training.trainer import LdavConfig, TrainConfig, TrainingRows, TrainResult, train_model


def _table(frame: Any) -> pa.Table:
    return pa.Table.from_pandas(frame, preserve_index=False)


@task(name="prepare_splits", cache_key_fn=stage_cache_key, persist_result=True)
def prepare_splits_stage(
    dataset: str,
    task: str,
    train: Path | None,
    eval_file: Path | None,
    eval_fraction: float,
    params: dict[str, Any],
    train_texts: int | None,
    eval_texts: int | None,
    seed: int,
    context: RunContext,
) -> StageResult:
    """Read the dataset's splits through its adapter, subsample, and write ``train``/``eval`` corpus artifacts.

    When ``eval_file`` is None the evaluation part is split off the train file (seeded). The eval
    split must not be empty (a clear error names the dataset and file).
    """
    started = time.perf_counter()
    if eval_file is None:
        train_frame, eval_frame = split_frame(read_dataset(dataset, train, params), eval_fraction, seed)
        source = f"{train} (eval: {eval_fraction:.0%} split off, seed {seed})"
    else:
        eval_frame = read_dataset(dataset, eval_file, params)
        train_frame = read_dataset(dataset, train, params) if train is not None else eval_frame.iloc[0:0]
        source = f"train {train}, eval {eval_file}"
    if len(eval_frame) == 0:
        raise ValueError(f"dataset {dataset!r}: the evaluation split ({eval_file or train}) has no rows")
    notes: list[str] = []
    if task == "regression":
        # Regression labels must be finite and positive (prices; MAPE divides by the label).
        kept = []
        for part, frame in (("train", train_frame), ("eval", eval_frame)):
            labels = frame["label"].astype(float)
            good = np.isfinite(labels) & (labels > 0)
            if int((~good).sum()):
                notes.append(f"dropped {int((~good).sum())} {part} rows without a positive finite label")
            kept.append(frame[good.to_numpy()].reset_index(drop=True))
        train_frame, eval_frame = kept
        if len(eval_frame) == 0:
            raise ValueError(f"dataset {dataset!r}: the evaluation split has no rows with a positive label")
    train_frame = subsample(train_frame, train_texts, seed)
    eval_frame = subsample(eval_frame, eval_texts, seed + 1)
    store = ArtifactStore(context.artifacts_root, context.run_id)
    refs = {
        "train": store.write("corpus", "prepare_splits", "train", _table(train_frame), metadata={"source": source}),
        "eval": store.write("corpus", "prepare_splits", "eval", _table(eval_frame), metadata={"source": source}),
    }
    get_run_logger().info(
        "dataset %s: %d train and %d eval rows (%s)", dataset, len(train_frame), len(eval_frame), source
    )
    return StageResult(
        "prepare_splits",
        refs,
        {"train_rows": float(len(train_frame)), "eval_rows": float(len(eval_frame))},
        {"dataset": dataset, "source": source, "train_texts": str(train_texts), "eval_texts": str(eval_texts)},
        time.perf_counter() - started,
        tuple(notes),
    )


def fine_tune_key(train: ArtifactRef, base_model: Path, task: str, config: dict[str, Any]) -> str:
    """Content hash of what a fine-tuned model depends on: train rows, base model files and settings."""
    payload = json.dumps(
        {"train": train.sha256, "base": content_fingerprint(base_model), "task": task, "config": canonical(config)},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


@task(name="fine_tune")
def fine_tune_stage(
    train: ArtifactRef, base_model: Path, task: str, config: dict[str, Any], models_dir: Path
) -> dict[str, Any]:
    """Fine-tune ``base_model`` on the train split, or reuse the model directory with the same content hash.

    Returns:
        ``{"path", "reused", "seconds", "metrics"}``.

    Multi-label tasks use :func:`xattr.training.multilabel.fine_tune_multi_label`.

    Raises:
        ValueError: An empty train split.
    """
    logger = get_run_logger()
    key = fine_tune_key(train, base_model, task, config)
    out = models_dir / f"{task}-{key}"
    report = out / "xattr_benchmark_train.json"
    if out.exists() and report.exists():
        logger.info("reusing fine-tuned model %s (same train rows, base model and settings)", out)
        return {**json.loads(report.read_text()), "reused": True}
    frame = read_artifact(train).to_pandas()
    if len(frame) == 0:
        raise ValueError("benchmark: the train split has no rows; cannot fine-tune")
    settings = dict(config)
    log_target = bool(settings.pop("log_target", False))
    num_labels = settings.pop("num_labels", None)
    ldav = settings.pop("ldav", None) or {}
    stage_progress = StageProgress("fine_tune (optimiser steps)")

    def progress(step: int, total: int, loss: float) -> None:
        stage_progress(step, total)

    if ldav.get("enabled"):
        result = _fine_tune_with_ldav(base_model, frame, out, task, num_labels, settings, ldav, progress)
    elif task == "multi_label":
        label_sets = [[int(v) for v in labels] for labels in frame["label_set"]]
        result = fine_tune_multi_label(
            base_model,
            frame["text"].tolist(),
            label_sets,
            out,
            num_labels=num_labels or 1 + max((max(s) for s in label_sets if len(s)), default=0),
            config=FineTuneConfig(**settings),
            progress=progress,
        )
    else:
        result = fine_tune(
            base_model,
            frame["text"].tolist(),
            frame["label"].astype(float).tolist(),
            out,
            task="regression" if task == "regression" else "classification",
            num_labels=num_labels,
            config=FineTuneConfig(**settings),
            log_target=log_target,
            progress=progress,
        )
    info = {"path": str(out), "seconds": result.seconds, "metrics": result.metrics, "train_rows": result.train_rows}
    write_text_file(report, json.dumps(info, indent=2), name="fine_tune/report")
    logger.info("fine-tuned %s in %.0f s: %s", out, result.seconds, result.metrics)
    return {**info, "reused": False}


def _fine_tune_with_ldav(
    base_model: Path,
    frame: Any,
    out: Path,
    task: str,
    num_labels: int | None,
    settings: dict[str, Any],
    ldav: dict[str, Any],
    progress: ProgressCallback,
) -> TrainResult:
    """Fine-tune with LDAV class vectors (LDAV Sec. 3.1) through :func:`xattr.training.trainer.train_model`.

    The same optimiser recipe as ``fine_tune`` (every epoch run, no early stopping); the validation
    rows are a seeded ``validation_fraction`` of the train split, as in ``fine_tune``.
    """
    if task not in ("classification", "pair_classification"):
        raise ValueError(f"train.ldav.enabled needs a single-label classifier; this dataset's task is {task!r}")
    settings = dict(settings)
    fraction = float(settings.pop("validation_fraction", 0.1))
    seed = int(settings.get("seed", 0))
    order = np.random.default_rng(seed).permutation(len(frame))
    held = int(round(fraction * len(frame)))
    labels = frame["label"].astype(int).to_numpy()
    pairs = frame["text_pair"] if "text_pair" in frame and frame["text_pair"].notna().any() else None

    def rows(positions: np.ndarray) -> TrainingRows:
        return TrainingRows(
            texts=frame["text"].iloc[positions].tolist(),
            pairs=None if pairs is None else pairs.iloc[positions].tolist(),
            labels=labels[positions].tolist(),
        )

    config = TrainConfig(**settings, patience=None, ldav=LdavConfig(**ldav))
    return train_model(
        base_model,
        rows(order[held:]),
        out,
        task="pair_classification" if pairs is not None else "classification",
        num_labels=num_labels or max(2, int(labels.max()) + 1),
        validation=rows(order[:held]) if held else None,
        config=config,
        progress=progress,
    )


@task(name="select_accurate", cache_key_fn=stage_cache_key, persist_result=True)
def select_accurate_stage(
    corpus: ArtifactRef, model: ModelSpec, n: int, threshold: float, seed: int, batch_size: int, context: RunContext
) -> StageResult:
    """LAFA 5.3: keep ``n`` texts within ``threshold`` relative error (or the ``n`` most accurate, said so)."""
    started = time.perf_counter()
    loaded = loaded_model(model)
    view = read_corpus(corpus, loaded)
    labels = view.frame["label"].to_numpy(dtype=np.float64)
    predicted = to_quantity(predict_logits(loaded, view.encoded, batch_size=batch_size)[:, 0], loaded.output_transform)
    selection = select_accurate_texts(predicted, labels, n=n, threshold=threshold, seed=seed)
    subset = view.frame.iloc[list(selection.positions)].reset_index(drop=True)
    ref = ArtifactStore(context.artifacts_root, context.run_id).write(
        "corpus", "select_accurate", "eval", _table(subset), metadata={"selection": selection.describe()}
    )
    get_run_logger().info("MAPE texts: %s", selection.describe())
    return StageResult(
        "select_accurate",
        {"corpus": ref},
        {
            "pool": float(len(labels)),
            "within_threshold": float(selection.within_threshold),
            "selected": float(len(subset)),
            "fallback": float(selection.fallback),
        },
        {"threshold": f"{threshold:g}", "n": str(n)},
        time.perf_counter() - started,
        (f"MAPE texts: {selection.describe()} (pool of {len(labels)})",),
    )
