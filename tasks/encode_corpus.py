"""Stage: mean-pooled hidden states of one layer for every text (of the corpus, or of one shard)."""

from __future__ import annotations

import time

import pyarrow as pa
from prefect.logging import get_run_logger

from storage import ArtifactRef, ArtifactStore
from tasks.caching import stage_task
from tasks.corpus_io import read_corpus
from tasks.models import loaded_model
from tasks.progress import StageProgress
from tasks.results import RunContext, Shard, StageResult, stage_suffix
from xattr.models.forward import mean_pooled_hidden_states
from xattr.models.loading import ModelSpec


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
    """Write the ``embeddings`` artifact: one float32 vector per document of the corpus or of ``shard``.

    Run on a shard, the artifact is ``encode_corpus/embeddings-<shard>`` and the stage
    ``encode_corpus-<shard>``; ``merge_shards_stage`` joins the shards' artifacts.
    """
    started = time.perf_counter()
    loaded = loaded_model(model)
    view = read_corpus(corpus, loaded, rows=shard.positions if shard is not None else None)
    suffix = stage_suffix(shard)
    truncated = sum(e.truncated for e in view.encoded)
    if truncated:
        get_run_logger().warning(
            "%d of %d texts exceed %d word pieces and were truncated", truncated, len(view.encoded), loaded.max_length
        )
    vectors = mean_pooled_hidden_states(
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
    ref = ArtifactStore(context.artifacts_root, context.run_id).write(
        "embeddings",
        "encode_corpus",
        f"embeddings{suffix}",
        table,
        metadata={"model": loaded.source, "layer": str(layer_index), "pooling": "mean"},
        dim=dim,
    )
    params = {"layer": str(layer_index), "batch_size": str(batch_size), "max_length": str(loaded.max_length)}
    if shard is not None:
        params.update(start=str(shard.start), stop=str(shard.stop))
    return StageResult(
        f"encode_corpus{suffix}",
        {"embeddings": ref},
        {"rows": float(ref.rows), "dim": float(dim), "truncated_texts": float(truncated)},
        params,
        time.perf_counter() - started,
        (f"{truncated} texts truncated to {loaded.max_length} word pieces",) if truncated else (),
    )
