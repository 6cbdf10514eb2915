"""The ``benchmark`` flow: one dataset config -> fine-tune (or load) a model -> every method -> every metric.

Stages: ``prepare_splits`` (dataset adapter, seeded subsamples) -> ``fine_tune`` (reused when a model
with the same train rows, base model and settings exists) -> ``select_accurate`` (regression with
MAPE: LAFA 5.3's texts within 1% error) -> per method ``attribute`` and ``evaluate`` (the stages of
``explain_corpus``, cached across runs). MLflow: a parent run with the config, the comparison
table and the curve PNGs, and ONE child run per method holding its parameters and every metric
(curves as steps), so the MLflow UI compares methods side by side.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from flows.benchmark_settings import BenchmarkSettings, load_benchmark_settings
from flows.comparison import compare_with_random, log_method_runs, with_random_baseline, write_curve_figures
from flows.runtime import FlowRun, attribute_and_evaluate, fine_tune, flow_run, publish_markdown
from storage import ArtifactRef, read_artifact
from storage.text_files import write_text_file
from tasks import tracking
from tasks.benchmark import neighbour_pool_stage, prepare_splits_stage, select_accurate_stage
from tasks.build_index import build_index_stage
from tasks.encode_corpus import encode_corpus_stage
from tasks.fine_tune import fine_tune_summary
from tasks.head_statistics import head_statistics_stage
from tasks.layer_precision import layer_precision_stage
from tasks.results import RunContext, Shard
from tasks.shards import plan_shards
from xattr.methods import method_requirements
from xattr.metrics.suite import applicable_metrics
from xattr.models.loading import ModelSpec
from xattr.neighbours.selection import NeighbourRequest
from xattr.reporting.summary import MethodSummary, benchmark_markdown, merged_notes, metrics_table, paired_vs_reference


@flow(name="benchmark", log_prints=True)
def benchmark(settings: BenchmarkSettings) -> dict[str, Any]:
    """Benchmark every configured attribution method on one dataset.

    Args:
        settings: The resolved configuration (see ``flows.benchmark_settings.BenchmarkSettings``).

    Returns:
        Run id, MLflow parent run id, model, per-method metrics and seconds, the table's path.
    """
    started = time.perf_counter()
    with flow_run(settings, flow="benchmark", tags={"xattr.dataset": settings.dataset.name}) as run:
        summary = _benchmark(settings, run)
        summary["seconds"] = time.perf_counter() - started
        run.headline = {"seconds": summary["seconds"], **summary["neighbour_precision"]}
    summary.update(run_id=run.run_id, mlflow_run_id=run.parent_run_id, tracking_uri=run.tracking_uri)
    return summary


def _benchmark(settings: BenchmarkSettings, run: FlowRun) -> dict[str, Any]:
    logger = get_run_logger()
    context = run.context
    data = settings.dataset
    task = data.task
    families = applicable_metrics(task, tuple(settings.evaluation.metrics) if settings.evaluation.metrics else None)
    splits = run.stage(
        prepare_splits_stage,
        dataset=data.name,
        task=task,
        train=settings.data_file(data.train),
        eval_file=settings.data_file(data.eval),
        eval_fraction=data.eval_fraction,
        params=data.params,
        train_texts=data.train_texts,
        eval_texts=data.eval_texts,
        seed=data.seed,
    )
    notes: list[str] = [f"dataset {data.name}: {splits.params['source']}", *splits.notes]
    if settings.model.path:
        model_path, train_info = settings.model.path, {"reused": True, "given": True}
    else:
        trained = fine_tune(
            run,
            splits.refs["train"],
            settings.train.base_model,
            settings.train.train_config(),
            task=task,
            num_labels=settings.train.num_labels,
            name=task,
        )
        train_info = fine_tune_summary(trained, cached=run.stages.last_cached)
        model_path = train_info["path"]
    model = ModelSpec(model_path, None, False, settings.explain_length(), settings.model.device)
    evaluation = settings.evaluation
    corpus = splits.refs["eval"]
    layer_metrics: dict[str, float] = {}
    if evaluation.neighbour_precision:
        layers = run.stage(
            layer_precision_stage,
            corpus=corpus,
            model=model,
            neighbours=evaluation.neighbours,
            max_texts=int(splits.metrics["eval_rows"]),
            seed=evaluation.seed,
            batch_size=evaluation.batch_size,
        )
        layer_metrics = {f"neighbour_precision@{k.partition('@')[2]}": v for k, v in layers.metrics.items() if "@" in k}
        curve = ", ".join(f"layer {k.partition('@')[2]}: {v:.3f}" for k, v in layer_metrics.items())
        notes.append(
            f"neighbour precision (LAFA Eq. 8, M={evaluation.neighbours}, {int(layers.metrics['texts'])} pool texts, "
            f"category as the external label) by hidden layer: {curve}; best layer {int(layers.metrics['best_layer'])}"
        )
    if "mape" in families:
        selected = run.stage(
            select_accurate_stage,
            corpus=corpus,
            model=model,
            n=evaluation.max_texts or int(splits.metrics["eval_rows"]),
            threshold=evaluation.mape_threshold,
            seed=evaluation.seed,
            batch_size=evaluation.batch_size,
        )
        corpus = selected.refs["corpus"]
        notes += list(selected.notes)
    attribution = with_random_baseline(settings.attribution) if evaluation.random_baseline else settings.attribution
    methods = attribution.methods
    needs = [method_requirements(m.name, m.params) for m in methods]
    neighbour_layers = [_neighbour_layer(n.neighbours) for n in needs if n.neighbours is not None]
    pool: tuple[ArtifactRef, Shard] | None = None
    if neighbour_layers and evaluation.neighbour_pool == "train+eval" and splits.refs["train"].rows:
        pooled = run.stage(neighbour_pool_stage, scored=corpus, train=splits.refs["train"])
        # The scored texts are the pool's first positions: one shard of that size explains exactly them.
        pool = (pooled.refs["pool"], plan_shards(pooled.refs["pool"], corpus.rows)[0])
        notes += list(pooled.notes)
    searched = pool[0] if pool is not None else corpus
    indexes: dict[int, tuple[ArtifactRef, ArtifactRef]] = {}
    predictions: ArtifactRef | None = None
    tokens: ArtifactRef | None = None
    pool_predictions: ArtifactRef | None = None
    # The last layer's encode stage always runs: its predictions (one pass with the embeddings) are
    # what the attribute and evaluate stages read instead of predicting the corpus again.
    for layer in dict.fromkeys([-1, *neighbour_layers]):
        # The last layer's index sits with the other stages; another layer's under artifacts/layer-<n>/.
        where = context if layer == -1 else RunContext(context.artifacts_root / f"layer-{layer}", context.run_id)
        if layer == -1:
            encoded = run.stage(
                encode_corpus_stage, corpus=corpus, model=model, layer=layer, batch_size=32, context=where
            )
            predictions, tokens = encoded.refs["predictions"], encoded.refs["tokens"]
            if layer not in neighbour_layers:
                continue
        if layer != -1 or pool is not None:  # neighbours are searched in the pool, encoded beside the corpus
            if layer == -1:
                where = RunContext(context.artifacts_root / "pool", context.run_id)
            encoded = run.stage(
                encode_corpus_stage, corpus=searched, model=model, layer=layer, batch_size=32, context=where
            )
            pool_predictions = pool_predictions or encoded.refs["predictions"]
        embeddings = encoded.refs["embeddings"]
        index = run.stage(
            build_index_stage, embeddings=embeddings, index_type="flat_l2", neighbours=10, context=where
        ).refs["index"]
        indexes[layer] = (embeddings, index)
    head_masks = _head_masks(settings, splits.refs["train"], model, run) if any(n.head_masks for n in needs) else None
    if head_masks is not None:
        notes.append(f"head masks mined on the train split ({head_masks[1]})")
    runs = attribute_and_evaluate(
        run,
        attribution,
        corpus=corpus,
        model=model,
        seed=evaluation.seed,
        evaluation=evaluation.stage_arguments(families),
        index_for=lambda request: indexes[_neighbour_layer(request)],
        head_masks=head_masks[0] if head_masks is not None else None,
        neighbour_pool=(*pool, pool_predictions) if pool is not None else None,
        predictions=predictions,
        tokens=tokens,
    )
    per_method: dict[str, dict[str, Any]] = {}
    method_notes: list[tuple[str, tuple[str, ...]]] = []
    for method in methods:
        done = runs[method.key]
        # The attribute stage's diagnostics (fallbacks, kernel spread, kept heads, ...) beside the metrics.
        diagnostics = {f"attribute/{k}": v for k, v in done.attributed.metrics.items() if k not in _ATTRIBUTE_COUNTS}
        per_method[method.key] = {
            "method": method,
            "metrics": dict(done.metrics) | diagnostics,
            "evaluation": done.evaluation,
            "attributions": done.attributions,
            "attribute_seconds": done.attributed.seconds,
            "evaluate_seconds": done.evaluated.seconds,
            "cached": done.cached,
        }
        method_notes.append((method.key, tuple(done.evaluated.notes)))
        logger.info("%s: %s", method.key, {k: round(v, 4) for k, v in done.metrics.items() if "@" not in k})
    # A shared note the run already states (e.g. the MAPE text selection, which adds the pool size) is not repeated.
    notes += _merged_notes(method_notes, notes)
    tests, verdicts = compare_with_random(run, methods, runs)
    for key, found in tests.items():
        per_method[key]["metrics"].update(found)
    _paired_vs_named(per_method)
    summary = _report(settings, run, per_method, families, notes, model_path, train_info, verdicts)
    summary["head_statistics"] = head_masks[0].to_dict() if head_masks is not None else None
    summary["neighbour_precision"] = layer_metrics
    summary["eval_split"] = splits.refs["eval"].to_dict()
    summary["attributions"] = {key: info["attributions"].to_dict() for key, info in per_method.items()}
    return summary


#: Attribute-stage metrics that are counts of the run, not diagnostics of the method.
_ATTRIBUTE_COUNTS = frozenset({"texts", "explanations", "texts_per_second", "shards", "rows"})


def _neighbour_layer(request: NeighbourRequest) -> int:
    """The hidden layer whose neighbour index a request needs (its ``layer``, else the last: ``-1``)."""
    return -1 if request.layer is None else int(request.layer)


def _head_masks(
    settings: BenchmarkSettings, train: ArtifactRef, model: ModelSpec, run: FlowRun
) -> tuple[ArtifactRef, str]:
    """Mine head statistics on the train split (once, for the methods that use head masks).

    Returns the ``head_statistics`` artifact and a one-line summary (heads kept). The Fig. 5-style
    heatmap PNG is logged to the parent MLflow run.
    """
    result = run.stage(
        head_statistics_stage,
        corpus=train,
        model=model,
        seed=settings.evaluation.seed,
        **settings.heads.stage_arguments(),
    )
    for path in result.files.values():
        run.log_files({"heads": Path(path)})
    summary = ", ".join(f"{k} {v:g}" for k, v in sorted(result.metrics.items()) if "heads" in k) or "no counts"
    return result.refs["statistics"], summary


def _merged_notes(method_notes: list[tuple[str, tuple[str, ...]]], stated: list[str]) -> list[str]:
    """Evaluation notes, each once (``xattr.reporting.summary.merged_notes``), less those ``stated`` already gives."""
    return merged_notes(method_notes, stated)


def _paired_vs_named(per_method: dict[str, dict[str, Any]]) -> None:
    """Paired sign-flip tests on the same texts of each method with ``compare_to`` against that method
    (``vs_<key>/...``); the tests against ``random`` are the ``compare_methods`` stage's."""
    wanted = {key: info["method"].compare_to for key, info in per_method.items() if info["method"].compare_to}
    if not wanted:
        return
    keys = set(wanted) | set(wanted.values())
    evaluations = {key: read_artifact(per_method[key]["evaluation"]).to_pandas() for key in keys}
    metrics = {key: dict(per_method[key]["metrics"]) for key in keys}
    for key, reference in wanted.items():
        pair = {k: metrics[k] for k in (key, reference)}
        per_method[key]["metrics"].update(paired_vs_reference(pair, evaluations, reference=reference).get(key, {}))


def _report(
    settings: BenchmarkSettings,
    run: FlowRun,
    per_method: dict[str, dict[str, Any]],
    families: tuple[str, ...],
    notes: list[str],
    model_path: str,
    train_info: dict[str, Any],
    verdicts: list[dict[str, Any]],
) -> dict[str, Any]:
    context, uri, parent = run.context, run.tracking_uri, run.parent_run_id
    methods = {
        key: MethodSummary(info["metrics"], info["attribute_seconds"], info["evaluate_seconds"])
        for key, info in per_method.items()
    }
    markdown = benchmark_markdown(
        name=settings.name,
        run_id=context.run_id,
        dataset=settings.dataset.name,
        task=settings.dataset.task,
        model=model_path,
        fine_tune=train_info,
        replacement=settings.evaluation.replacement,
        fractions=settings.evaluation.fractions,
        families=families,
        methods=methods,
        notes=notes,
    )
    out_dir = context.artifacts_root / context.run_id / "benchmark"
    table_path = out_dir / "benchmark.md"
    write_text_file(table_path, markdown, name="benchmark/benchmark.md")
    table = metrics_table(
        {
            key: info["metrics"]
            | {
                "attribute_seconds": info["attribute_seconds"],
                "evaluate_seconds": info["evaluate_seconds"],
                "evaluation_path": info["evaluation"].path,  # per-text values (a cached stage's: an earlier run's)
            }
            for key, info in per_method.items()
        },
        curves=False,
    )
    csv_path = out_dir / "benchmark.csv"
    write_text_file(csv_path, table.to_csv(index=False), name="benchmark/benchmark.csv")
    figures = write_curve_figures({k: i["metrics"] for k, i in per_method.items()}, out_dir, "benchmark")
    tracking.log_files(uri, parent, {"benchmark": table_path})
    for path in figures.values():
        tracking.log_files(uri, parent, {"curves": path})
    log_method_runs(
        run,
        [info["method"] for info in per_method.values()],
        per_method,
        {
            "dataset": settings.dataset.name,
            "task": settings.dataset.task,
            "model": model_path,
            "replacement": settings.evaluation.replacement,
            "max_texts": settings.evaluation.max_texts,
            "target": settings.attribution.target,
            "metrics": ",".join(families),
        },
        verdicts,
    )
    publish_markdown(markdown, key="xattr-benchmark", description="xattr benchmark table")
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
