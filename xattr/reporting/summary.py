"""Run summaries: the explain run's markdown, the benchmark table, paired tests against a reference.

Everything here takes per-method metric dicts (the tracking keys of
:func:`xattr.metrics.suite.evaluation_summary`: ``aopc``, ``aopc_ci_low``, ``mape_curve@10``, ...)
or evaluation rows, and returns markdown, rows or numbers; writing files is the caller's job.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from xattr.metrics.uncertainty import bootstrap_mean, paired_difference
from xattr.reporting.baseline import fine_tune_quality, majority_verdict

__all__ = [
    "EXPLAIN_COLUMNS",
    "HEADLINE",
    "MethodSummary",
    "benchmark_markdown",
    "explain_markdown",
    "faithfulness_table",
    "merged_notes",
    "metric_cell",
    "metrics_table",
    "paired_vs_reference",
    "per_text_values",
    "verdicts_vs_reference",
]

#: Headline metrics of the benchmark table, in table order: (key, label, better).
HEADLINE: tuple[tuple[str, str, str], ...] = (
    ("aopc", "AOPC", "higher"),
    ("aopc_sufficiency", "sufficiency", "lower"),
    ("log_odds", "log-odds", "lower"),
    ("degradation", "degradation (Eq. 6)", "lower"),
    ("degradation_area", "LeRF-MoRF area", "higher"),
    ("switching_point", "switching point", "lower"),
    ("mape", "MAPE", "higher"),
    ("gold_auc", "AUC vs gold spans (pieces)", "higher"),
    ("gold_word_auc", "AUC vs gold spans (words)", "higher"),
    ("gold_pearson", "Pearson vs gold words", "higher"),
)
#: Metrics of the explain run's faithfulness table, in column order.
EXPLAIN_COLUMNS: tuple[str, ...] = ("aopc", "aopc_sufficiency", "log_odds")


@dataclass(frozen=True)
class MethodSummary:
    """One method's row of a run summary.

    Attributes:
        metrics: Its evaluation metrics (tracking keys).
        attribute_seconds: Wall time of its attribution stage.
        evaluate_seconds: Wall time of its evaluation stage.
    """

    metrics: Mapping[str, float] = field(default_factory=dict)
    attribute_seconds: float = 0.0
    evaluate_seconds: float = 0.0


def metric_cell(metrics: Mapping[str, float], key: str) -> str:
    """``"0.123 [0.100, 0.150]"``: the value with its CI when both bounds are known, ``"-"`` when absent."""
    if key not in metrics:
        return "-"
    low, high = metrics.get(f"{key}_ci_low"), metrics.get(f"{key}_ci_high")
    ci = f" [{low:.3f}, {high:.3f}]" if low is not None and high is not None else ""
    return f"{metrics[key]:.3f}{ci}"


def metrics_table(metrics: Mapping[str, Mapping[str, float]], *, curves: bool = True) -> pd.DataFrame:
    """One row per method (``method`` then its metrics in their order); ``curves=False`` drops ``name@step`` keys."""
    rows = [
        {"method": key, **{k: v for k, v in values.items() if curves or "@" not in k}}
        for key, values in metrics.items()
    ]
    return pd.DataFrame(rows)


def explain_markdown(
    *,
    run_id: str,
    model: object,
    corpus: object,
    texts: int,
    replacement: str,
    max_texts: int | None,
    methods: Mapping[str, MethodSummary],
    top_words: Mapping[str, Mapping[str, Sequence[Mapping[str, Any]]]],
    stages: Sequence[tuple[str, float, bool]],
    verdicts: Sequence[Mapping[str, Any]] = (),
    drivers: pd.DataFrame | None = None,
    viewer: object | None = None,
    top_drivers: int = 5,
) -> str:
    """``summary.md`` of an explain run: faithfulness per method, drivers per class, top words, stage timings.

    Args:
        run_id: The run's id.
        model: The model's path, as shown.
        corpus: The corpus's path, as shown.
        texts: Texts in the corpus.
        replacement: Replacement policy of the evaluation.
        max_texts: Texts evaluated (``None``: all).
        methods: Per method key, its metrics and attribution seconds.
        top_words: Per method key, ``top`` (and for signed methods ``positive`` and ``negative``)
            word lists of :func:`xattr.reporting.words.top_word_lists`.
        stages: ``(stage, seconds, cached)`` in run order.
        verdicts: ``method_verdicts`` rows (:func:`verdicts_vs_reference`): each method's primary
            row fills its "vs random" cell, the reference's cell says "baseline".
        drivers: The ``class_drivers`` table (:mod:`xattr.reporting.class_drivers`): its first
            ``top_drivers`` per class are listed.
        viewer: The explanation viewer's path, linked under the title.
        top_drivers: Drivers listed per class.

    Returns:
        The markdown, ending with a newline.
    """
    nan = float("nan")
    primary = {row["method"]: row for row in verdicts if row["primary"]}
    references = {row["reference"] for row in verdicts}
    labels = {k: label for k, label, _ in HEADLINE}
    lines = [
        f"# xattr run `{run_id}`",
        "",
        f"Model: `{model}`; corpus: `{corpus}` ({texts} texts).",
        "",
        *([f"Explanation viewer: [{viewer}](file://{viewer})", ""] if viewer else []),
        f"## Faithfulness (replacement: `{replacement}`; CIs: bootstrap over texts; texts: {max_texts or 'all'})",
        "",
        "| method | AOPC [95% CI] | AOPC sufficiency [95% CI] | log-odds [95% CI] | vs random | attribute s |",
        "|---|---|---|---|---|---|",
    ]
    for key, method in methods.items():
        m = method.metrics
        cells = [
            f"{m.get(k, nan):.4f} [{m.get(k + '_ci_low', nan):.4f}, {m.get(k + '_ci_high', nan):.4f}]"
            for k in EXPLAIN_COLUMNS
        ]
        verdict = "-"
        if key in references:
            verdict = "baseline"
        elif key in primary:
            row = primary[key]
            word = "better" if row["better_than_reference"] else f"**not better than {row['reference']}**"
            verdict = f"{word} ({labels[row['metric']]} {row['difference']:+.3f}, p={row['p_value']:.3g})"
        lines.append(f"| {key} | {' | '.join(cells)} | {verdict} | {method.attribute_seconds:.1f} |")
    if drivers is not None and len(drivers):
        method = str(drivers["method"].iloc[0]) if "method" in drivers.columns else ""
        lines += [
            "",
            f"## Drivers per predicted class ({method}; mean signed attribution, masked effect [95% CI])",
            "",
            "| class | texts | top drivers |",
            "|---|---|---|",
        ]
        for name, rows in drivers.sort_values(["class_id", "rank"]).groupby("class", sort=False):
            cells = []
            for _, r in rows.head(top_drivers).iterrows():
                effect = ""
                if pd.notna(r["mean_effect"]):
                    effect = f"; {r['mean_effect']:+.3f} [{r['effect_ci_low']:+.3f}, {r['effect_ci_high']:+.3f}]"
                cells.append(f"{r['driver']} ({r['mean_attribution']:.3f}{effect})")
            lines.append(f"| {name} | {int(rows['class_texts'].iloc[0])} | {', '.join(cells)} |")
    for key, entry in top_words.items():
        lines += [
            "",
            f"## Top words: {key}",
            "",
            ", ".join(f"{w['word']} ({w['mean_share']:.3f})" for w in entry["top"]),
        ]
        for side in ("positive", "negative"):
            if side in entry:
                lines.append(f"\n{side}: " + ", ".join(w["word"] for w in entry[side]))
    lines += ["", "## Stages", "", "| stage | seconds | cached |", "|---|---|---|"]
    lines += [f"| {stage} | {seconds:.1f} | {'yes' if cached else 'no'} |" for stage, seconds, cached in stages]
    return "\n".join(lines) + "\n"


def benchmark_markdown(
    *,
    name: str,
    run_id: str,
    dataset: str,
    task: str,
    model: str,
    fine_tune: Mapping[str, Any],
    replacement: str,
    fractions: Sequence[float],
    families: Sequence[str],
    methods: Mapping[str, MethodSummary],
    notes: Sequence[str],
    reference: str = "random",
) -> str:
    """``benchmark.md``: one row per method over the :data:`HEADLINE` metrics any method has, paired tests, notes.

    Args:
        name: The benchmark's name.
        run_id: The run's id.
        dataset: Dataset name.
        task: The model's task.
        model: The model's path.
        fine_tune: The fine-tune stage's summary; its ``metrics``, when present, are shown.
        replacement: Replacement policy of the evaluation.
        fractions: Removal fractions.
        families: Metric families computed.
        methods: Per method key, its metrics (with ``vs_<reference>/...`` test results) and seconds.
        notes: Lines listed under "Notes".
        reference: The method the paired tests compare against (:func:`paired_vs_reference`).

    Returns:
        The markdown, ending with a newline.
    """
    present = [(k, label, better) for k, label, better in HEADLINE if any(k in m.metrics for m in methods.values())]
    trained = f" (fine-tune metrics: {json.dumps(fine_tune.get('metrics', {}))})" if "metrics" in fine_tune else ""
    lines = [
        f"# xattr benchmark `{name}` (run `{run_id}`)",
        "",
        f"Dataset `{dataset}` ({task}); model `{model}`" + trained,
        "",
        *_fine_tune_verdict(fine_tune),
        f"Replacement `{replacement}`; removal fractions {', '.join(f'{f:g}' for f in fractions)}; "
        f"metrics: {', '.join(families)}. Values: mean over evaluated texts [95% percentile-bootstrap CI over texts].",
        "",
        "| method | texts | "
        + " | ".join(f"{label} ({better} better)" for _, label, better in present)
        + " | attribute s | evaluate s |",
        "|---" * (len(present) + 4) + "|",
    ]
    for key, method in methods.items():
        m = method.metrics
        cells = " | ".join(metric_cell(m, k) for k, _, _ in present)
        lines.append(
            f"| {key} | {int(m.get('texts', 0))} | {cells} | {method.attribute_seconds:.1f} | "
            f"{method.evaluate_seconds:.1f} |"
        )
    if reference in methods and len(methods) > 1:
        lines += ["", f"Paired sign-flip test against `{reference}` on the same texts (difference, p):", ""]
        prefix = f"vs_{reference}/"
        for key, method in methods.items():
            m = method.metrics
            tests = [
                f"{label} {m[f'{prefix}{k}_difference']:+.3f} (p={m[f'{prefix}{k}_p']:.3g})"
                for k, label, _ in present
                if f"{prefix}{k}_p" in m
            ]
            if tests:
                lines.append(f"- {key}: " + "; ".join(tests))
    if notes:
        lines += ["", "Notes:", "", *[f"- {n}" for n in notes]]
    return "\n".join(lines) + "\n"


def per_text_values(table: pd.DataFrame, metric: str) -> pd.Series:
    """A metric's per-text values from ``evaluation`` rows, indexed by ``(doc_id, k)``.

    ``k`` numbers a document's rows (one per explained target) so that two methods pair up
    target by target. Curve points (rows with a fraction) and means (null ``doc_id``) are left out.
    """
    rows = table[(table["metric"] == metric) & table["fraction"].isna() & table["doc_id"].notna()].copy()
    rows["k"] = rows.groupby("doc_id").cumcount()
    return rows.set_index(["doc_id", "k"])["value"]


def paired_vs_reference(
    metrics: Mapping[str, Mapping[str, float]],
    evaluations: Mapping[str, pd.DataFrame],
    reference: str = "random",
) -> dict[str, dict[str, float]]:
    """Paired sign-flip test of each method against ``reference`` on their shared texts, per headline metric.

    A :data:`HEADLINE` metric is tested when both methods report it and share at least 2 texts
    (:func:`xattr.metrics.uncertainty.paired_difference`, its default seed and resamples).

    Args:
        metrics: Per method key, its metrics (which headline metrics it has).
        evaluations: Per method key, its ``evaluation`` rows.
        reference: The method compared against.

    Returns:
        Per method other than ``reference``: ``vs_<reference>/<metric>_difference`` (mean of
        method minus reference) and ``vs_<reference>/<metric>_p``. Empty without ``reference``.
    """
    if reference not in metrics:
        return {}
    out: dict[str, dict[str, float]] = {}
    for key, values in metrics.items():
        if key == reference:
            continue
        found: dict[str, float] = {}
        for metric, _, _ in HEADLINE:
            if metric not in values or metric not in metrics[reference]:
                continue
            a = per_text_values(evaluations[key], metric)
            b = per_text_values(evaluations[reference], metric)
            shared = a.index.intersection(b.index)
            if len(shared) < 2:
                continue
            test = paired_difference(a[shared].to_numpy(), b[shared].to_numpy())
            found[f"vs_{reference}/{metric}_difference"] = test.mean_difference
            found[f"vs_{reference}/{metric}_p"] = test.p_value
        out[key] = found
    return out


def verdicts_vs_reference(
    tests: Mapping[str, Mapping[str, float]], *, reference: str = "random", alpha: float = 0.05
) -> list[dict[str, Any]]:
    """Whether each method beats ``reference``, per tested headline metric: the ``method_verdicts`` rows.

    A method is better than the reference on a metric when the mean paired difference points the
    metric's better way (:data:`HEADLINE`) and its p-value is below ``alpha``. Each method's
    ``primary`` row, the one its verdict is read from, is ``aopc`` when tested, else its first
    tested headline metric.

    Args:
        tests: Per method, the ``vs_<reference>/<metric>_difference`` and ``_p`` values of
            :func:`paired_vs_reference`.
        reference: The method compared against.
        alpha: The significance level.

    Returns:
        Rows ``method, reference, metric, better, difference, p_value, better_than_reference,
        alpha, primary``, methods in ``tests`` order, metrics in :data:`HEADLINE` order.
    """
    prefix = f"vs_{reference}/"
    rows: list[dict[str, Any]] = []
    for method, found in tests.items():
        tested = [(k, better) for k, _, better in HEADLINE if f"{prefix}{k}_p" in found]
        primary = "aopc" if any(k == "aopc" for k, _ in tested) else (tested[0][0] if tested else None)
        for metric, better in tested:
            difference, p = found[f"{prefix}{metric}_difference"], found[f"{prefix}{metric}_p"]
            right_way = difference > 0 if better == "higher" else difference < 0
            rows.append(
                {
                    "method": method,
                    "reference": reference,
                    "metric": metric,
                    "better": better,
                    "difference": float(difference),
                    "p_value": float(p),
                    "better_than_reference": bool(right_way and p < alpha),
                    "alpha": float(alpha),
                    "primary": metric == primary,
                }
            )
    return rows


def _fine_tune_verdict(fine_tune: Mapping[str, Any]) -> list[str]:
    """A fine-tuned classifier's verdict against the majority class on its validation rows (else nothing)."""
    quality = fine_tune_quality(fine_tune.get("metrics") or {}, int(fine_tune.get("validation_rows") or 0))
    if quality is None:
        return []
    verdict = majority_verdict(quality)
    prefix = "**Verdict:**" if verdict.trusted else "**Do not trust these explanations:**"
    return [f"{prefix} {verdict.reason}", ""]


def merged_notes(method_notes: Sequence[tuple[str, Sequence[str]]], stated: Sequence[str] = ()) -> list[str]:
    """Evaluation notes, each once: prefixed "every method" when all methods gave it, else the method's key.

    A note that a line of ``stated`` already begins with (e.g. the MAPE text selection, which the
    run states with the pool size) is left out.
    """
    everyone = set.intersection(*(set(n) for _, n in method_notes)) if len(method_notes) > 1 else set()
    shared = dict.fromkeys(n for _, notes in method_notes for n in notes if n in everyone)
    merged = [f"every method: {n}" for n in shared]
    merged += [f"{key}: {n}" for key, notes in method_notes for n in notes if n not in everyone]
    return [n for n in merged if not any(line.startswith(n.removeprefix("every method: ")) for line in stated)]


def faithfulness_table(
    evaluation: pd.DataFrame, *, reference: str = "random", alpha: float = 0.05, seed: int = 0
) -> pd.DataFrame:
    """Per method and :data:`HEADLINE` metric: mean over texts, bootstrap CI, paired test against ``reference``.

    The means and CIs are those of :func:`xattr.metrics.suite.evaluation_summary` (95% percentile
    bootstrap over texts, ``seed``); the tests those of :func:`paired_vs_reference`. A method is
    *not better than* ``reference`` on a metric unless its paired difference points the metric's
    better way with ``p < alpha``; the method's flag is that of its first headline metric (AOPC
    when present).

    Args:
        evaluation: ``evaluation`` artifact rows of one or more methods (``method, doc_id, metric,
            fraction, value``).
        reference: The baseline method (its own rows get no test and no flag).
        alpha: Significance level of the flag.
        seed: Bootstrap seed.

    Returns:
        ``method, metric, better, texts, mean, ci_low, ci_high, vs_random_difference, vs_random_p,
        not_better_than_random`` (the test columns are NaN and the flag False for ``reference``
        and when it is absent), methods in their order in ``evaluation``.
    """
    per_text = evaluation[evaluation["fraction"].isna() & evaluation["doc_id"].notna()]
    methods = list(dict.fromkeys(per_text["method"]))
    direction = {m: better for m, _, better in HEADLINE}
    present: dict[str, dict[str, float]] = {}
    records: list[dict[str, Any]] = []
    for method in methods:
        rows = per_text[per_text["method"] == method]
        present[method] = {m: 1.0 for m in direction if (rows["metric"] == m).any()}
    evaluations = {m: evaluation[evaluation["method"] == m] for m in methods}
    tests = paired_vs_reference(present, evaluations, reference) if reference in present else {}
    prefix = f"vs_{reference}/"
    for method in methods:
        rows = per_text[per_text["method"] == method]
        first_flag: bool | None = None
        for metric, _, better in HEADLINE:
            values = rows.loc[rows["metric"] == metric, "value"].to_numpy(dtype=float)
            if values.size == 0:
                continue
            low = high = float("nan")
            if values.size >= 2:
                estimate = bootstrap_mean(values, seed=seed)
                low, high = estimate.low, estimate.high
            found = tests.get(method, {})
            difference = found.get(f"{prefix}{metric}_difference", float("nan"))
            p_value = found.get(f"{prefix}{metric}_p", float("nan"))
            flag = False
            if method != reference and reference in present and metric in present[reference]:
                towards = difference > 0 if better == "higher" else difference < 0
                flag = not (towards and p_value < alpha)
            if first_flag is None:
                first_flag = flag
            records.append(
                {
                    "method": method,
                    "metric": metric,
                    "better": better,
                    "texts": int(values.size),
                    "mean": float(values.mean()),
                    "ci_low": low,
                    "ci_high": high,
                    "vs_random_difference": difference,
                    "vs_random_p": p_value,
                    "not_better_than_random": bool(first_flag),
                }
            )
    columns = [
        "method", "metric", "better", "texts", "mean", "ci_low", "ci_high",
        "vs_random_difference", "vs_random_p", "not_better_than_random",
    ]  # fmt: skip
    return pd.DataFrame(records, columns=columns)
