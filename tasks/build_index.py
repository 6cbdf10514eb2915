"""Stage: a FAISS index over the embeddings and each text's nearest neighbours."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pyarrow as pa
from prefect.logging import get_run_logger

from storage import (
    ArtifactRef,
    ArtifactStore,
    artifact_metadata,
    dataset_parts,
    embedding_matrix,
    read_artifact,
    read_index_manifest,
    write_index,
)
from tasks.caching import stage_task
from tasks.corpus_io import part_ranges
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
    candidates: int = 0,
) -> StageResult:
    """Write the ``neighbours`` table and the FAISS index (with a manifest naming model, layer and the table).

    The corpus is searched once, here: each text's ``max(neighbours, candidates)`` nearest other
    texts go to the ``neighbours`` table, which the methods that smooth over neighbours read
    (``candidates``: the most any configured method examines,
    ``xattr.neighbours.selection.candidates_needed``). Approximate index types are trained on the
    embeddings; their recall@10 against exact search, over a seeded sample of ``recall_queries``
    texts, is a stage metric (``recall_at_10``).
    """
    started = time.perf_counter()
    logger = get_run_logger()
    table = read_artifact(embeddings)
    ids = table.column("doc_id").combine_chunks()
    vectors = embedding_matrix(table)
    params = params or IndexParams()
    index = build_index(vectors, index_type, params, progress=StageProgress(f"build_index ({index_type})"))
    recall = measure_recall(index, vectors, k=10, queries=recall_queries, seed=params.seed)
    logger.info("%s index over %d vectors: recall@10 vs exact %.4f", index_type, index.ntotal, recall)
    searched = max(neighbours, candidates)
    logger.info("searching the %d nearest neighbours of %d texts", searched, index.ntotal)
    dist, nn = nearest_neighbours(index, vectors, searched, progress=StageProgress("build_index (search)"))
    # One part per part of the embeddings (the encode stage's shards): a shard's reader opens its part only.
    store = ArtifactStore(context.artifacts_root, context.run_id)
    ranges = part_ranges(embeddings)
    parts = []
    for number, part in enumerate(ranges):
        rows, cols = np.nonzero(nn[part.start : part.stop] >= 0)
        found = nn[part.start : part.stop][rows, cols]
        table = pa.table(
            {
                "doc_id": ids.take(pa.array(rows + part.start)),
                "rank": pa.array(cols.astype(np.int32)),
                "neighbour_id": ids.take(pa.array(found)),
                "distance": pa.array(dist[part.start : part.stop][rows, cols].astype(np.float32)),
                "position": pa.array((rows + part.start).astype(np.int64)),
                "neighbour_position": pa.array(found.astype(np.int64)),
            }
        )
        parts.append(
            store.write("neighbours", "build_index", "neighbours", table, part=number if len(ranges) > 1 else None)
        )
    neighbours_ref = store.write_dataset("build_index", "neighbours", parts) if len(ranges) > 1 else parts[0]
    meta = artifact_metadata(embeddings)
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
            "neighbours": neighbours_ref.to_dict(),
            "neighbour_parts": [[r.start, r.stop] for r in ranges],
        },
    )
    return StageResult(
        "build_index",
        {"index": index_ref, "neighbours": neighbours_ref},
        {"vectors": float(index.ntotal), "neighbour_rows": float(neighbours_ref.rows), "recall_at_10": recall},
        {
            "index_type": index_type,
            "neighbours": str(neighbours),
            "searched_neighbours": str(searched),
            **{f"index.{k}": str(v) for k, v in dataclasses.asdict(params).items()},
        },
        time.perf_counter() - started,
    )


def neighbour_candidates(
    index: ArtifactRef, size: int, rows: range | None = None
) -> tuple[np.ndarray, np.ndarray] | None:
    """The search build_index made, as ``(squared distances, corpus positions)``, nearest first.

    Of the corpus' ``size`` texts, only those at positions ``rows`` (default all), one row each in
    that order: ``(len(rows), k)``. Empty slots are ``-1`` (distance ``inf``). Only the table's
    numeric columns are read. ``None`` for an index written without a neighbours table.
    """
    manifest = read_index_manifest(index)
    if "neighbours" not in manifest:
        return None
    rows = rows if rows is not None else range(size)
    ref = ArtifactRef.from_dict(manifest["neighbours"])
    columns = ["position", "rank", "neighbour_position", "distance"]
    spans = manifest.get("neighbour_parts")
    if spans and len(spans) > 1:  # a dataset of the texts' ranges: only the parts holding ``rows`` are read
        tables = [
            read_artifact(part, columns=columns)
            for part, (start, stop) in zip(dataset_parts(ref), spans, strict=True)
            if start < rows.stop and rows.start < stop
        ]
        table = pa.concat_tables(tables) if tables else read_artifact(ref, rows=range(0, 0), columns=columns)
    else:
        table = read_artifact(ref, columns=columns)
    position = table.column("position").to_numpy()
    low, high = np.searchsorted(position, [rows.start, rows.stop])  # the table is in position order
    position = position[low:high] - rows.start
    ranks = table.column("rank").to_numpy()
    width = int(ranks.max()) + 1 if len(ranks) else 0
    ranks = ranks[low:high]
    squared = np.full((len(rows), width), np.inf, np.float32)
    positions = np.full((len(rows), width), -1, np.int64)
    squared[position, ranks] = table.column("distance").to_numpy()[low:high]
    positions[position, ranks] = table.column("neighbour_position").to_numpy()[low:high]
    return squared, positions
