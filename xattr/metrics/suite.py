"""The metric suite: which metric families apply, computing them over a corpus, aggregates and CIs.

:func:`evaluate_attributions` scores one method's attributions on a sample of texts. Every
family shares one memoized forward pass (the unperturbed texts and the top-k removals are
predicted once). Per-text values become the ``evaluation`` rows; each ``(metric, fraction)`` is
then averaged over texts (rows with a null ``doc_id``), and each per-text metric (no fraction)
gets a 95% percentile-bootstrap CI over texts (:func:`xattr.metrics.uncertainty.bootstrap_mean`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa

from xattr.metrics.applicability import MetricNotApplicableError, require_task
from xattr.metrics.degradation import degradation_curves
from xattr.metrics.gold_alignment import gold_agreement
from xattr.metrics.mape import DEFAULT_MASK_FRACTIONS, mape_under_masking, select_accurate_texts, to_quantity
from xattr.metrics.perturbation import MetricValue, removal_curves
from xattr.metrics.precision_at_k import gold_token_mask, precision_at_k
from xattr.metrics.replacement import memoized, model_forward
from xattr.metrics.switching import switching_points
from xattr.metrics.uncertainty import bootstrap_mean
from xattr.models.encoding import EncodedText
from xattr.models.loading import LoadedModel
from xattr.models.replacement import replacement_id
from xattr.types import ReplacementPolicy, TokenAttribution

__all__ = [
    "METRIC_FAMILIES",
    "EvaluationResult",
    "EvaluationRow",
    "answer_precision",
    "applicable_metrics",
    "applies",
    "attributions_from_table",
    "evaluate_attributions",
    "evaluation_rows",
    "evaluation_sample",
    "evaluation_summary",
    "gold_by_position",
]

#: Metric families the suite computes (``aopc`` also gives sufficiency and log-odds).
METRIC_FAMILIES: tuple[str, ...] = (
    "aopc",
    "degradation",
    "switching_point",
    "mape",
    "gold_auc",
    "gold_pearson",
    "precision_at_20",
)
#: Called as ``(done, total)`` while texts are predicted.
Progress = Callable[[int, int], None]


def applies(metric: str, task: str) -> bool:
    """Whether ``metric`` is defined for a ``task`` model (:func:`xattr.metrics.applicability.require_task`)."""
    try:
        require_task(metric, task)
    except MetricNotApplicableError:
        return False
    return True


def applicable_metrics(task: str, requested: tuple[str, ...] | None) -> tuple[str, ...]:
    """The metric families to compute: ``requested`` (each checked against ``task``), or every applicable one.

    Gold-based families (``gold_*``, ``precision_at_20``) are not in the default set: the suite
    adds them whenever the corpus has gold columns.

    Raises:
        MetricNotApplicableError: A requested metric is unknown or does not apply to ``task``.
    """
    if requested is None:
        return tuple(
            m for m in METRIC_FAMILIES if not m.startswith("gold_") and m != "precision_at_20" and applies(m, task)
        )
    for metric in requested:
        if metric not in METRIC_FAMILIES:
            raise MetricNotApplicableError(f"unknown metric {metric!r}; known: {', '.join(METRIC_FAMILIES)}")
        require_task(metric, task)
    return tuple(requested)


def evaluation_sample(doc_ids: Sequence[str], max_texts: int | None, seed: int) -> list[int]:
    """Positions of the texts to evaluate: all, or ``max_texts`` drawn with ``seed``.

    The draw depends only on the corpus and the seed, so every method is scored on the same texts.
    """
    if max_texts is None or max_texts >= len(doc_ids):
        return list(range(len(doc_ids)))
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(len(doc_ids), size=max_texts, replace=False))


def evaluated_positions(
    task: str, metrics: tuple[str, ...] | None, texts: int, max_texts: int | None, seed: int
) -> list[int] | None:
    """The corpus positions :func:`evaluate_attributions` reads (encodings and attributions); ``None``: all.

    That is the seeded sample of :func:`evaluation_sample`, except with MAPE, which picks its
    texts among every labelled one. A caller may read and encode only these texts.

    Raises:
        MetricNotApplicableError: A requested metric is unknown or does not apply to ``task``.
    """
    if "mape" in applicable_metrics(task, metrics):
        return None
    return evaluation_sample(range(texts), max_texts, seed)  # type: ignore[arg-type]  # only the length is read


def attributions_from_table(table: pd.DataFrame, doc_ids: Sequence[str]) -> list[TokenAttribution]:
    """``token_attributions`` rows back as one :class:`TokenAttribution` per (document, target).

    Args:
        table: Rows with ``doc_id, target, token_index, score``, in any order.
        doc_ids: The corpus's documents in order; a row's position is its document's index here.
            Rows of other documents are dropped.

    Returns:
        Attributions ordered by ``doc_id`` then ``target``, scores in token order (float64).
    """
    position_of = {doc_id: i for i, doc_id in enumerate(doc_ids)}
    ordered = table.sort_values(["doc_id", "target", "token_index"], kind="stable")
    return [
        TokenAttribution(position_of[doc_id], int(target), group["score"].to_numpy(dtype=np.float64))
        for (doc_id, target), group in ordered.groupby(["doc_id", "target"], sort=False)
        if doc_id in position_of
    ]


def answer_precision(
    encoded: Sequence[EncodedText],
    attributions: Sequence[TokenAttribution],
    spans: dict[int, list[tuple[int, int, int]]],
    k: int = 20,
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


def gold_by_position(frame: pd.DataFrame, chosen: Sequence[int], column: str) -> dict[int, list]:
    """The non-null values of a gold ``column`` at the ``chosen`` positions, as lists ({} without the column)."""
    if column not in frame.columns:
        return {}
    out = {}
    for i in chosen:
        value = frame[column].iloc[i]
        if value is not None and not (isinstance(value, float) and np.isnan(value)):
            out[i] = list(value)
    return out


class EvaluationRow(NamedTuple):
    """One row of the ``evaluation`` artifact; ``doc_id`` is ``None`` on a mean over texts."""

    doc_id: str | None
    metric: str
    fraction: float | None
    value: float


def _grouped(values: Sequence[MetricValue]) -> dict[tuple[str, float | None], list[float]]:
    """Values per ``(metric, fraction)``, in order of first appearance."""
    grouped: dict[tuple[str, float | None], list[float]] = defaultdict(list)
    for v in values:
        grouped[(v.metric, v.fraction)].append(v.value)
    return grouped


def evaluation_rows(values: Sequence[MetricValue], doc_ids: Sequence[str]) -> list[EvaluationRow]:
    """Per-text rows in ``values`` order, then one mean per ``(metric, fraction)`` sorted by metric and fraction.

    Args:
        values: Per-text metric values; ``position`` indexes ``doc_ids``.
        doc_ids: The corpus's documents in order.
    """
    rows = [EvaluationRow(doc_ids[v.position], v.metric, v.fraction, v.value) for v in values]
    ordered = sorted(_grouped(values).items(), key=lambda kv: (kv[0][0], kv[0][1] or -1.0))
    rows += [EvaluationRow(None, metric, fraction, float(np.mean(vals))) for (metric, fraction), vals in ordered]
    return rows


def evaluation_summary(values: Sequence[MetricValue], seed: int) -> dict[str, float]:
    """Mean of each ``(metric, fraction)`` over texts, as tracking keys, with CIs of per-text metrics.

    A metric without a fraction is ``metric`` and, with at least 2 values, gets
    ``metric_ci_low`` / ``metric_ci_high`` (95% percentile bootstrap over texts, ``seed``). A curve
    point is ``metric_curve@<percent>`` (tracking logs it as one MLflow metric with the percentage
    as its step).
    """
    summary: dict[str, float] = {}
    for (metric, fraction), vals in _grouped(values).items():
        if fraction is None and len(vals) >= 2:
            estimate = bootstrap_mean(np.asarray(vals), seed=seed)
            summary[f"{metric}_ci_low"], summary[f"{metric}_ci_high"] = estimate.low, estimate.high
        key = metric if fraction is None else f"{metric}_curve@{round(fraction * 100)}"
        summary[key] = float(np.mean(vals))
    return summary


@dataclass(frozen=True)
class EvaluationResult:
    """One method's evaluation.

    Attributes:
        rows: Per-text rows, then the means over texts (:func:`evaluation_rows`).
        metrics: Texts evaluated, counts the families report (e.g. ``mape_texts``) and the means
            and CIs (:func:`evaluation_summary`), as tracking keys.
        notes: Human-readable lines about the texts used (e.g. the MAPE selection).
        families: The metric families computed (:func:`applicable_metrics`).
        texts: How many texts were sampled.
        replacement: The replacement policy of removed tokens.
    """

    rows: tuple[EvaluationRow, ...]
    metrics: dict[str, float] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    families: tuple[str, ...] = ()
    texts: int = 0
    replacement: str = "mask"

    def to_arrow(self, method: str) -> pa.Table:
        """The ``evaluation`` artifact's columns, every row labelled with ``method``."""
        n = len(self.rows)
        return pa.table(
            {
                "method": pa.array([method] * n, pa.string()),
                "doc_id": pa.array([r.doc_id for r in self.rows], pa.string()),
                "metric": pa.array([r.metric for r in self.rows], pa.string()),
                "fraction": pa.array([r.fraction for r in self.rows], pa.float64()),
                "value": pa.array([r.value for r in self.rows], pa.float64()),
                "replacement": pa.array([self.replacement] * n, pa.string()),
            }
        )


def evaluate_attributions(
    loaded: LoadedModel,
    encoded: Sequence[EncodedText],
    frame: pd.DataFrame,
    attributions: Sequence[TokenAttribution],
    *,
    metrics: tuple[str, ...] | None = ("aopc",),
    fractions: tuple[float, ...],
    replacement: ReplacementPolicy,
    max_texts: int | None,
    seed: int,
    batch_size: int,
    mape_fractions: tuple[float, ...] = DEFAULT_MASK_FRACTIONS,
    mape_threshold: float = 0.01,
    progress: Progress | None = None,
    outputs: np.ndarray | None = None,
) -> EvaluationResult:
    """Score attributions by every requested metric family on a seeded sample of texts.

    Gold metrics (``gold_auc`` vs ``gold_spans``, ``gold_pearson`` vs ``gold_word_scores``; for QA
    models ``precision_at_20`` vs the answer spans) are added whenever ``frame`` has those columns.
    MAPE draws its own texts among those with finite labels: ``len(sample)`` texts predicted
    within ``mape_threshold`` relative error (LAFA 5.3), the closest ones if too few are.

    Args:
        loaded: The explained model.
        encoded: The corpus's texts encoded for ``loaded``, in corpus order.
        frame: The corpus rows (``doc_id``; ``label`` for MAPE; optional ``gold_spans``,
            ``gold_word_scores``, ``gold_unlocated``), in the same order.
        attributions: Token attributions; ``position`` indexes ``encoded``.
        metrics: Families to compute (``None``: every one that applies to ``loaded.task``).
        fractions: Removal fractions of the curves.
        replacement: How removed tokens are replaced.
        max_texts: Texts sampled (``None``: all).
        seed: Seed of the sample, of the MAPE selection and of the bootstrap.
        batch_size: Texts per forward pass.
        mape_fractions: Mask fractions of the MAPE curve.
        mape_threshold: Relative error under which a text counts as accurately predicted.
        progress: Called as ``(done, total)`` while texts are predicted.
        outputs: The model's ``(len(encoded), num_outputs)`` outputs on the unperturbed texts
            (the ``predictions`` artifact), used instead of predicting them again.

    Returns:
        The :class:`EvaluationResult`.

    Raises:
        MetricNotApplicableError: A requested family is unknown or does not apply to the task
            (before any computation).
        ValueError: An empty corpus, no attribution of a corpus text, or a requested family whose
            data (regression labels, gold columns, answer spans) the corpus lacks.
    """
    families = applicable_metrics(loaded.task, metrics)
    doc_ids = frame["doc_id"].tolist()
    if not doc_ids:
        raise ValueError("the evaluation corpus has no rows")
    if not attributions:
        raise ValueError("no attributions match the corpus's documents")
    chosen = evaluation_sample(doc_ids, max_texts, seed)
    chosen_set = set(chosen)
    sampled = [a for a in attributions if a.position in chosen_set]
    # One cache for every metric: they share the unperturbed texts and the top-k removals.
    known = [] if outputs is None else [(encoded[i], outputs[i]) for i in sorted({a.position for a in attributions})]
    forward = memoized(model_forward(loaded, batch_size=batch_size, progress=progress), known)
    token = replacement_id(loaded.tokenizer, replacement)
    values: list[MetricValue] = []
    notes: list[str] = []
    extra: dict[str, float] = {}
    if "aopc" in families or "log_odds" in families:
        values += removal_curves(
            loaded,
            encoded,
            sampled,
            fractions=fractions,
            policy=replacement,
            batch_size=batch_size,
            progress=progress,
            forward=forward,
        )
    if "degradation" in families:
        values += degradation_curves(
            forward, encoded, sampled, task=loaded.task, replacement=token, fractions=fractions
        )
    if "switching_point" in families:
        values += switching_points(forward, encoded, sampled, task=loaded.task, replacement=token)
    if "mape" in families:
        labels = frame["label"].to_numpy(dtype=np.float64)
        candidates = sorted({a.position for a in attributions if np.isfinite(labels[a.position])})
        if not candidates:
            raise ValueError("MAPE needs regression labels; the corpus has none")
        predicted = to_quantity(forward([encoded[i] for i in candidates])[:, 0], loaded.output_transform)
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
            encoded,
            [a for a in attributions if a.position in picked],
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
        for i, v in gold_by_position(frame, chosen, "gold_spans").items()
    }
    word_gold = gold_by_position(frame, chosen, "gold_word_scores")
    if ("gold_auc" in families and not spans) or ("gold_pearson" in families and not word_gold):
        raise ValueError("gold metrics were requested but the corpus has no gold columns")
    if loaded.task == "question_answering" and spans:
        values += answer_precision(encoded, sampled, spans)
    elif "precision_at_20" in families:
        raise ValueError("precision_at_20 needs answer spans (gold_spans) in the corpus")
    if spans and loaded.task != "question_answering" or word_gold:
        gold_values, undefined = gold_agreement(encoded, sampled, spans=spans or None, word_gold=word_gold or None)
        values += gold_values
        extra.update({k: float(v) for k, v in undefined.items()})
        if spans and "gold_unlocated" in frame.columns:
            unlocated = frame["gold_unlocated"].iloc[chosen]
            extra["gold_unlocated"] = float(unlocated.fillna(0).sum())
            if extra["gold_unlocated"]:
                notes.append(f"{int(extra['gold_unlocated'])} gold items could not be located in their texts")
    return EvaluationResult(
        rows=tuple(evaluation_rows(values, doc_ids)),
        metrics={"texts": float(len(chosen)), **extra, **evaluation_summary(values, seed)},
        notes=tuple(notes),
        families=families,
        texts=len(chosen),
        replacement=replacement,
    )
