"""Methods side by side: the random baseline, the paired test against it, one MLflow run per method, curve PNGs.

Shared by the flows that score several methods (``explain_corpus``, ``benchmark``):

* :func:`with_random_baseline` adds the ``random`` method to an attribution config that lacks it;
* :func:`compare_with_random` runs the ``compare_methods`` stage (paired sign-flip test of each
  method against random, the ``method_verdicts`` artifact) and returns the tests and verdicts;
* :func:`log_method_runs` logs one MLflow child run per method: params ``method``, ``label`` and
  the method's resolved parameters, the metrics under the same plain names for every method
  (``aopc``, ``log_odds``, ``aopc_sufficiency``, ...), a ``xattr.verdict`` tag, so MLflow's
  compare view lines the methods up;
* :func:`write_curve_figures` draws each removal curve with every method overlaid.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from flows.runtime import FlowRun, MethodRun
from flows.settings import AttributionSettings, MethodConfig
from storage import read_artifact
from storage.text_files import write_binary_file
from tasks import tracking
from tasks.compare_methods import compare_methods_stage
from xattr.methods import get_method
from xattr.reporting.curves import plot_metric_curves

#: The baseline every method is tested against.
RANDOM = "random"


def with_random_baseline(attribution: AttributionSettings) -> AttributionSettings:
    """``attribution`` with the ``random`` method appended, unless a method already is ``random``."""
    if any(m.name == RANDOM for m in attribution.methods):
        return attribution
    if any(m.key == RANDOM for m in attribution.methods):
        raise ValueError(f"a method is labelled {RANDOM!r} but is not the random baseline; choose another label")
    return attribution.model_copy(update={"methods": [*attribution.methods, MethodConfig(name=RANDOM)]})


def random_key(methods: Sequence[MethodConfig]) -> str | None:
    """The key of the (first) random method, or ``None`` without one."""
    return next((m.key for m in methods if m.name == RANDOM), None)


def compare_with_random(
    run: FlowRun, methods: Sequence[MethodConfig], runs: Mapping[str, MethodRun], *, alpha: float = 0.05
) -> tuple[dict[str, dict[str, float]], list[dict[str, Any]]]:
    """The ``compare_methods`` stage over the methods' evaluations (nothing without a random method).

    Returns:
        Per method key (the reference left out), its ``vs_random/<metric>_difference`` and ``_p``
        values; and the ``method_verdicts`` rows.
    """
    reference = random_key(methods)
    if reference is None or len(runs) < 2:
        return {}, []
    result = run.stage(
        compare_methods_stage,
        evaluations={key: done.evaluation for key, done in runs.items()},
        metrics={key: dict(done.metrics) for key, done in runs.items()},
        reference=reference,
        alpha=alpha,
    )
    tests: dict[str, dict[str, float]] = {}
    for name, value in result.metrics.items():
        key, sep, metric = name.partition("/")
        if sep:
            tests.setdefault(key, {})[metric] = value
    rows = read_artifact(result.refs["verdicts"]).to_pylist()
    return tests, rows


def verdict_tags(methods: Sequence[MethodConfig], rows: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Per method key, its ``xattr.verdict`` tag: ``baseline``, ``better than random``, ``not better than random``."""
    reference = random_key(methods)
    tags = {reference: "baseline"} if reference is not None and rows else {}
    for row in rows:
        if row["primary"]:
            better = "better" if row["better_than_reference"] else "not better"
            tags[row["method"]] = f"{better} than {row['reference']}"
    return tags


def log_method_runs(
    run: FlowRun,
    methods: Sequence[MethodConfig],
    per_method: Mapping[str, Mapping[str, Any]],
    common: Mapping[str, Any],
    verdicts: Sequence[Mapping[str, Any]] = (),
) -> dict[str, str]:
    """One MLflow child run per method, named by its label, tagged ``xattr.method`` (and ``xattr.verdict``).

    Args:
        run: The flow run (its parent MLflow run).
        methods: The configured methods.
        per_method: Per method key: ``metrics`` (its evaluation metrics and tests, plain names),
            ``attribute_seconds``, ``evaluate_seconds`` and ``cached``.
        common: Params every method run carries (model, replacement, ...).
        verdicts: The ``method_verdicts`` rows (:func:`compare_with_random`).

    Returns:
        Per method key, its MLflow run id.
    """
    tags = verdict_tags(methods, verdicts)
    ids: dict[str, str] = {}
    for method in methods:
        info = per_method[method.key]
        metrics = dict(info["metrics"])
        metrics.update(
            attribute_seconds=info["attribute_seconds"],
            evaluate_seconds=info["evaluate_seconds"],
            method_seconds=info["attribute_seconds"] + info["evaluate_seconds"],
        )
        resolved = get_method(method.name, method.params).params.model_dump(mode="json")
        run_tags = {"xattr.method": method.key, "xattr.cache_hit": str(info["cached"]).lower()}
        if method.key in tags:
            run_tags["xattr.verdict"] = tags[method.key]
        ids[method.key] = tracking.log_child_run(
            run.tracking_uri,
            run.parent_run_id,
            method.key,
            {"method": method.name, "label": method.key, "params": resolved, **dict(common)},
            metrics,
            tags=run_tags,
        )
    return ids


def write_curve_figures(metrics: Mapping[str, Mapping[str, float]], out_dir: Path, name: str) -> dict[str, Path]:
    """Each curve any method has, every method overlaid, as ``out_dir/curves/<curve>.png``.

    Drawn in a scratch directory, then written atomically (never half a PNG in ``out_dir``).

    Args:
        metrics: Per method key, its metrics with curve points (``comprehensiveness_curve@10``, ...).
        out_dir: The run's report directory.
        name: The directory's name in the artifacts tree, for error messages.

    Returns:
        Per curve prefix, the PNG written.
    """
    figures: dict[str, Path] = {}
    with tempfile.TemporaryDirectory(prefix="xattr-curves-") as scratch:
        for prefix, drawn in plot_metric_curves(metrics, Path(scratch)).items():
            figures[prefix] = out_dir / "curves" / drawn.name
            write_binary_file(figures[prefix], drawn.read_bytes(), name=f"{name}/curves/{drawn.name}")
    return figures


__all__ = [
    "RANDOM",
    "compare_with_random",
    "log_method_runs",
    "random_key",
    "verdict_tags",
    "with_random_baseline",
    "write_curve_figures",
]
