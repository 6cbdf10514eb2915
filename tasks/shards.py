"""Sharded encode and attribute stages: contiguous slices of the corpus, one task run and artifact each.

A shard's cache key holds the shard's content (doc ids, texts, labels), not the whole corpus, so
a re-run reuses every finished shard and a run killed mid-way resumes where it stopped. Methods
that read neighbours (LAFA, SHAP with neighbour references) select them over the whole corpus
from the merged embeddings and index, which are then part of the key too. A merge stage writes
the shards' rows as one artifact (new file, never overwriting), so downstream stages are the
same with and without sharding.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from prefect import task

from storage import ArtifactRef, ArtifactStore, artifact_metadata, read_artifact
from tasks.attribute import attributions_table, neighbour_selection
from tasks.caching import canonical, code_version, stage_cache_key
from tasks.corpus_io import read_corpus
from tasks.head_statistics import checked_head_masks
from tasks.models import loaded_model
from tasks.progress import StageProgress
from tasks.results import RunContext, StageResult
from xattr.ldav.vectors import ldav_vectors_for
from xattr.methods import MethodContext, attribute_corpus, get_method
from xattr.models.encoding import encode_texts
from xattr.models.forward import mean_pooled_hidden_states, predict_logits
from xattr.models.loading import ModelSpec
from xattr.models.targets import TargetPolicy, resolve_targets

_CONTENT_COLUMNS = ("doc_id", "text", "text_pair", "label", "label_set")


@dataclass(frozen=True)
class Shard:
    """Corpus positions ``start <= i < stop`` and a digest of their content.

    Attributes:
        number: The shard's number, from 0.
        start: First corpus position.
        stop: One past the last corpus position.
        content_sha256: SHA-256 of the shard's doc ids, texts, text pairs and labels.
    """

    number: int
    start: int
    stop: int
    content_sha256: str

    @property
    def name(self) -> str:
        return f"shard-{self.number:05d}"


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


def shard_cache_key(context: Any, parameters: dict[str, Any]) -> str:
    """Prefect ``cache_key_fn`` of a shard task: the shard's content in place of the whole corpus.

    The corpus reference and the shard's number and positions are left out: a shard whose texts
    did not change is reused even when other shards changed. Everything else (model, method
    settings, neighbour index and embeddings when given) counts as in ``stage_cache_key``.
    """
    task_name = getattr(getattr(context, "task", None), "name", "task")
    params = {k: v for k, v in parameters.items() if k != "corpus"}
    params["shard"] = params["shard"].content_sha256
    payload = json.dumps(
        {"task": task_name, "code": code_version(), "parameters": canonical(params)}, sort_keys=True, default=str
    )
    return f"{task_name}-{hashlib.sha256(payload.encode()).hexdigest()}"


@task(
    name="encode_corpus_shard",
    task_run_name="encode_corpus-{shard.name}",
    cache_key_fn=shard_cache_key,
    persist_result=True,
)
def encode_shard_stage(
    corpus: ArtifactRef, shard: Shard, model: ModelSpec, layer: int, batch_size: int, context: RunContext
) -> StageResult:
    """Write the ``embeddings`` artifact of one shard (see ``encode_corpus_stage``)."""
    started = time.perf_counter()
    loaded = loaded_model(model)
    frame = read_artifact(corpus).slice(shard.start, shard.stop - shard.start).to_pandas()
    pairs = frame["text_pair"].tolist() if frame["text_pair"].notna().any() else None
    encoded = encode_texts(loaded.tokenizer, frame["text"].tolist(), pairs, max_length=loaded.max_length)
    truncated = sum(e.truncated for e in encoded)
    vectors = mean_pooled_hidden_states(
        loaded, encoded, layer=layer, batch_size=batch_size, progress=StageProgress(f"encode_corpus-{shard.name}")
    )
    dim = int(vectors.shape[1])
    table = pa.table(
        {
            "doc_id": pa.array(frame["doc_id"].tolist(), pa.string()),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), dim),
        }
    )
    layer_index = layer if layer >= 0 else loaded.num_layers + 1 + layer
    ref = ArtifactStore(context.artifacts_root, context.run_id).write(
        "embeddings",
        "encode_corpus",
        f"embeddings-{shard.name}",
        table,
        metadata={"model": loaded.source, "layer": str(layer_index), "pooling": "mean"},
        dim=dim,
    )
    return StageResult(
        f"encode_corpus-{shard.name}",
        {"embeddings": ref},
        {"rows": float(ref.rows), "dim": float(dim), "truncated_texts": float(truncated)},
        {"layer": str(layer_index), "start": str(shard.start), "stop": str(shard.stop)},
        time.perf_counter() - started,
    )


@task(
    name="attribute_shard",
    task_run_name="attribute-{label}-{shard.name}",
    cache_key_fn=shard_cache_key,
    persist_result=True,
)
def attribute_shard_stage(
    corpus: ArtifactRef,
    shard: Shard,
    model: ModelSpec,
    method: str,
    label: str,
    params: dict[str, Any],
    target: TargetPolicy,
    batch_size: int,
    context: RunContext,
    embeddings: ArtifactRef | None = None,
    index: ArtifactRef | None = None,
    seed: int = 0,
    head_masks: ArtifactRef | None = None,
) -> StageResult:
    """Write the ``token_attributions`` artifact of one shard (see ``attribute_stage``).

    The whole corpus is in the method's context and texts outside the shard get no target, so row
    positions are corpus positions and neighbours come from the whole corpus.
    """
    started = time.perf_counter()
    attribution_method = get_method(method, params)
    requirements = attribution_method.requirements(attribution_method.params)
    loaded = loaded_model(model)
    view = read_corpus(corpus, loaded)
    inside = range(shard.start, shard.stop)
    needs_neighbours = requirements.neighbours is not None
    # Neighbour filters may group by prediction over the whole corpus; otherwise predict the shard only.
    scope = range(len(view.encoded)) if needs_neighbours else inside
    logits = predict_logits(loaded, [view.encoded[i] for i in scope], batch_size=batch_size)
    frame = view.frame.iloc[list(scope)]
    label_sets = frame["label_set"].tolist() if target == "label" else None
    scoped_targets = resolve_targets(
        loaded.task, logits, policy=target, labels=frame["label"].tolist(), label_sets=label_sets
    )
    targets: list[list[int]] = [[] for _ in view.encoded]
    for position, row_targets in zip(scope, scoped_targets, strict=True):
        if shard.start <= position < shard.stop:
            targets[position] = list(row_targets)
    selection = None
    metrics: dict[str, float] = {}
    if requirements.neighbours is not None:
        if embeddings is None or index is None:
            raise ValueError(f"method {method!r} needs the neighbour index and embeddings")
        groups = {"label": view.frame["label"].tolist(), "prediction": [int(np.argmax(row)) for row in logits]}
        selection = neighbour_selection(requirements.neighbours, loaded, embeddings, index, groups, seed)
        metrics["neighbours_max"] = float(selection.max_neighbours)
        metrics["texts_without_neighbours"] = float(sum(not selection.neighbours.get(i) for i in inside))
    method_context = MethodContext(
        corpus=view.encoded,
        neighbours=selection.neighbours if selection else {},
        head_masks=checked_head_masks(method, loaded, head_masks) if requirements.head_masks else None,
        ldav_vectors=ldav_vectors_for(loaded) if requirements.ldav_vectors else None,
    )
    results = attribute_corpus(
        attribution_method,
        loaded,
        view.encoded,
        targets,
        context=method_context,
        batch_size=batch_size,
        progress=StageProgress(f"attribute-{label}-{shard.name}"),
    )
    table = attributions_table(view, loaded, results, label)
    seconds = time.perf_counter() - started
    ref = ArtifactStore(context.artifacts_root, context.run_id).write(
        "token_attributions",
        f"attribute-{label}",
        f"attributions-{shard.name}",
        table,
        metadata={
            "method": method,
            "params": repr(sorted(attribution_method.params.model_dump().items())),
            "target": target,
        },
    )
    metrics |= attribution_method.diagnostics(method_context)
    return StageResult(
        f"attribute-{label}-{shard.name}",
        {"attributions": ref},
        {"texts": float(len(inside)), "explanations": float(len(results)), "texts_per_second": len(inside) / seconds}
        | metrics,
        {"method": method, "target": target, "start": str(shard.start), "stop": str(shard.stop)},
        seconds,
    )


@task(name="merge_shards", task_run_name="merge-{stage}", cache_key_fn=stage_cache_key, persist_result=True)
def merge_shards_stage(stage: str, name: str, shards: list[ArtifactRef], context: RunContext) -> StageResult:
    """Write the shards' rows, in shard order, as one new artifact ``<stage>/<name>``.

    The kind and user metadata are the first shard's; every shard must share the kind and schema.
    """
    started = time.perf_counter()
    if not shards:
        raise ValueError(f"stage {stage!r} has no shards to merge")
    kinds = {ref.kind for ref in shards}
    if len(kinds) != 1:
        raise ValueError(f"shards of stage {stage!r} mix artifact kinds: {', '.join(sorted(kinds))}")
    tables = [read_artifact(ref) for ref in shards]
    table = pa.concat_tables(tables)
    kind = shards[0].kind
    schema_params: dict[str, object] = {}
    if kind == "embeddings":
        schema_params["dim"] = table.schema.field("embedding").type.list_size
    ref = ArtifactStore(context.artifacts_root, context.run_id).write(
        kind, stage, name, table, metadata=artifact_metadata(shards[0]), **schema_params
    )
    return StageResult(
        stage, {name: ref}, {"shards": float(len(shards)), "rows": float(ref.rows)}, {}, time.perf_counter() - started
    )
