"""Sharding: contiguous slices of the corpus, and the stage that merges the shards' artifacts.

The encode and attribute stages take an optional ``shard`` (``tasks.results.Shard``); run on a
shard they compute its rows only and write one artifact per shard. A shard's cache key holds the
shard's content (doc ids, texts, labels), not the whole corpus (``tasks.caching.stage_cache_key``),
so a re-run reuses every finished shard and a run killed mid-way resumes where it stopped.
Methods that read neighbours select them over the whole corpus from the merged embeddings and
index, which are then part of the key too. The merge stage writes the shards' rows as one
artifact (new file, never overwriting), so downstream stages are the same with and without
sharding.
"""

from __future__ import annotations

import hashlib
import json
import time

import pyarrow as pa

from storage import ArtifactRef, ArtifactStore, artifact_metadata, read_artifact
from tasks.caching import stage_task
from tasks.results import RunContext, Shard, StageResult

_CONTENT_COLUMNS = ("doc_id", "text", "text_pair", "label", "label_set")


def plan_shards(corpus: ArtifactRef, shard_size: int) -> list[Shard]:
    """Contiguous shards of at most ``shard_size`` texts covering the corpus in order.

    Raises:
        ValueError: ``shard_size`` below 1.
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be a positive number of texts, got {shard_size}")
    table = read_artifact(corpus)
    columns = {name: table.column(name).to_pylist() for name in _CONTENT_COLUMNS}
    shards = []
    for number, start in enumerate(range(0, table.num_rows, shard_size)):
        stop = min(start + shard_size, table.num_rows)
        rows = [[columns[c][i] for c in _CONTENT_COLUMNS] for i in range(start, stop)]
        digest = hashlib.sha256(json.dumps(rows, default=str).encode()).hexdigest()
        shards.append(Shard(number, start, stop, digest))
    return shards


@stage_task(name="merge_shards", task_run_name="merge-{stage}")
def merge_shards_stage(stage: str, shards: list[dict[str, ArtifactRef]], context: RunContext) -> StageResult:
    """Write each artifact the shards wrote (by short name), rows in shard order, as one artifact ``<stage>/<name>``.

    The kind and user metadata of a merged artifact are the first shard's; every shard must
    have written the same names, each of one kind and schema.
    """
    started = time.perf_counter()
    if not shards:
        raise ValueError(f"stage {stage!r} has no shards to merge")
    names = list(shards[0])
    if any(list(part) != names for part in shards):
        written = sorted({n for part in shards for n in part})
        raise ValueError(f"shards of stage {stage!r} wrote different artifacts: {', '.join(written)}")
    store = ArtifactStore(context.artifacts_root, context.run_id)
    refs: dict[str, ArtifactRef] = {}
    for name in names:
        parts = [part[name] for part in shards]
        kinds = {ref.kind for ref in parts}
        if len(kinds) != 1:
            raise ValueError(f"shards of stage {stage!r} mix artifact kinds: {', '.join(sorted(kinds))}")
        table = pa.concat_tables([read_artifact(ref) for ref in parts])
        kind = parts[0].kind
        schema_params: dict[str, object] = {}
        if kind == "embeddings":
            schema_params["dim"] = table.schema.field("embedding").type.list_size
        refs[name] = store.write(kind, stage, name, table, metadata=artifact_metadata(parts[0]), **schema_params)
    metrics = {"shards": float(len(shards)), "rows": float(refs[names[0]].rows)}
    return StageResult(stage, refs, metrics, {}, time.perf_counter() - started)
