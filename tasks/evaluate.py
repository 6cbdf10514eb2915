"""Stage: faithfulness of one method's attributions under token removal."""

from __future__ import annotations

import time
from collections import defaultdict

import numpy as np
import pyarrow as pa
from prefect import task

from storage import ArtifactRef, ArtifactStore, read_artifact
from tasks.caching import stage_cache_key
from tasks.corpus_io import read_corpus
from tasks.models import loaded_model
from tasks.progress import StageProgress
from tasks.results import RunContext, StageResult
from xattr.metrics.applicability import MetricNotApplicableError, require_task
from xattr.metrics.degradation import degradation_curves
from xattr.metrics.gold_alignment import gold_agreement
from xattr.metrics.mape import DEFAULT_MASK_FRACTIONS, mape_under_masking, select_accurate_texts, to_quantity
from xattr.metrics.perturbation import MetricValue, removal_curves
from xattr.metrics.precision_at_k import gold_token_mask, precision_at_k
from xattr.metrics.replacement import memoized, model_forward
from xattr.metrics.switching import switching_points
from xattr.metrics.uncertainty import bootstrap_mean
from xattr.models.loading import ModelSpec
from xattr.models.replacement import replacement_id
from xattr.types import ReplacementPolicy, TokenAttribution


def evaluation_sample(doc_ids: list[str], max_texts: int | None, seed: int) -> list[int]:
    """Positions of the texts to evaluate: all, or ``max_texts`` drawn with ``seed``.

    The draw depends only on the corpus and the seed, so every method is scored on the same texts.
    """
    if max_texts is None or max_texts >= len(doc_ids):
        return list(range(len(doc_ids)))
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(len(doc_ids), size=max_texts, replace=False))


#: Metric families the evaluate stage computes (``aopc`` also gives sufficiency and log-odds).
METRIC_FAMILIES: tuple[str, ...] = (
    "aopc",
    "degradation",
    "switching_point",
    "mape",
    "gold_auc",
    "gold_pearson",
    "precision_at_20",
)


def applicable_metrics(task: str, requested: tuple[str, ...] | None) -> tuple[str, ...]:
    """The metric families to compute: ``requested`` (each checked against ``task``), or every applicable one.

    Raises:
        MetricNotApplicableError: A requested metric is unknown or does not apply to ``task``.
    """
    if requested is None:
        # Gold-based metrics are added by the stage when the corpus has gold columns.
        return tuple(
            m for m in METRIC_FAMILIES if not m.startswith("gold_") and m != "precision_at_20" and _applies(m, task)
        )
    for metric in requested:
        if metric not in METRIC_FAMILIES:
            raise MetricNotApplicableError(f"unknown metric {metric!r}; known: {', '.join(METRIC_FAMILIES)}")
        require_task(metric, task)
    return tuple(requested)


def _applies(metric: str, task: str) -> bool:
    try:
        require_task(metric, task)
    except MetricNotApplicableError:
        return False
    return True


def answer_precision(
    encoded: list, attributions: list[TokenAttribution], spans: dict[int, list[tuple[int, int, int]]], k: int = 20
) -> list[MetricValue]:
    """Precision@k of each QA explanation against its answer span (Mask-LRP Sec. 5.1).

    Spans are ``(segment, start, end)``; answers are in the context (segment 1). Special tokens are
    never ranked.
    """
    values = []
    for attribution in attributions:
        if attribution.position not in spans:
            continue
        text = encoded[attribution.position]
        answer = [(start, end) for segment, start, end in spans[attribution.position] if segment == 1]
        gold = gold_token_mask(text.offsets, text.segments, answer)
        result = precision_at_k(
            attribution.scores, gold, k=k, candidates=~np.asarray(text.special, dtype=bool), normalise="answer"
        )
        values.append(MetricValue(attribution.position, attribution.target, f"precision_at_{k}", None, result.value))
    return values


def _gold_by_position(frame, chosen: list[int], column: str) -> dict[int, list]:  # noqa: ANN001
    if column not in frame.columns:
        return {}
    out = {}
    for i in chosen:
        value = frame[column].iloc[i]
        if value is not None and not (isinstance(value, float) and np.isnan(value)):
            out[i] = list(value)
    return out


@task(name="evaluate", task_run_name="evaluate-{label}", cache_key_fn=stage_cache_key, persist_result=True)
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
) -> StageResult:
    """Write the ``evaluation`` artifact: per-text values and aggregate rows (``doc_id`` null).

    ``metrics`` names the families to compute (``None``: every one that applies to the model's
    task); gold metrics (``gold_auc`` vs ``gold_spans``, ``gold_pearson`` vs ``gold_word_scores``)
    are added whenever the corpus has those columns. A requested metric that does not apply to the
    task is refused before any computation.
    """
    started = time.perf_counter()
    loaded = loaded_model(model)
    families = applicable_metrics(loaded.task, metrics)
    view = read_corpus(corpus, loaded)
    if not view.doc_ids:
        raise ValueError(f"evaluate-{label}: the evaluation corpus has no rows")
    chosen = evaluation_sample(view.doc_ids, max_texts, seed)
    position_of = {doc_id: i for i, doc_id in enumerate(view.doc_ids)}
    table = read_artifact(attributions).to_pandas().sort_values(["doc_id", "target", "token_index"], kind="stable")
    all_attributions = [
        TokenAttribution(position_of[doc_id], int(target), group["score"].to_numpy(dtype=np.float64))
        for (doc_id, target), group in table.groupby(["doc_id", "target"], sort=False)
        if doc_id in position_of
    ]
    if not all_attributions:
        raise ValueError(f"evaluate-{label}: no attributions match the corpus's documents")
    chosen_set = set(chosen)
    attributions_list = [a for a in all_attributions if a.position in chosen_set]
    progress = StageProgress(f"evaluate-{label}")
    # One cache for every metric: they share the unperturbed texts and the top-k removals.
    forward = memoized(model_forward(loaded, batch_size=batch_size, progress=progress))
    token = replacement_id(loaded.tokenizer, replacement)
    values: list[MetricValue] = []
    notes: list[str] = []
    extra: dict[str, float] = {}
    if "aopc" in families or "log_odds" in families:
        values += removal_curves(
            loaded,
            view.encoded,
            attributions_list,
            fractions=fractions,
            policy=replacement,
            batch_size=batch_size,
            progress=progress,
            forward=forward,
        )
    if "degradation" in families:
        values += degradation_curves(
            forward, view.encoded, attributions_list, task=loaded.task, replacement=token, fractions=fractions
        )
    if "switching_point" in families:
        values += switching_points(forward, view.encoded, attributions_list, task=loaded.task, replacement=token)
    if "mape" in families:
        labels = view.frame["label"].to_numpy(dtype=np.float64)
        candidates = sorted({a.position for a in all_attributions if np.isfinite(labels[a.position])})
        if not candidates:
            raise ValueError(f"evaluate-{label}: MAPE needs regression labels; the corpus has none")
        predicted = to_quantity(forward([view.encoded[i] for i in candidates])[:, 0], loaded.output_transform)
        selection = select_accurate_texts(
            predicted,
            labels[candidates],
            n=len(chosen),
            threshold=mape_threshold,
            seed=seed,
        )
        picked = {candidates[i] for i in selection.positions}
        values += mape_under_masking(
            forward,
            view.encoded,
            [a for a in all_attributions if a.position in picked],
            labels,
            replacement=token,
            output_transform=loaded.output_transform,
            fractions=mape_fractions,
        )
        notes.append(f"MAPE texts: {selection.describe()}")
        extra.update(
            mape_texts=float(len(picked)),
            mape_within_threshold=float(selection.within_threshold),
            mape_fallback=float(selection.fallback),
        )
    spans = {
        i: [(int(s["segment"]), int(s["start"]), int(s["end"])) for s in v]
        for i, v in _gold_by_position(view.frame, chosen, "gold_spans").items()
    }
    word_gold = _gold_by_position(view.frame, chosen, "gold_word_scores")
    if ("gold_auc" in families and not spans) or ("gold_pearson" in families and not word_gold):
        raise ValueError(f"evaluate-{label}: gold metrics were requested but the corpus has no gold columns")
    if loaded.task == "question_answering" and spans:
        values += answer_precision(view.encoded, attributions_list, spans)
    elif "precision_at_20" in families:
        raise ValueError(f"evaluate-{label}: precision_at_20 needs answer spans (gold_spans) in the corpus")
    if spans and loaded.task != "question_answering" or word_gold:
        gold_values, undefined = gold_agreement(
            view.encoded, attributions_list, spans=spans or None, word_gold=word_gold or None
        )
        values += gold_values
        extra.update({k: float(v) for k, v in undefined.items()})
        if spans and "gold_unlocated" in view.frame.columns:
            unlocated = view.frame["gold_unlocated"].iloc[chosen]
            extra["gold_unlocated"] = float(unlocated.fillna(0).sum())
            if extra["gold_unlocated"]:
                notes.append(f"{int(extra['gold_unlocated'])} gold items could not be located in their texts")
    rows: dict[str, list] = defaultdict(list)
    grouped: dict[tuple[str, float | None], list[float]] = defaultdict(list)
    for v in values:
        rows["doc_id"].append(view.doc_ids[v.position])
        rows["metric"].append(v.metric)
        rows["fraction"].append(v.fraction)
        rows["value"].append(v.value)
        grouped[(v.metric, v.fraction)].append(v.value)
    for (metric, fraction), vals in sorted(grouped.items(), key=lambda kv: (kv[0][0], kv[0][1] or -1.0)):
        rows["doc_id"].append(None)
        rows["metric"].append(metric)
        rows["fraction"].append(fraction)
        rows["value"].append(float(np.mean(vals)))
    n = len(rows["value"])
    out = pa.table(
        {
            "method": pa.array([label] * n, pa.string()),
            "doc_id": pa.array(rows["doc_id"], pa.string()),
            "metric": pa.array(rows["metric"], pa.string()),
            "fraction": pa.array(rows["fraction"], pa.float64()),
            "value": pa.array(rows["value"], pa.float64()),
            "replacement": pa.array([replacement] * n, pa.string()),
        }
    )
    ref = ArtifactStore(context.artifacts_root, context.run_id).write(
        "evaluation",
        f"evaluate-{label}",
        "evaluation",
        out,
        metadata={"replacement": replacement, "texts": str(len(chosen))},
    )
    summary = {"texts": float(len(chosen)), **extra}
    for (metric, fraction), vals in grouped.items():
        if fraction is None and len(vals) >= 2:
            # 95% percentile-bootstrap CI of the mean; the spread is over evaluated texts.
            estimate = bootstrap_mean(np.asarray(vals), seed=seed)
            summary[f"{metric}_ci_low"], summary[f"{metric}_ci_high"] = estimate.low, estimate.high
        # "name@step": tracking logs curves as one MLflow metric with the percentage as its step.
        key = metric if fraction is None else f"{metric}_curve@{round(fraction * 100)}"
        summary[key] = float(np.mean(vals))
    return StageResult(
        f"evaluate-{label}",
        {"evaluation": ref},
        summary,
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
        tuple(notes),
    )
