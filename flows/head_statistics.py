"""The ``head_statistics`` flow: load the corpus and mine the Mask-LRP head masks, nothing else."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from flows.explain_corpus import load_corpus, run_head_statistics
from flows.runtime import flow_run
from flows.settings import ExplainSettings


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
    with flow_run(settings, flow="head-statistics", run_name=f"{settings.name}-heads") as run:
        result = run_head_statistics(run, settings, load_corpus(run, settings))
        run.headline = {f"heads/{k}": v for k, v in result.metrics.items()}
    get_run_logger().info("head masks: %s", result.files["heatmap"])
    return {
        "run_id": run.run_id,
        "mlflow_run_id": run.parent_run_id,
        "tracking_uri": run.tracking_uri,
        "statistics": result.refs["statistics"],
        "heatmap": result.files["heatmap"],
        "metrics": result.metrics,
        "cached": run.stages.last_cached,
    }
