"""Stage: mean-pooled hidden states of one layer for every text (of the corpus, or of one shard)."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pyarrow as pa
from prefect.logging import get_run_logger

from storage import ArtifactRef, ArtifactStore
from tasks.caching import stage_task
from tasks.corpus_io import read_corpus, tokens_metadata
from tasks.models import loaded_model
from tasks.progress import StageProgress
from tasks.results import RunContext, Shard, StageResult, stage_suffix
from xattr.models.forward import pooled_states_and_outputs
from xattr.models.loading import LoadedModel, ModelSpec
from xattr.reporting.predictions import class_names, predictions_table


def _run_name() -> str:
    from prefect.runtime import task_run

    return "encode_corpus" + stage_suffix(task_run.parameters.get("shard"))


@stage_task(name="encode_corpus", task_run_name=_run_name)
def encode_corpus_stage(
    corpus: ArtifactRef,
    model: ModelSpec,
    layer: int,
    batch_size: int,
    context: RunContext,
    shard: Shard | None = None,
) -> StageResult:
    """Write the ``tokens``, ``embeddings`` and ``predictions`` artifacts of the corpus or of ``shard``, in one pass.

    ``tokens``: the texts as the model's tokenizer encoded them (word-piece ids, character
    offsets, words, lengths: :class:`xattr.models.encoding.EncodedCorpus`), read by the later
    stages instead of tokenising again. ``embeddings``: one float32 vector per document.
    ``predictions``: the model's outputs, probabilities and predicted and gold labels per document
    (:func:`predictions_frame`), read by the attribute and evaluate stages instead of predicting
    again. Run on a shard (stage ``encode_corpus-<shard>``), each artifact is the shard's part of
    a dataset (``encode_corpus/<name>/part-<shard>.parquet``) that ``shard_dataset_stage`` lists.
    """
    started = time.perf_counter()
    loaded = loaded_model(model)
    suffix = stage_suffix(shard)
    view = read_corpus(
        corpus,
        loaded,
        rows=shard.positions if shard is not None else None,
        progress=StageProgress(f"encode_corpus{suffix} (tokenise)"),
    )
    part = shard.number if shard is not None else None
    encoded = view.encoded
    truncated = int(encoded.truncated.sum())
    if truncated:
        get_run_logger().warning(
            "%d of %d texts exceed %d word pieces and were truncated", truncated, len(encoded), loaded.max_length
        )
    vectors, outputs = pooled_states_and_outputs(
        loaded, view.encoded, layer=layer, batch_size=batch_size, progress=StageProgress(f"encode_corpus{suffix}")
    )
    dim = int(vectors.shape[1])
    table = pa.table(
        {
            "doc_id": pa.array(view.doc_ids, pa.string()),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), dim),
        }
    )
    layer_index = layer if layer >= 0 else loaded.num_layers + 1 + layer
    store = ArtifactStore(context.artifacts_root, context.run_id)
    tokens = store.write(
        "tokens",
        "encode_corpus",
        "tokens",
        encoded.to_arrow(view.doc_ids),
        metadata=tokens_metadata(loaded),
        part=part,
    )
    predicted = store.write(
        "predictions",
        "encode_corpus",
        "predictions",
        predictions_frame(loaded, view.frame, outputs),
        metadata={"model": loaded.source, "task": loaded.task},
        part=part,
    )
    ref = store.write(
        "embeddings",
        "encode_corpus",
        "embeddings",
        table,
        metadata={"model": loaded.source, "layer": str(layer_index), "pooling": "mean"},
        part=part,
        dim=dim,
    )
    params = {"layer": str(layer_index), "batch_size": str(batch_size), "max_length": str(loaded.max_length)}
    if shard is not None:
        params.update(start=str(shard.start), stop=str(shard.stop))
    return StageResult(
        f"encode_corpus{suffix}",
        {"embeddings": ref, "predictions": predicted, "tokens": tokens},
        {"rows": float(ref.rows), "dim": float(dim), "truncated_texts": float(truncated)},
        params,
        time.perf_counter() - started,
        (f"{truncated} texts truncated to {loaded.max_length} word pieces",) if truncated else (),
    )


def predictions_frame(loaded: LoadedModel, frame: pd.DataFrame, outputs: np.ndarray) -> pa.Table:
    """The ``predictions`` rows of corpus rows ``frame`` from the model's ``(rows, num_outputs)`` ``outputs``.

    Class names: the model's ``id2label``, else the corpus' (``label_name``), else the index.
    """
    corpus_names: dict[int, str] = {}
    if "label_name" in frame.columns:
        named = frame[frame["label_name"].notna() & frame["label"].notna()]
        corpus_names = {int(k): str(v) for k, v in zip(named["label"], named["label_name"], strict=True)}
    classes = loaded.num_outputs if loaded.task != "question_answering" else 0
    names, _ = class_names(loaded.id2label, classes, corpus_names)
    return predictions_table(
        frame["doc_id"].tolist(),
        outputs,
        task=loaded.task,
        names=names,
        labels=frame["label"].tolist(),
        label_sets=frame["label_set"].tolist() if loaded.task == "multi_label" else None,
        output_transform=loaded.output_transform,
    )
