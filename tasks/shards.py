"""Sharding: contiguous slices of the corpus, and the stage that lists the shards' parts as one dataset.

The encode and attribute stages take an optional ``shard`` (``tasks.results.Shard``); run on a
shard they compute its rows only and write one artifact per shard. A shard's cache key holds the
shard's content (doc ids, texts, labels), not the whole corpus (``tasks.caching.stage_cache_key``),
so a re-run reuses every finished shard and a run killed mid-way resumes where it stopped.
Methods that read neighbours select them over the whole corpus from the merged embeddings and
index, which are then part of the key too. Each shard writes its part of one Parquet dataset
per artifact; the dataset stage lists the parts (no row rewritten), and every reader reads a
dataset as it reads one file, so downstream stages are the same with and without sharding.
"""

from __future__ import annotations

import hashlib
import json
import time

from storage import ArtifactRef, ArtifactStore, read_artifact
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


@stage_task(name="shard_dataset", task_run_name="dataset-{stage}")
def shard_dataset_stage(stage: str, shards: list[dict[str, ArtifactRef]], context: RunContext) -> StageResult:
    """List each artifact the shards wrote (by short name), parts in shard order, as one dataset ``<stage>/<name>``.

    No row is read or rewritten: the dataset is the directory of the shards' part files and a
    manifest (``storage.ArtifactStore.write_dataset``); a part reused from an earlier run is
    hard-linked in. Every shard must have written the same names, each of one kind.
    """
    started = time.perf_counter()
    if not shards:
        raise ValueError(f"stage {stage!r} has no shards to list")
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
        refs[name] = store.write_dataset(stage, name, parts)
    metrics = {"shards": float(len(shards)), "rows": float(refs[names[0]].rows)}
    return StageResult(stage, refs, metrics, {}, time.perf_counter() - started)
