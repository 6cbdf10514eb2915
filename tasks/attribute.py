"""Stage: token attributions of every text by one method."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from prefect.logging import get_run_logger

from storage import (
    ArtifactRef,
    ArtifactStore,
    dataset_parts,
    embedding_matrix,
    read_artifact,
    read_index,
    read_index_manifest,
)
from tasks.build_index import neighbour_candidates
from tasks.caching import stage_task
from tasks.corpus_io import check_tokens, read_corpus, read_positions, read_tokens
from tasks.head_statistics import checked_head_masks
from tasks.models import loaded_model
from tasks.progress import StageProgress
from tasks.results import RunContext, Shard, StageResult, stage_suffix
from xattr.ldav.vectors import ldav_vectors_for
from xattr.methods import MethodContext, attribute_corpus, get_method
from xattr.methods.runner import attribution_table
from xattr.models.loading import LoadedModel, ModelSpec
from xattr.models.targets import TargetPolicy, resolve_targets
from xattr.neighbours.selection import (
    NeighbourRequest,
    NeighbourSelection,
    candidates_needed,
    cutoff_pairs,
    distance_cutoff,
    select_neighbours,
)


class IndexMismatchError(ValueError):
    """The neighbour index was built on another model or layer than the method asks for."""


def neighbour_selection(
    request: NeighbourRequest,
    loaded: LoadedModel,
    embeddings: ArtifactRef,
    index_ref: ArtifactRef,
    groups: dict[str, list],
    seed: int,
    rows: range | None = None,
) -> NeighbourSelection:
    """Neighbours by corpus position as a method's ``request`` asks, after checking the index.

    The candidates are the build_index stage's neighbours table (the corpus is searched once), of
    the texts at ``rows`` only (default all); the index itself is loaded and searched only when
    that table holds too few per text.
    """
    manifest = read_index_manifest(index_ref)
    if manifest.get("model") and manifest["model"] != loaded.source:
        raise IndexMismatchError(
            f"the neighbour index {index_ref.path} was built on model {manifest['model']!r}, "
            f"but the explained model is {loaded.source!r}"
        )
    if request.layer is not None:
        wanted = request.layer if request.layer >= 0 else loaded.num_layers + 1 + request.layer
        if str(wanted) != str(manifest.get("layer")):
            raise IndexMismatchError(
                f"the method asks for neighbours in layer {wanted}, but the index {index_ref.path} "
                f"was built on layer {manifest.get('layer')}; set encode.layer: {wanted}"
            )
    size = embeddings.rows
    candidates = neighbour_candidates(index_ref, size, rows)
    index = None
    epsilon = None
    if candidates is None or candidates[1].shape[1] < min(size - 1, candidates_needed(request)):
        get_run_logger().info("the neighbours table holds too few candidates per text; searching the index")
        index = read_index(index_ref)[0]
        candidates = None
        vectors = embedding_matrix(read_artifact(embeddings))
    else:  # the candidates serve: only the embeddings of the cut-off's sampled pairs are read
        vectors = np.zeros((size, 0), np.float32)
        if request.epsilon_quantile and size > 1:
            i, j = cutoff_pairs(size, seed=seed)
            sampled, inverse = np.unique(np.concatenate([i, j]), return_inverse=True)
            pairs = (inverse[: len(i)], inverse[len(i) :])
            epsilon = distance_cutoff(
                embedding_matrix(read_positions(embeddings, sampled)), request.epsilon_quantile, pairs=pairs
            )
    return select_neighbours(
        index,
        vectors,
        request,
        groups=groups.get(request.filter),
        seed=seed,
        candidates=candidates,
        rows=rows,
        epsilon=epsilon,
    )


def stored_outputs(
    predictions: ArtifactRef, doc_ids: Sequence[str] | pa.Array, rows: range | None = None
) -> np.ndarray:
    """The ``(n, num_outputs)`` model outputs of the ``predictions`` artifact, checked against the corpus' documents.

    Args:
        predictions: The ``predictions`` artifact of the corpus.
        doc_ids: The corpus' documents (of ``rows`` when given), in corpus order.
        rows: Only these corpus positions (of a dataset, only the parts holding them are read).

    Raises:
        ValueError: The artifact's documents are not the corpus' documents in corpus order.
    """
    table = read_artifact(predictions, rows=rows)
    stored = table.column("doc_id")
    expected = doc_ids if isinstance(doc_ids, pa.Array) else pa.array(list(doc_ids), pa.string())
    if len(stored) != len(expected) or not stored.combine_chunks().equals(expected.cast(stored.type)):
        raise ValueError(
            f"the predictions artifact {predictions.path} holds {len(stored)} documents that are not the "
            f"corpus' {len(expected)} documents in order"
        )
    logits = table.column("logits").combine_chunks()
    return np.asarray(logits.flatten(), dtype=np.float64).reshape(len(stored), -1)


def stored_scores(
    attributions: ArtifactRef, doc_ids: Sequence[str] | pa.Array, wanted: Iterable[tuple[int, int]]
) -> dict[tuple[int, int], torch.Tensor]:
    """The scores a ``token_attributions`` artifact holds for the (corpus position, target) pairs ``wanted``.

    Read part by part (a dataset's parts one at a time, four columns of each), keeping only the
    wanted explanations: memory holds what is asked for, not the artifact. The explanations of a
    part are matched to the wanted pairs as arrays (one hash lookup of the part's ids), so a part
    of documents no one asked for costs no Python work. Pairs the artifact does not hold are
    absent from the result.

    Args:
        attributions: The artifact.
        doc_ids: The document id of every corpus position.
        wanted: (corpus position, target) pairs.
    """
    wanted = set(wanted)
    if not wanted:
        return {}
    positions = np.array(sorted({p for p, _ in wanted}), np.int64)
    ids = doc_ids if isinstance(doc_ids, pa.Array) else pa.array(list(doc_ids), pa.string())
    wanted_ids = ids.take(pa.array(positions)).cast(pa.string())
    pairs = np.array(sorted(wanted), np.int64)
    stride = int(pairs[:, 1].max()) + 1
    wanted_keys = pairs[:, 0] * stride + pairs[:, 1]
    parts = dataset_parts(attributions) if Path(attributions.path).is_dir() else [attributions]
    out: dict[tuple[int, int], torch.Tensor] = {}
    for part in parts:
        # doc_id as a dictionary: the part's distinct ids are matched once, the rows by their index.
        table = read_artifact(part, columns=["doc_id", "target", "token_index", "score"], dictionary=["doc_id"])
        if not table.num_rows:
            continue
        starts = np.flatnonzero(table.column("token_index").to_numpy() == 0)
        ends = np.append(starts[1:], table.num_rows)
        documents = table.column("doc_id").unify_dictionaries()
        indices = pa.chunked_array([c.indices for c in documents.chunks]).to_numpy()
        in_part = pc.index_in(documents.chunk(0).dictionary, value_set=wanted_ids)
        found = in_part.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)[indices[starts]]
        targets = table.column("target").to_numpy()[starts].astype(np.int64)
        at = np.where(found >= 0, positions[np.maximum(found, 0)], -1)
        hit = np.flatnonzero((found >= 0) & (targets < stride) & np.isin(at * stride + targets, wanted_keys))
        scores = table.column("score").to_numpy()
        for k in hit.tolist():
            out[(int(at[k]), int(targets[k]))] = torch.from_numpy(scores[starts[k] : ends[k]].copy())
    return out


def _run_name() -> str:
    from prefect.runtime import task_run

    parameters = task_run.parameters
    return f"attribute-{parameters['label']}" + stage_suffix(parameters.get("shard"))


@stage_task(name="attribute", task_run_name=_run_name)
def attribute_stage(
    corpus: ArtifactRef,
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
    shard: Shard | None = None,
    predictions: ArtifactRef | None = None,
    tokens: ArtifactRef | None = None,
    base_attributions: ArtifactRef | None = None,
) -> StageResult:
    """Write the ``token_attributions`` artifact for method ``method`` under the name ``label``.

    The explained outputs come from the ``predictions`` artifact of the encode stage (the corpus
    is not predicted again); it is needed whenever targets or a neighbour filter depend on the
    prediction (``target="predicted"`` on a classifier, multi-label or QA model, or
    ``neighbour_filter: prediction``).

    The method's context holds what its requirements name: neighbours selected from the index, the
    masks of the ``head_masks`` artifact (from the head-statistics stage) after they are checked
    against the model's layers and heads, the model's LDAV vectors. Run on a ``shard``, only the
    shard's texts are explained (stage ``attribute-<label>-<shard>``; the artifact is the shard's
    part of the dataset ``attribute-<label>/attributions``); row positions are corpus positions
    and neighbours come from the whole corpus.

    The texts come from the encode stage's ``tokens`` artifact when given (else they are
    tokenised): only the explained texts and their neighbours are read, never the whole corpus.

    ``base_attributions``: the ``token_attributions`` of the method's base method
    (``Requirements.base``, LAFA's) on the whole corpus, with the same targets; the method reads
    the base scores of its texts and their neighbours from there and computes only the pairs it
    does not hold (a neighbour explained for another output). Not used for question answering,
    whose stored rows sum the start and end explanations.
    """
    started = time.perf_counter()
    attribution_method = get_method(method, params)
    requirements = attribution_method.requirements(attribution_method.params)
    loaded = loaded_model(model)
    masks = checked_head_masks(method, loaded, head_masks) if requirements.head_masks else None
    suffix = stage_suffix(shard)
    progress = StageProgress(f"attribute-{label}{suffix}")
    # The ids and labels of every text as Arrow columns (neighbour groups, the id of any position);
    # as Python objects only the shard's rows. The texts are read below.
    with progress.phase("reading the corpus' ids and labels"):
        columns = read_artifact(corpus, columns=["doc_id", "label", "label_set"])
    ids = columns.column("doc_id").combine_chunks()
    size = columns.num_rows
    inside = shard.positions if shard is not None else range(size)
    filter_by_prediction = requirements.neighbours is not None and requirements.neighbours.filter == "prediction"
    needs_predictions = (target == "predicted" and loaded.task != "regression") or filter_by_prediction
    if needs_predictions and predictions is None:
        raise ValueError(
            f"attribute-{label}: the explained outputs depend on the model's predictions; "
            "give the predictions artifact of the encode_corpus stage"
        )
    frame = columns.slice(inside.start, len(inside)).to_pandas()
    every_logit = stored_outputs(predictions, ids) if predictions is not None and filter_by_prediction else None
    if every_logit is not None:
        logits = every_logit[inside.start : inside.stop]
    elif predictions is not None:  # the shard's rows only
        logits = stored_outputs(predictions, ids.slice(inside.start, len(inside)), rows=inside)
    else:  # every target is known without a prediction: the regression output or the gold label
        logits = np.zeros((len(inside), loaded.num_outputs))
    label_sets = frame["label_set"].tolist() if target == "label" else None
    scoped_targets = resolve_targets(
        loaded.task, logits, policy=target, labels=frame["label"].tolist(), label_sets=label_sets
    )
    targets: list[Sequence[int]] = [()] * size  # one shared empty tuple outside the shard
    for position, row_targets in zip(inside, scoped_targets, strict=True):
        targets[position] = list(row_targets)
    notes: list[str] = []
    metrics: dict[str, float] = {}
    selection = None
    if requirements.neighbours is not None:
        if embeddings is None or index is None:
            raise ValueError(f"method {method!r} needs the neighbour index and embeddings")
        groups = {"label": columns.column("label").to_pandas().tolist()}
        if every_logit is not None:
            groups["prediction"] = np.argmax(every_logit, axis=1).tolist()
        with progress.phase("selecting neighbours"):
            selection = neighbour_selection(
                requirements.neighbours, loaded, embeddings, index, groups, seed, rows=inside
            )
        counts = [len(selection.neighbours.get(i, ())) for i in inside]
        without = sum(count == 0 for count in counts)
        metrics = {
            "neighbours_max": float(selection.max_neighbours),
            "texts_without_neighbours": float(without),
            "neighbours_mean": float(np.mean(counts)),
        }
        if selection.epsilon is not None:
            metrics["epsilon"] = selection.epsilon
        if without:
            notes.append(f"{without} texts had no neighbour inside the cut-off; base attribution kept")
    needed = set(inside)
    if selection is not None:
        needed.update(j for i in inside for j in selection.neighbours.get(i, ()))
    with progress.phase(f"reading {len(needed)} texts" + (" (tokenising)" if tokens is None else "")):
        if tokens is not None:
            check_tokens(tokens, loaded, corpus)
            encoded = read_tokens(tokens, ids, positions=sorted(needed), size=size)
        else:
            encoded = read_corpus(corpus, loaded, only=sorted(needed), columns=()).encoded
    base_scores: dict[tuple[int, int], torch.Tensor] = {}
    if base_attributions is not None and requirements.base is not None and loaded.task != "question_answering":
        explained = [(i, t) for i in inside for t in targets[i]]
        near = selection.neighbours if selection is not None else {}
        wanted = explained + [(j, t) for i, t in explained for j in near.get(i, ())]
        with progress.phase(f"reading the stored {requirements.base[0]} scores of {len(set(wanted))} explanations"):
            base_scores = stored_scores(base_attributions, ids, wanted)
        dtype = loaded.model.get_input_embeddings().weight.dtype
        base_scores = {key: value.to(dtype) for key, value in base_scores.items()}
        metrics["base_scores_stored"] = float(len(base_scores))
    method_context = MethodContext(
        corpus=encoded,
        neighbours=selection.neighbours if selection else {},
        head_masks=masks,
        ldav_vectors=ldav_vectors_for(loaded) if requirements.ldav_vectors else None,
        base_scores=base_scores,
    )
    results = attribute_corpus(
        attribution_method,
        loaded,
        encoded,
        targets,
        context=method_context,
        batch_size=batch_size,
        progress=progress,
    )
    with progress.phase(f"writing the token rows of {len(results)} explanations"):
        table = attribution_table(ids, encoded, loaded.tokenizer, results, label)
        ref = ArtifactStore(context.artifacts_root, context.run_id).write(
            "token_attributions",
            f"attribute-{label}",
            "attributions",
            table,
            part=shard.number if shard is not None else None,
            metadata={
                "method": method,
                "params": repr(sorted(attribution_method.params.model_dump().items())),
                "target": target,
            },
        )
    seconds = time.perf_counter() - started
    metrics |= attribution_method.diagnostics(method_context)
    run_params = {"method": method, "target": target, "batch_size": str(batch_size)}
    if shard is not None:
        run_params.update(start=str(shard.start), stop=str(shard.stop))
    return StageResult(
        f"attribute-{label}{suffix}",
        {"attributions": ref},
        {"texts": float(len(inside)), "explanations": float(len(results)), "texts_per_second": len(inside) / seconds}
        | metrics,
        run_params | {f"param.{k}": str(v) for k, v in attribution_method.params.model_dump().items()},
        seconds,
        tuple(notes),
    )
