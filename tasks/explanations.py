"""Stages: the per-class drivers and the explanation viewer of a run, built from its artifacts."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from storage import ArtifactRef, ArtifactStore, read_artifact
from storage.text_files import write_text_file
from tasks.attribute import stored_outputs
from tasks.caching import stage_task
from tasks.corpus_io import check_tokens, corpus_chunks, read_corpus, read_tokens
from tasks.models import loaded_model
from tasks.progress import StageProgress
from tasks.results import RunContext, StageResult
from xattr.models.loading import LoadedModel, ModelSpec
from xattr.reporting.baseline import ClassifierQuality, fine_tune_quality
from xattr.reporting.class_drivers import ChunkSource, ClassDriverSettings, DriverChunk, streamed_class_drivers
from xattr.reporting.viewer import (
    ViewerSettings,
    agreement_matrix,
    agreement_totals,
    listed_documents,
    render_explanations,
)
from xattr.reporting.words import (
    add_share_totals,
    corpus_words,
    top_word_lists,
    word_scores,
    word_share_totals,
    word_sums,
    word_table,
)

#: The ``token_attributions`` columns the class drivers read.
_SCORE_COLUMNS = ("doc_id", "word_index", "score")
#: The ``token_attributions`` columns the viewer reads.
_PIECE_COLUMNS = ("doc_id", "method", "target", "word_index", "score")


@stage_task(name="class_drivers", task_run_name="class_drivers")
def class_drivers_stage(
    corpus: ArtifactRef,
    predictions: ArtifactRef,
    attributions: ArtifactRef,
    model: ModelSpec,
    label: str,
    settings: ClassDriverSettings,
    context: RunContext,
    tokens: ArtifactRef | None = None,
) -> StageResult:
    """Write the ``class_drivers`` artifact (:func:`xattr.reporting.class_drivers.streamed_class_drivers`).

    The ranking uses method ``label``'s attributions, the classes and probabilities the
    ``predictions`` artifact's logits; the masked effects run the model (one forward pass per
    masked text of the top candidates). ``tokens``: the encode stage's artifact of ``corpus``,
    read instead of tokenising; the corpus is then read in its parts (a sharded run's shards),
    twice, memory holding one part's texts, tokens and attributions at a time. Without it the
    corpus is tokenised and held whole. A question-answering model gets no artifact (a note).
    """
    started = time.perf_counter()
    loaded = loaded_model(model)
    if loaded.task == "question_answering":
        note = "class drivers: not computed for a question-answering model"
        return StageResult("class_drivers", {}, {}, {"method": label}, time.perf_counter() - started, (note,))
    chunks = _driver_chunks(corpus, predictions, attributions, loaded, tokens)
    table = streamed_class_drivers(
        loaded,
        chunks,
        corpus.rows,
        settings,
        method=label,
        progress=StageProgress("class_drivers: masked texts predicted"),
        read_progress=StageProgress("class_drivers: texts read"),
    )
    ref = ArtifactStore(context.artifacts_root, context.run_id).write(
        "class_drivers", "class_drivers", "class_drivers", pa.Table.from_pandas(table, preserve_index=False)
    )
    params = {k: str(v) for k, v in vars(settings).items()} | {"method": label}
    return StageResult(
        "class_drivers",
        {"class_drivers": ref},
        {"drivers": float(len(table)), "classes": float(table["class"].nunique())},
        params,
        time.perf_counter() - started,
    )


def _driver_chunks(
    corpus: ArtifactRef,
    predictions: ArtifactRef,
    attributions: ArtifactRef,
    loaded: LoadedModel,
    tokens: ArtifactRef | None,
) -> ChunkSource:
    """The class drivers' chunks of the corpus: the parts of ``tokens``, else the whole corpus tokenised once."""
    if tokens is None:
        view = read_corpus(corpus, loaded, columns=["text", "text_pair"])
        whole = DriverChunk(
            view.doc_ids,
            view.frame["text"].tolist(),
            view.frame["text_pair"].tolist(),
            view.encoded,
            read_artifact(attributions, columns=list(_SCORE_COLUMNS)).to_pandas(),
            stored_outputs(predictions, view.doc_ids),
        )
        return lambda _: [whole]
    check_tokens(tokens, loaded)

    def chunks(with_scores: bool) -> Iterator[DriverChunk]:
        aligned = {"scores": (attributions, _SCORE_COLUMNS)} if with_scores else None
        for chunk in corpus_chunks(corpus, layout=tokens, columns=["text", "text_pair"], aligned=aligned):
            ids = chunk.frame["doc_id"]
            yield DriverChunk(
                ids.tolist(),
                chunk.frame["text"].tolist(),
                chunk.frame["text_pair"].tolist(),
                read_tokens(tokens, ids, rows=chunk.rows, size=len(chunk.rows)),
                chunk.tables["scores"].to_pandas() if with_scores else None,
                stored_outputs(predictions, ids.tolist(), rows=chunk.rows) if with_scores else None,
            )

    return chunks


@dataclass(frozen=True)
class ViewerInputs:
    """The artifacts one run's viewer is built from (stored in ``summary.json`` under ``viewer``).

    Attributes:
        corpus: The corpus artifact.
        predictions: The ``predictions`` artifact.
        attributions: ``token_attributions`` per method label, in the order the rows are shown.
        signed: Per method label, whether its scores are signed.
        evaluations: The ``evaluation`` artifacts (``random``'s included).
        drivers: The ``class_drivers`` artifact, if computed.
        quality: A classifier's held-out quality for the viewer's verdict (:func:`held_out_quality`),
            if the run has one; else the viewer uses the corpus's gold labels.
    """

    corpus: ArtifactRef
    predictions: ArtifactRef
    attributions: dict[str, ArtifactRef]
    signed: dict[str, bool]
    evaluations: tuple[ArtifactRef, ...] = ()
    drivers: ArtifactRef | None = None
    quality: dict[str, float] | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "corpus": self.corpus.to_dict(),
            "predictions": self.predictions.to_dict(),
            "attributions": {k: r.to_dict() for k, r in self.attributions.items()},
            "signed": dict(self.signed),
            "evaluations": [r.to_dict() for r in self.evaluations],
            "drivers": self.drivers.to_dict() if self.drivers is not None else None,
            "quality": dict(self.quality) if self.quality is not None else None,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> ViewerInputs:
        drivers = d.get("drivers")
        return cls(
            ArtifactRef.from_dict(d["corpus"]),  # type: ignore[arg-type]
            ArtifactRef.from_dict(d["predictions"]),  # type: ignore[arg-type]
            {k: ArtifactRef.from_dict(r) for k, r in d["attributions"].items()},  # type: ignore[attr-defined]
            {k: bool(v) for k, v in d["signed"].items()},  # type: ignore[attr-defined]
            tuple(ArtifactRef.from_dict(r) for r in d.get("evaluations", ())),  # type: ignore[union-attr]
            ArtifactRef.from_dict(drivers) if drivers else None,  # type: ignore[arg-type]
            dict(d["quality"]) if d.get("quality") else None,  # type: ignore[call-overload]
        )


def held_out_quality(fine_tune: Mapping[str, object] | None) -> dict[str, float] | None:
    """A fine-tuned classifier's validation metrics the viewer's verdict needs (JSON for ``summary.json``).

    Args:
        fine_tune: The flow's fine-tune summary (``tasks.fine_tune.fine_tune_summary``) when the
            model was fine-tuned on the corpus it explains, else ``None``.

    Returns:
        ``accuracy``, ``majority_accuracy``, ``majority_class`` and ``rows``, or ``None`` when
        :func:`xattr.reporting.baseline.fine_tune_quality` finds no verdict in them.
    """
    if not fine_tune:
        return None
    metrics = dict(fine_tune.get("metrics") or {})  # type: ignore[call-overload]
    rows = int(fine_tune.get("validation_rows") or 0)  # type: ignore[call-overload]
    if fine_tune_quality(metrics, rows) is None:
        return None
    return {k: float(metrics[k]) for k in ("accuracy", "majority_accuracy", "majority_class")} | {"rows": float(rows)}


def _quality(quality: Mapping[str, float] | None, predictions: pd.DataFrame) -> ClassifierQuality | None:
    """The held-out quality with its majority class named as the predictions name it."""
    if not quality:
        return None
    names: dict[int, str] = {}
    for ids, labels in (("predicted_id", "predicted_label"), ("gold_id", "gold_label")):
        if ids in predictions and labels in predictions:
            pairs = predictions[[ids, labels]].dropna().drop_duplicates(ids)
            names.update({int(i): str(n) for i, n in zip(pairs[ids], pairs[labels], strict=True)})
    return fine_tune_quality(quality, int(quality["rows"]), names)


def explanations_page(
    inputs: ViewerInputs,
    settings: ViewerSettings,
    *,
    methods: Sequence[str] | None = None,
    documents: Sequence[str] | None = None,
    notes: Sequence[str] = (),
) -> str:
    """The viewer page of a run (:func:`xattr.reporting.viewer.render_explanations` over its artifacts).

    Args:
        inputs: The run's artifacts.
        settings: Sample size, cut, seed and title.
        methods: Show only these method rows (default: every method); the faithfulness table
            keeps every evaluated method (``random`` included).
        documents: List exactly these documents (default: the seeded stratified sample).
        notes: Lines under the header.

    Raises:
        ValueError: A requested method that the run did not compute, or a document not in the
            corpus (one line naming it and what exists).
    """
    chosen = list(methods) if methods else list(inputs.attributions)
    unknown = [m for m in chosen if m not in inputs.attributions]
    if unknown:
        raise ValueError(
            f"method {unknown[0]!r} was not computed in this run; computed: {', '.join(inputs.attributions)}"
        )
    predictions = read_artifact(inputs.predictions).to_pandas()
    doc_ids = read_artifact(inputs.corpus, columns=["doc_id"]).column("doc_id").to_pylist()
    shown = listed_documents(doc_ids, predictions, settings, documents)
    listed = pa.array(shown, pa.string())
    # Shard by shard (the predictions' parts): the listed documents' rows and texts, and of every
    # document the agreement matrix's per-shard sums; one shard's token rows are held at a time.
    pieces, texts, totals = [], [], []
    aligned = {m: (inputs.attributions[m], list(_PIECE_COLUMNS)) for m in chosen}
    layout = inputs.predictions
    for chunk in corpus_chunks(inputs.corpus, layout=layout, columns=["text", "text_pair"], aligned=aligned):
        sums = []
        for m in chosen:
            table = chunk.tables[m]
            pieces.append(table.filter(pc.is_in(table["doc_id"], value_set=listed)).to_pandas())
            sums.append(word_sums(table.to_pandas()))
        totals.append(agreement_totals(pd.concat(sums, ignore_index=True), chosen))
        texts.append(chunk.frame[chunk.frame["doc_id"].isin(set(shown))])
    evaluation = (
        pd.concat([read_artifact(r).to_pandas() for r in inputs.evaluations], ignore_index=True)
        if inputs.evaluations
        else None
    )
    drivers = read_artifact(inputs.drivers).to_pandas() if inputs.drivers is not None else None
    listed_corpus = pd.concat(texts, ignore_index=True)
    return render_explanations(
        listed_corpus,
        word_table(pd.concat(pieces, ignore_index=True), listed_corpus),
        predictions,
        {m: inputs.signed[m] for m in chosen},
        evaluation=evaluation,
        drivers=drivers,
        settings=settings,
        notes=notes,
        documents=shown,
        quality=_quality(inputs.quality, predictions),
        methods=chosen,
        agreement=agreement_matrix(None, chosen, totals=totals),
        doc_ids=doc_ids,
    )


def corpus_top_words(
    corpus: ArtifactRef,
    attributions: Mapping[str, ArtifactRef],
    signed: Mapping[str, bool],
    *,
    layout: ArtifactRef | None = None,
) -> dict[str, dict[str, list[dict[str, object]]]]:
    """Each method's top words over the corpus (:func:`xattr.reporting.words.top_word_lists`), read shard by shard.

    Args:
        corpus: The corpus artifact.
        attributions: ``token_attributions`` per method label.
        signed: Per label, whether its scores are signed.
        layout: A per-document dataset of the corpus whose parts are its shards (the
            ``predictions``); one shard's token rows are held at a time.
    """
    aligned = {m: (ref, list(_PIECE_COLUMNS)) for m, ref in attributions.items()}
    totals: dict[str, list[pd.DataFrame]] = {m: [] for m in attributions}
    for chunk in corpus_chunks(corpus, layout=layout, columns=["text", "text_pair"], aligned=aligned):
        words = corpus_words(chunk.frame)  # once per shard, for every method
        for m in attributions:
            totals[m].append(word_share_totals(word_scores(chunk.tables[m].to_pandas(), chunk.frame, words=words)))
    return {m: top_word_lists(signed=signed[m], totals=add_share_totals(totals[m])) for m in attributions}


@stage_task(name="viewer", task_run_name="viewer")
def viewer_stage(inputs: ViewerInputs, settings: ViewerSettings, context: RunContext) -> StageResult:
    """Write the run's explanation viewer, ``<run>/viewer/explanations.html`` (one self-contained page)."""
    started = time.perf_counter()
    page = explanations_page(inputs, settings)
    path = context.artifacts_root / context.run_id / "viewer" / "explanations.html"
    write_text_file(Path(path), page, name="viewer/explanations.html")
    return StageResult(
        "viewer",
        {},
        {"bytes": float(len(page.encode()))},
        {"max_documents": str(settings.max_documents), "max_chars": str(settings.max_chars)},
        time.perf_counter() - started,
        files={"viewer": str(path)},
    )
