"""The ``head_statistics`` flow: load the corpus and mine the Mask-LRP head masks, nothing else."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from flows.explain_corpus import _result_storage, _run_id, _Stages, run_head_statistics
from flows.settings import ExplainSettings
from tasks import tracking
from tasks.load_corpus import load_corpus_stage
from tasks.results import RunContext


@flow(name="head-statistics", log_prints=True)
def head_statistics_flow(settings: ExplainSettings) -> dict[str, Any]:
    """Run ``load_corpus`` and the head-statistics stage of ``settings`` (cached like ``explain_corpus``).

    Args:
        settings: The resolved configuration; only ``corpus``, ``model``, ``heads``, ``tracking``
            and ``evaluation.seed`` are used.

    Returns:
        Run id, MLflow parent run id, the statistics artifact reference, the heatmap path, the stage's
        metrics and whether it was served from cache.
    """
    workdir = settings.workdir.resolve()
    context = RunContext(workdir / "artifacts", _run_id())
    uri = settings.tracking_uri()
    parent = tracking.start_parent_run(
        uri,
        settings.tracking.experiment,
        workdir / "mlflow-artifacts",
        f"{settings.name}-heads",
        settings.model_dump(mode="json"),
        {"xattr.run_id": context.run_id, "xattr.flow": "head-statistics"},
    )
    stages = _Stages(_result_storage(workdir), uri, parent)
    try:
        corpus = stages.run(
            load_corpus_stage,
            path=settings.corpus.path,
            columns=settings.corpus.columns(),
            model=settings.model.spec(),
            empty_texts=settings.corpus.empty_texts,
            missing_labels=settings.corpus.missing_labels,
            context=context,
        ).refs["corpus"]
        result = run_head_statistics(stages, settings, corpus, context)
    except BaseException:
        tracking.finish_parent_run(uri, parent, {}, status="FAILED")
        raise
    tracking.finish_parent_run(uri, parent, {f"heads/{k}": v for k, v in result.metrics.items()})
    get_run_logger().info("head masks: %s", result.files["heatmap"])
    return {
        "run_id": context.run_id,
        "mlflow_run_id": parent,
        "tracking_uri": uri,
        "statistics": result.refs["statistics"],
        "heatmap": result.files["heatmap"],
        "metrics": result.metrics,
        "cached": stages.results[-1][1],
    }
