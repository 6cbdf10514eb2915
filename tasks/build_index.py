"""Stage: a FAISS index over the embeddings and each text's nearest neighbours."""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa
from prefect import task

from storage import ArtifactRef, ArtifactStore, artifact_metadata, read_artifact, write_index
from tasks.caching import stage_cache_key
from tasks.results import RunContext, StageResult
from xattr.neighbours.index import IndexType, build_index, nearest_neighbours


@task(name="build_index", cache_key_fn=stage_cache_key, persist_result=True)
def build_index_stage(
    embeddings: ArtifactRef, index_type: IndexType, neighbours: int, context: RunContext
) -> StageResult:
    """Write the FAISS index (with a manifest naming model and layer) and the ``neighbours`` table."""
    started = time.perf_counter()
    table = read_artifact(embeddings)
    ids = table.column("doc_id").to_pylist()
    vectors = np.asarray(table.column("embedding").combine_chunks().flatten(), dtype=np.float32).reshape(len(ids), -1)
    index = build_index(vectors, index_type)
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
        {"vectors": float(index.ntotal), "neighbour_rows": float(neighbours_ref.rows)},
        {"index_type": index_type, "neighbours": str(neighbours)},
        time.perf_counter() - started,
    )
