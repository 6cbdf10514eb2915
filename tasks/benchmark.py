"""Stages of the ``benchmark`` flow: dataset splits and MAPE text selection (fine-tuning: :mod:`tasks.fine_tune`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from prefect.logging import get_run_logger

from storage import ArtifactRef, ArtifactStore, read_artifact
from tasks.caching import stage_task
from tasks.corpus_io import read_corpus
from tasks.models import loaded_model
from tasks.results import RunContext, StageResult
from xattr.data.datasets import read_dataset, split_frame, subsample
from xattr.metrics.mape import select_accurate_texts, to_quantity
from xattr.models.forward import predict_logits
from xattr.models.loading import ModelSpec


def _table(frame: Any) -> pa.Table:
    return pa.Table.from_pandas(frame, preserve_index=False)


@stage_task(name="prepare_splits")
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


@stage_task(name="select_accurate")
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


@stage_task(name="neighbour_pool")
def neighbour_pool_stage(scored: ArtifactRef, train: ArtifactRef, context: RunContext) -> StageResult:
    """The corpus neighbour-using methods search: the scored texts first (in order), then the train split.

    A train row whose ``doc_id`` is already among the scored texts is left out. Methods explain
    only the first ``scored.rows`` positions (a shard), so neighbours come from the whole pool
    while the texts scored stay those of ``scored``.
    """
    started = time.perf_counter()
    first = read_artifact(scored).to_pandas()
    rest = read_artifact(train).to_pandas()
    rest = rest[~rest["doc_id"].isin(set(first["doc_id"]))]
    frame = pd.concat([first, rest.reindex(columns=first.columns)], ignore_index=True)
    ref = ArtifactStore(context.artifacts_root, context.run_id).write(
        "corpus", "neighbour_pool", "pool", _table(frame), metadata={"scored": str(len(first))}
    )
    get_run_logger().info("neighbour pool: %d scored + %d train texts", len(first), len(rest))
    return StageResult(
        "neighbour_pool",
        {"pool": ref},
        {"pool_texts": float(len(frame)), "scored_texts": float(len(first)), "train_texts": float(len(rest))},
        {},
        time.perf_counter() - started,
        (f"neighbour pool: the {len(first)} scored texts and {len(rest)} train texts",),
    )
