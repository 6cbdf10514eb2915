"""Stage: faithfulness of one method's attributions under token removal."""

from __future__ import annotations

import time

import pyarrow as pa

from storage import ArtifactRef, ArtifactStore
from tasks.attribute import stored_outputs
from tasks.caching import stage_task
from tasks.corpus_io import document_rows, read_corpus
from tasks.models import loaded_model
from tasks.progress import StageProgress
from tasks.results import RunContext, StageResult
from xattr.metrics.applicability import MetricNotApplicableError
from xattr.metrics.mape import DEFAULT_MASK_FRACTIONS
from xattr.metrics.suite import attributions_from_table, evaluate_attributions, evaluated_positions
from xattr.models.loading import ModelSpec
from xattr.types import ReplacementPolicy

#: The corpus columns the metrics read (the texts come from the tokens artifact when given).
_EVALUATED_COLUMNS = ("label", "gold_spans", "gold_word_scores", "gold_unlocated")


@stage_task(name="evaluate", task_run_name="evaluate-{label}")
def evaluate_stage(
    corpus: ArtifactRef,
    attributions: ArtifactRef,
    model: ModelSpec,
    label: str,
    fractions: tuple[float, ...],
    replacement: ReplacementPolicy,
    max_texts: int | None,
    seed: int,
    batch_size: int,
    context: RunContext,
    metrics: tuple[str, ...] | None = ("aopc",),
    mape_fractions: tuple[float, ...] = DEFAULT_MASK_FRACTIONS,
    mape_threshold: float = 0.01,
    predictions: ArtifactRef | None = None,
    tokens: ArtifactRef | None = None,
) -> StageResult:
    """Write the ``evaluation`` artifact: per-text values and aggregate rows (``doc_id`` null).

    With ``predictions`` (the encode stage's artifact) the unperturbed texts are not predicted
    again: their outputs come from it; with ``tokens`` (the encode stage's too) the evaluated
    texts are read from it instead of tokenised.

    ``metrics`` names the families to compute (``None``: every one that applies to the model's
    task); gold metrics are added whenever the corpus has gold columns
    (:func:`xattr.metrics.suite.evaluate_attributions`). A requested metric that does not apply to
    the task is refused before any computation.
    """
    started = time.perf_counter()
    loaded = loaded_model(model)
    progress = StageProgress(f"evaluate-{label}")
    # Only the evaluated sample is read and its attribution rows converted (not the whole corpus).
    needed = evaluated_positions(loaded.task, metrics, corpus.rows, max_texts, seed)
    with progress.phase(f"reading {'every' if needed is None else len(needed)} texts and their attributions"):
        view = read_corpus(corpus, loaded, only=needed, tokens=tokens, columns=_EVALUATED_COLUMNS)
        wanted = None if needed is None else pa.array([view.doc_ids[i] for i in needed], pa.string())
        table = document_rows(attributions, wanted, columns=["doc_id", "target", "token_index", "score"])
        table = table.to_pandas()
    try:
        result = evaluate_attributions(
            loaded,
            view.encoded,
            view.frame,
            attributions_from_table(table, view.doc_ids),
            metrics=metrics,
            fractions=fractions,
            replacement=replacement,
            max_texts=max_texts,
            seed=seed,
            batch_size=batch_size,
            mape_fractions=mape_fractions,
            mape_threshold=mape_threshold,
            progress=progress,
            outputs=stored_outputs(predictions, view.doc_ids) if predictions is not None else None,
        )
    except MetricNotApplicableError:
        raise
    except ValueError as error:
        raise ValueError(f"evaluate-{label}: {error}") from error
    ref = ArtifactStore(context.artifacts_root, context.run_id).write(
        "evaluation",
        f"evaluate-{label}",
        "evaluation",
        result.to_arrow(label),
        metadata={"replacement": replacement, "texts": str(result.texts)},
    )
    families = result.families
    return StageResult(
        f"evaluate-{label}",
        {"evaluation": ref},
        result.metrics,
        {
            "replacement": replacement,
            "fractions": ",".join(f"{f:g}" for f in fractions),
            "metrics": ",".join(families),
            "mape_fractions": ",".join(f"{f:g}" for f in mape_fractions) if "mape" in families else "",
            "mape_threshold": f"{mape_threshold:g}" if "mape" in families else "",
            "max_texts": str(max_texts),
            "seed": str(seed),
            "removal_count": "ceil(fraction * removable tokens); special tokens never removed",
        },
        time.perf_counter() - started,
        result.notes,
    )
