"""Stage: a FAISS index over the embeddings and each text's nearest neighbours."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pyarrow as pa
from prefect.logging import get_run_logger

from storage import ArtifactRef, ArtifactStore, artifact_metadata, read_artifact, write_index
from tasks.caching import stage_task
from tasks.progress import StageProgress
from tasks.results import RunContext, StageResult
from xattr.neighbours.index import IndexParams, IndexType, build_index, measure_recall, nearest_neighbours


@stage_task(name="build_index")
def build_index_stage(
    embeddings: ArtifactRef,
    index_type: IndexType,
    neighbours: int,
    context: RunContext,
    params: IndexParams | None = None,
    recall_queries: int = 1000,
) -> StageResult:
    """Write the FAISS index (with a manifest naming model and layer) and the ``neighbours`` table.

    Approximate index types are trained on the embeddings; their recall@10 against exact search,
    over a seeded sample of ``recall_queries`` texts, is a stage metric (``recall_at_10``).
    """
    started = time.perf_counter()
    table = read_artifact(embeddings)
    ids = table.column("doc_id").to_pylist()
    vectors = np.asarray(table.column("embedding").combine_chunks().flatten(), dtype=np.float32).reshape(len(ids), -1)
    params = params or IndexParams()
    index = build_index(vectors, index_type, params, progress=StageProgress(f"build_index ({index_type})"))
    recall = measure_recall(index, vectors, k=10, queries=recall_queries, seed=params.seed)
    get_run_logger().info("%s index over %d vectors: recall@10 vs exact %.4f", index_type, index.ntotal, recall)
    meta = artifact_metadata(embeddings)
    store = ArtifactStore(context.artifacts_root, context.run_id)
    index_ref = write_index(
        index,
        store.path_for("build_index", "index", suffix=""),
        name="build_index/index",
        manifest={
            "model": meta.get("model", ""),
            "layer": meta.get("layer", ""),
            "embeddings_sha256": embeddings.sha256,
            "metric": "l2",
            "xattr_index_type": index_type,
            "index_params": dataclasses.asdict(params),
            "recall_at_10": recall,
            "doc_ids_from": embeddings.path,
        },
    )
    dist, nn = nearest_neighbours(index, vectors, neighbours)
    rows, cols = np.nonzero(nn >= 0)
    table = pa.table(
        {
            "doc_id": pa.array([ids[r] for r in rows], pa.string()),
            "rank": pa.array(cols.astype(np.int32)),
            "neighbour_id": pa.array([ids[nn[r, c]] for r, c in zip(rows, cols, strict=True)], pa.string()),
            "distance": pa.array(dist[rows, cols].astype(np.float32)),
        }
    )
    neighbours_ref = store.write("neighbours", "build_index", "neighbours", table)
    return StageResult(
        "build_index",
        {"index": index_ref, "neighbours": neighbours_ref},
        {"vectors": float(index.ntotal), "neighbour_rows": float(neighbours_ref.rows), "recall_at_10": recall},
        {
            "index_type": index_type,
            "neighbours": str(neighbours),
            **{f"index.{k}": str(v) for k, v in dataclasses.asdict(params).items()},
        },
        time.perf_counter() - started,
    )
