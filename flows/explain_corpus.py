"""The ``explain_corpus`` flow: corpus -> encode -> index -> attribute -> evaluate -> drivers -> viewer -> summary."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner

from flows.comparison import compare_with_random, log_method_runs, with_random_baseline, write_curve_figures
from flows.runtime import FlowRun, MethodRun, attribute_and_evaluate, fine_tune, flow_run, publish_markdown
from flows.settings import EncodeSettings, ExplainSettings, IndexSettings, MethodConfig
from storage import ArtifactRef, read_artifact
from storage.text_files import write_text_file
from tasks.build_index import build_index_stage
from tasks.encode_corpus import encode_corpus_stage
from tasks.explanations import ViewerInputs, class_drivers_stage, corpus_top_words, held_out_quality, viewer_stage
from tasks.fine_tune import CorpusFile, fine_tune_summary
from tasks.head_statistics import head_statistics_stage
from tasks.layer_precision import layer_precision_stage
from tasks.load_corpus import load_corpus_stage
from tasks.results import RunContext, Shard, StageResult
from tasks.shards import plan_shards
from xattr.methods import method_requirements, method_signed
from xattr.models.loading import ModelSpec
from xattr.neighbours.selection import candidates_needed
from xattr.reporting.summary import MethodSummary, explain_markdown, metrics_table


# Shards run one at a time unless the settings' runner says otherwise (explain_corpus_with_runner):
# Prefect's default pool would run every shard at once, holding all their texts in memory together.
@flow(name="explain-corpus", log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=1))
def explain_corpus(settings: ExplainSettings) -> dict[str, Any]:
    """Explain every text of a corpus with each configured method and measure faithfulness.

    Args:
        settings: The resolved configuration (see ``flows.settings.ExplainSettings``).

    Returns:
        Run id, MLflow parent run id, artifact paths, per-method metrics and top words.
    """
    logger = get_run_logger()
    with flow_run(settings, flow="explain-corpus") as run:
        on_corpus = settings.model.fine_tune is not None and settings.model.fine_tune.train_path is None
        settings, trained = fine_tuned(run, settings)
        if settings.evaluation.random_baseline:
            settings = settings.model_copy(update={"attribution": with_random_baseline(settings.attribution)})
        model = settings.model.spec()
        corpus = load_corpus(run, settings)
        layer = settings.encode.layer
        if settings.encode.layer_precision or layer == "auto":
            precision = run.stage(
                layer_precision_stage,
                corpus=corpus,
                model=model,
                neighbours=settings.index.neighbours,
                max_texts=settings.encode.precision_texts,
                seed=settings.evaluation.seed,
                batch_size=settings.encode.batch_size,
            )
            if layer == "auto":
                layer = int(precision.metrics["best_layer"])
                logger.info("encode.layer auto: layer %d has the best neighbour precision", layer)
        shards = plan_shards(corpus, settings.sharding.shard_size) if settings.sharding.shard_size else None
        embeddings, index, predictions, tokens = neighbour_index(
            run, corpus, model, layer, settings.encode, settings.index, shards, methods=settings.attribution.methods
        )
        masked = any(method_requirements(m.name, m.params).head_masks for m in settings.attribution.methods)
        head_masks = run_head_statistics(run, settings, corpus, tokens).refs["statistics"] if masked else None
        evaluation = settings.evaluation
        runs = attribute_and_evaluate(
            run,
            settings.attribution,
            corpus=corpus,
            model=model,
            seed=evaluation.seed,
            evaluation=evaluation.stage_arguments(),
            index_for=lambda request: (embeddings, index),
            head_masks=head_masks,
            shards=shards,
            predictions=predictions,
            tokens=tokens,
        )
        methods = settings.attribution.methods
        tests, verdicts = compare_with_random(run, methods, runs)
        per_method: dict[str, dict[str, Any]] = {
            method.key: {
                "attributions": runs[method.key].attributions,
                "evaluation": runs[method.key].evaluation,
                "metrics": {**runs[method.key].metrics, **tests.get(method.key, {})},
                "attribute_seconds": runs[method.key].attributed.seconds,
                "evaluate_seconds": runs[method.key].evaluated.seconds,
                "cached": runs[method.key].cached,
                "signed": method_signed(method.name, method.params),
            }
            for method in methods
        }
        drivers = run_class_drivers(run, settings, corpus, predictions, runs, verdicts, tokens)
        inputs = ViewerInputs(
            corpus,
            predictions,
            {m.key: runs[m.key].attributions for m in methods},
            {m.key: method_signed(m.name, m.params) for m in methods},
            tuple(runs[m.key].evaluation for m in methods),
            drivers,
            # Trained on this corpus: its labels are mostly training rows, so the verdict uses the held-out ones.
            held_out_quality(trained) if on_corpus else None,
        )
        viewer = Path(
            run.stage(
                viewer_stage,
                inputs=inputs,
                settings=settings.viewer.library(settings.evaluation.seed, f"xattr explanations: {settings.name}"),
            ).files["viewer"]
        )
        summary = _summarise(
            settings, run.context, corpus, per_method, run.stages.results, verdicts, inputs=inputs, viewer=viewer
        )
        log_method_runs(
            run,
            methods,
            per_method,
            {
                "model": str(settings.model.path),
                "corpus": str(settings.corpus.path),
                "replacement": settings.evaluation.replacement,
                "max_texts": settings.evaluation.max_texts,
                "target": settings.attribution.target,
            },
            verdicts,
        )
        # Methods are compared on their own child runs (one per method); the parent holds the run's totals.
        run.headline = {"cache_hits": float(run.stages.cache_hits), "stages": float(len(run.stages.results))}
        run.log_files(
            {
                "summary": Path(summary["summary_path"]),
                "evaluation": Path(summary["evaluation_table"]),
                "viewer": viewer,
            }
        )
        for path in summary["figures"].values():
            run.log_files({"curves": Path(path)})
    if trained is not None:
        summary["fine_tune"] = trained
    summary.update(
        run_id=run.run_id,
        mlflow_run_id=run.parent_run_id,
        tracking_uri=run.tracking_uri,
        cache_hits=run.stages.cache_hits,
    )
    logger.info("done: %s", summary["summary_path"])
    return summary


def fine_tuned(run: FlowRun, settings: ExplainSettings) -> tuple[ExplainSettings, dict[str, Any] | None]:
    """With ``model.fine_tune``: the fine-tune stage on the corpus file, and settings naming the trained model.

    Returns:
        The settings to explain with (``model.path`` the trained model) and the stage's summary
        (``tasks.fine_tune.fine_tune_summary``), or the settings unchanged and ``None``.
    """
    wanted = settings.model.fine_tune
    if wanted is None:
        return settings, None
    corpus = settings.corpus
    trained = fine_tune(
        run,
        CorpusFile(wanted.train_path or corpus.path, corpus.columns(), None, corpus.empty_texts, corpus.missing_labels),
        wanted.base_model,
        wanted.train_config(),
        task=settings.model.task,
        num_labels=wanted.num_labels,
        name=settings.name,
    )
    model = settings.model.model_copy(update={"path": trained.params["model_path"], "fine_tune": None})
    return settings.model_copy(update={"model": model}), fine_tune_summary(trained, cached=run.stages.last_cached)


def load_corpus(run: FlowRun, settings: ExplainSettings) -> ArtifactRef:
    """The ``load_corpus`` stage with the ``corpus:`` settings; the corpus artifact."""
    return run.stage(
        load_corpus_stage,
        path=settings.corpus.path,
        columns=settings.corpus.columns(),
        model=settings.model.spec(),
        empty_texts=settings.corpus.empty_texts,
        missing_labels=settings.corpus.missing_labels,
    ).refs["corpus"]


def neighbour_index(
    run: FlowRun,
    corpus: ArtifactRef,
    model: ModelSpec,
    layer: int,
    encode: EncodeSettings,
    index: IndexSettings,
    shards: list[Shard] | None = None,
    methods: Sequence[MethodConfig] = (),
) -> tuple[ArtifactRef, ArtifactRef, ArtifactRef, ArtifactRef]:
    """The ``encode_corpus`` (sharded when ``shards``) and ``build_index`` stages.

    Returns embeddings, index, predictions and tokens.

    build_index searches as many neighbours per text as the neighbour-reading ``methods``
    examine, so that they read its table instead of searching again; the index type is
    ``index.type``, or exact up to ``index.exact_up_to`` texts and hnsw above.
    """
    requests = [method_requirements(m.name, m.params).neighbours for m in methods]
    candidates = max((candidates_needed(r) for r in requests if r is not None), default=0)
    encoded = run.stages.run_sharded(
        encode_corpus_stage,
        shards,
        corpus=corpus,
        model=model,
        layer=layer,
        batch_size=encode.batch_size,
        context=run.context,
    )
    embeddings = encoded.refs["embeddings"]
    built = run.stage(
        build_index_stage,
        embeddings=embeddings,
        index_type=index.type_for(corpus.rows),
        neighbours=index.neighbours,
        params=index.params(),
        recall_queries=index.recall_queries,
        candidates=candidates,
    )
    return embeddings, built.refs["index"], encoded.refs["predictions"], encoded.refs["tokens"]


def drivers_method(methods: Sequence[MethodConfig], verdicts: Sequence[Mapping[str, Any]]) -> str:
    """The method the class drivers rank by when ``drivers.method`` is not set.

    The method most faithful against ``random`` (largest primary-metric gain among those better
    than random), else the first signed method, else the first.
    """
    keys = {m.key for m in methods if m.name != "random"}
    faithful = sorted(
        (row for row in verdicts if row["primary"] and row["better_than_reference"] and row["method"] in keys),
        key=lambda row: -abs(float(row["difference"])),
    )
    if faithful:
        return str(faithful[0]["method"])
    signed = [m.key for m in methods if m.name != "random" and method_signed(m.name, m.params)]
    return signed[0] if signed else methods[0].key


def run_class_drivers(
    run: FlowRun,
    settings: ExplainSettings,
    corpus: ArtifactRef,
    predictions: ArtifactRef,
    runs: Mapping[str, MethodRun],
    verdicts: Sequence[Mapping[str, Any]] = (),
    tokens: ArtifactRef | None = None,
) -> ArtifactRef | None:
    """The ``class_drivers`` artifact of the ``drivers:`` settings, or ``None`` (disabled, or a QA model).

    ``tokens``: the encode stage's artifact of ``corpus``, read instead of tokenising.

    The drivers rank by ``drivers.method``, else by the method most faithful against ``random``
    (largest primary-metric gain among those better than random: on AG News a signed Grad*Input that
    scored below random ranked weekdays first), else by the first signed method.
    """
    wanted = settings.drivers
    methods = settings.attribution.methods
    if not wanted.enabled:
        return None
    if wanted.method is not None and wanted.method not in runs:
        known = ", ".join(m.key for m in methods)
        raise ValueError(f"drivers.method {wanted.method!r} is not a method of this run; methods: {known}")
    label = wanted.method or drivers_method(methods, verdicts)
    evaluation = settings.evaluation
    return run.stage(
        class_drivers_stage,
        corpus=corpus,
        predictions=predictions,
        attributions=runs[label].attributions,
        model=settings.model.spec(),
        label=label,
        settings=wanted.library(evaluation.seed, evaluation.batch_size),
        tokens=tokens,
    ).refs.get("class_drivers")


def run_head_statistics(
    run: FlowRun, settings: ExplainSettings, corpus: ArtifactRef, tokens: ArtifactRef | None = None
) -> StageResult:
    """The head-statistics stage with the ``heads:`` settings (the PNG goes to its MLflow run).

    ``tokens``: the encode stage's artifact of ``corpus``, read instead of tokenising.
    """
    return run.stage(
        head_statistics_stage,
        corpus=corpus,
        model=settings.model.spec(),
        seed=settings.evaluation.seed,
        tokens=tokens,
        **settings.heads.stage_arguments(),
    )


def _summarise(
    settings: ExplainSettings,
    context: RunContext,
    corpus_ref: Any,
    per_method: dict[str, dict[str, Any]],
    stage_results: list[tuple[StageResult, bool]],
    verdicts: list[dict[str, Any]],
    *,
    inputs: ViewerInputs,
    viewer: Path,
) -> dict[str, Any]:
    """Write ``summary.md`` / ``summary.json``, the overlaid curve PNGs and a Prefect markdown artifact.

    ``summary.json`` keeps the viewer's inputs (``viewer``) for ``xattr report explanations``.
    """
    logger = get_run_logger()
    logger.info("summary: top words of %d methods over %d texts", len(per_method), corpus_ref.rows)
    out_dir = context.artifacts_root / context.run_id / "summary"
    top = corpus_top_words(
        corpus_ref,
        {key: info["attributions"] for key, info in per_method.items()},
        {key: info["signed"] for key, info in per_method.items()},
        layout=inputs.predictions,
    )
    markdown = explain_markdown(
        run_id=context.run_id,
        model=settings.model.path,
        corpus=settings.corpus.path,
        texts=corpus_ref.rows,
        replacement=settings.evaluation.replacement,
        max_texts=settings.evaluation.max_texts,
        methods={key: MethodSummary(info["metrics"], info["attribute_seconds"]) for key, info in per_method.items()},
        top_words=top,
        stages=[(r.stage, r.seconds, c) for r, c in stage_results],
        verdicts=verdicts,
        drivers=read_artifact(inputs.drivers).to_pandas() if inputs.drivers is not None else None,
        viewer=viewer,
    )
    summary_path = out_dir / "summary.md"
    write_text_file(summary_path, markdown, name="summary/summary.md")
    table_path = out_dir / "evaluation.csv"
    table = metrics_table({key: info["metrics"] for key, info in per_method.items()})
    write_text_file(table_path, table.to_csv(index=False), name="summary/evaluation.csv")
    payload = {
        "artifacts_dir": str(context.artifacts_root / context.run_id),
        "metrics": {k: v["metrics"] for k, v in per_method.items()},
        "top_words": top,
        "verdicts": verdicts,
        "viewer": {"path": str(viewer), "inputs": inputs.to_dict()},
        "stages": [
            {
                "stage": r.stage,
                "seconds": r.seconds,
                "cached": c,
                "refs": {n: ref.to_dict() for n, ref in r.refs.items()},
            }
            for r, c in stage_results
        ],
    }
    write_text_file(out_dir / "summary.json", json.dumps(payload, indent=2, default=str), name="summary/summary.json")
    figures = write_curve_figures({key: info["metrics"] for key, info in per_method.items()}, out_dir, "summary")
    publish_markdown(markdown, key="xattr-summary", description="xattr run summary")
    payload.update(
        summary_path=str(summary_path),
        viewer=str(viewer),
        evaluation_table=str(table_path),
        figures={prefix: str(path) for prefix, path in figures.items()},
    )
    return payload


@flow(name="explain-corpus-from-config", log_prints=True)
def explain_corpus_from_config(config: str) -> dict[str, Any]:
    """Deployment entry point: read the YAML config at ``config`` and run :func:`explain_corpus`."""
    from flows.settings import load_settings

    return explain_corpus_with_runner(load_settings(config))


def explain_corpus_with_runner(settings: ExplainSettings) -> dict[str, Any]:
    """Run :func:`explain_corpus` on the task runner that ``settings.runner`` names."""
    from flows.runners import build_task_runner

    return explain_corpus.with_options(task_runner=build_task_runner(settings.runner))(settings)
