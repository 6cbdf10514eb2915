"""Stage: read the user's corpus file, check it, and write the corpus artifact."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
from prefect.logging import get_run_logger

from storage import ArtifactStore
from tasks.caching import stage_task
from tasks.models import loaded_model
from tasks.results import RunContext, StageResult
from xattr.data.corpus import CLASS_TASKS, CorpusColumns, OnProblem, load_corpus
from xattr.models.encoding import has_word_pieces
from xattr.models.loading import ModelSpec
from xattr.reporting.predictions import class_names


@stage_task(name="load_corpus")
def load_corpus_stage(
    path: Path,
    columns: CorpusColumns,
    model: ModelSpec,
    empty_texts: OnProblem,
    missing_labels: OnProblem,
    context: RunContext,
) -> StageResult:
    """Read ``path`` into canonical columns (class names mapped with the model's labels).

    Class labels must be the model's class names or indices below its number of classes.
    A classifier's gold class also goes in by name (``label_name``: the model's ``id2label``
    name, or the index when the model names none, which the log says once).
    """
    started = time.perf_counter()
    loaded = loaded_model(model)
    label2id = {name: idx for idx, name in loaded.id2label.items()}
    classes = loaded.num_outputs if loaded.task in CLASS_TASKS else None
    corpus = load_corpus(
        path,
        columns,
        label2id=label2id,
        empty_texts=empty_texts,
        missing_labels=missing_labels,
        classes=classes,
        has_tokens=lambda texts: has_word_pieces(loaded.tokenizer, texts, max_length=loaded.max_length),
    )
    frame = corpus.frame
    if loaded.task == "classification" and frame["label"].notna().any():
        names, source = class_names(loaded.id2label, loaded.num_outputs)
        if source == "ids":
            get_run_logger().info("the model names no classes (id2label): classes are shown by index")
        named = [None if pd.isna(v) else names.get(int(v), str(int(v))) for v in frame["label"]]
        frame = frame.assign(label_name=named)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    ref = ArtifactStore(context.artifacts_root, context.run_id).write(
        "corpus", "load_corpus", "corpus", table, metadata={"source": str(path)}
    )
    notes = tuple(f"dropped {n} rows: {reason.replace('_', ' ')}" for reason, n in corpus.dropped.items())
    for note in notes:
        get_run_logger().warning(note)
    metrics = {"rows_read": float(corpus.rows_read), "rows": float(ref.rows)}
    metrics.update({f"dropped_{reason}": float(n) for reason, n in corpus.dropped.items()})
    get_run_logger().info("corpus: %d rows from %s -> %s", ref.rows, path, ref.path)
    return StageResult(
        "load_corpus",
        {"corpus": ref},
        metrics,
        {"path": str(path), "empty_texts": empty_texts, "missing_labels": missing_labels},
        time.perf_counter() - started,
        notes,
    )
