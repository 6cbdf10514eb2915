"""The ``explain_corpus`` flow: load corpus -> encode -> index -> attribute -> evaluate -> summary."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.filesystems import LocalFileSystem
from prefect.runtime import flow_run

from flows.settings import ExplainSettings
from storage import read_artifact
from storage.text_files import write_text_file
from tasks import tracking
from tasks.attribute import attribute_stage
from tasks.build_index import build_index_stage
from tasks.encode_corpus import encode_corpus_stage
from tasks.evaluate import evaluate_stage
from tasks.head_statistics import head_statistics_stage
from tasks.layer_precision import layer_precision_stage
from tasks.load_corpus import load_corpus_stage
from tasks.results import RunContext, StageResult
from tasks.shards import Shard, attribute_shard_stage, encode_shard_stage, merge_shards_stage, plan_shards
from xattr.methods import get_method
from xattr.reporting.summary import MethodSummary, explain_markdown, metrics_table
from xattr.reporting.words import top_word_lists, word_scores


def _result_storage(workdir: Path) -> str:
    """A saved local result-storage block under ``workdir`` (Prefect needs it saved server-side)."""
    slug = "xattr-results-" + hashlib.sha256(str(workdir).encode()).hexdigest()[:12]
    LocalFileSystem(basepath=str(workdir / "stage-cache")).save(slug, overwrite=True)
    return f"local-file-system/{slug}"


class _Stages:
    """Runs stage tasks with cross-run caching and records each as an MLflow child run."""

    def __init__(self, storage_slug: str, tracking_uri: str, parent_run_id: str) -> None:
        self.storage_slug = storage_slug
        self.tracking_uri = tracking_uri
        self.parent_run_id = parent_run_id
        self.results: list[tuple[StageResult, bool]] = []

    def run(self, stage_task: Any, **kwargs: Any) -> StageResult:
        configured = stage_task.with_options(result_storage=self.storage_slug)
        state = configured(**kwargs, return_state=True)
        result: StageResult = state.result()
        cached = state.name == "Cached"
        if cached and result.missing_artifacts():
            get_run_logger().warning("cache entry of %s points at deleted artifacts; recomputing", result.stage)
            state = configured.with_options(refresh_cache=True)(**kwargs, return_state=True)
            result, cached = state.result(), False
        tracking.log_stage(self.tracking_uri, self.parent_run_id, result, cached=cached)
        self.results.append((result, cached))
        return result

    def run_sharded(
        self, stage_task: Any, shard_task: Any, shards: list[Shard] | None, ref_name: str, **kwargs: Any
    ) -> StageResult:
        """Run ``stage_task`` whole, or ``shard_task`` per shard (submitted, so they run in parallel) and merge.

        The merged result is named like the whole stage and carries the merged artifact under
        ``ref_name``; its seconds are the shards' summed compute time.
        """
        if shards is None:
            return self.run(stage_task, **kwargs)
        configured = shard_task.with_options(result_storage=self.storage_slug)
        futures = [configured.submit(shard=shard, **kwargs) for shard in shards]
        parts: list[StageResult] = []
        for shard, future in zip(shards, futures, strict=True):
            future.wait()
            result, cached = future.result(), future.state.name == "Cached"
            if cached and result.missing_artifacts():
                get_run_logger().warning("cache entry of %s points at deleted artifacts; recomputing", result.stage)
                state = configured.with_options(refresh_cache=True)(shard=shard, **kwargs, return_state=True)
                result, cached = state.result(), False
            tracking.log_stage(self.tracking_uri, self.parent_run_id, result, cached=cached)
            self.results.append((result, cached))
            parts.append(result)
        stage = parts[0].stage.rsplit("-shard-", 1)[0]
        merged = self.run(
            merge_shards_stage,
            stage=stage,
            name=ref_name,
            shards=[p.refs[ref_name] for p in parts],
            context=kwargs["context"],
        )
        return dataclasses.replace(merged, seconds=sum(p.seconds for p in parts))


def _run_id() -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{str(flow_run.get_id() or 'local')[:8]}"


@flow(name="explain-corpus", log_prints=True)
def explain_corpus(settings: ExplainSettings) -> dict[str, Any]:
    """Explain every text of a corpus with each configured method and measure faithfulness.

    Args:
        settings: The resolved configuration (see ``flows.settings.ExplainSettings``).

    Returns:
        Run id, MLflow parent run id, artifact paths, per-method metrics and top words.
    """
    logger = get_run_logger()
    workdir = settings.workdir.resolve()
    context = RunContext(workdir / "artifacts", _run_id())
    uri = settings.tracking_uri()
    config = settings.model_dump(mode="json")
    parent = tracking.start_parent_run(
        uri,
        settings.tracking.experiment,
        workdir / "mlflow-artifacts",
        settings.name,
        config,
        {"xattr.run_id": context.run_id},
    )
    logger.info(
        "run %s: artifacts under %s, MLflow run %s (%s)",
        context.run_id,
        context.artifacts_root / context.run_id,
        parent,
        uri,
    )
    stages = _Stages(_result_storage(workdir), uri, parent)
    model = settings.model.spec()
    try:
        corpus = stages.run(
            load_corpus_stage,
            path=settings.corpus.path,
            columns=settings.corpus.columns(),
            model=model,
            empty_texts=settings.corpus.empty_texts,
            missing_labels=settings.corpus.missing_labels,
            context=context,
        ).refs["corpus"]
        layer = settings.encode.layer
        if settings.encode.layer_precision or layer == "auto":
            precision = stages.run(
                layer_precision_stage,
                corpus=corpus,
                model=model,
                neighbours=settings.index.neighbours,
                max_texts=settings.encode.precision_texts,
                seed=settings.evaluation.seed,
                batch_size=settings.encode.batch_size,
                context=context,
            )
            if layer == "auto":
                layer = int(precision.metrics["best_layer"])
                logger.info("encode.layer auto: layer %d has the best neighbour precision", layer)
        shards = plan_shards(corpus, settings.sharding.shard_size) if settings.sharding.shard_size else None
        embeddings = stages.run_sharded(
            encode_corpus_stage,
            encode_shard_stage,
            shards,
            "embeddings",
            corpus=corpus,
            model=model,
            layer=layer,
            batch_size=settings.encode.batch_size,
            context=context,
        ).refs["embeddings"]
        index = stages.run(
            build_index_stage,
            embeddings=embeddings,
            index_type=settings.index.type,
            neighbours=settings.index.neighbours,
            context=context,
            params=settings.index.params(),
            recall_queries=settings.index.recall_queries,
        ).refs["index"]
        head_masks = _head_masks(stages, settings, corpus, context)
        per_method: dict[str, dict[str, Any]] = {}
        for method in settings.attribution.methods:
            uses_neighbours = get_method(method.name, method.params).needs_references()
            uses_head_masks = get_method(method.name, method.params).uses_head_masks
            attributed = stages.run_sharded(
                attribute_stage,
                attribute_shard_stage,
                shards,
                "attributions",
                corpus=corpus,
                model=model,
                method=method.name,
                label=method.key,
                params=method.params,
                target=settings.attribution.target,
                batch_size=settings.attribution.batch_size,
                context=context,
                embeddings=embeddings if uses_neighbours else None,
                index=index if uses_neighbours else None,
                seed=settings.evaluation.seed,
                head_masks=head_masks if uses_head_masks else None,
            )
            evaluated = stages.run(
                evaluate_stage,
                corpus=corpus,
                attributions=attributed.refs["attributions"],
                model=model,
                label=method.key,
                fractions=tuple(settings.evaluation.fractions),
                replacement=settings.evaluation.replacement,
                max_texts=settings.evaluation.max_texts,
                seed=settings.evaluation.seed,
                batch_size=settings.evaluation.batch_size,
                context=context,
            )
            per_method[method.key] = {
                "attributions": attributed.refs["attributions"],
                "evaluation": evaluated.refs["evaluation"],
                "metrics": evaluated.metrics,
                "attribute_seconds": attributed.seconds,
                "signed": method.params.get("reduction") == "sum",
            }
        summary = _summarise(settings, context, corpus, per_method, stages.results)
    except BaseException:
        tracking.finish_parent_run(uri, parent, {}, status="FAILED")
        raise
    headline = {
        f"{key}/{m}": float(v) for key, info in per_method.items() for m, v in info["metrics"].items() if "@" not in m
    }
    headline["cache_hits"] = float(sum(cached for _, cached in stages.results))
    headline["stages"] = float(len(stages.results))
    tracking.log_files(
        uri, parent, {"summary": Path(summary["summary_path"]), "evaluation": Path(summary["evaluation_table"])}
    )
    tracking.finish_parent_run(uri, parent, headline)
    summary.update(
        run_id=context.run_id, mlflow_run_id=parent, tracking_uri=uri, cache_hits=int(headline["cache_hits"])
    )
    logger.info("done: %s", summary["summary_path"])
    return summary


def _head_masks(stages: _Stages, settings: ExplainSettings, corpus: Any, context: RunContext) -> Any:
    """Run the head-statistics stage once when a configured method uses head masks; its artifact or ``None``."""
    if not any(get_method(m.name, m.params).uses_head_masks for m in settings.attribution.methods):
        return None
    return run_head_statistics(stages, settings, corpus, context).refs["statistics"]


def run_head_statistics(stages: _Stages, settings: ExplainSettings, corpus: Any, context: RunContext) -> StageResult:
    """The head-statistics stage with the ``heads:`` settings (the PNG goes to its MLflow run)."""
    return stages.run(
        head_statistics_stage,
        corpus=corpus,
        model=settings.model.spec(),
        context=context,
        seed=settings.evaluation.seed,
        **settings.heads.stage_arguments(),
    )


def _summarise(
    settings: ExplainSettings,
    context: RunContext,
    corpus_ref: Any,
    per_method: dict[str, dict[str, Any]],
    stage_results: list[tuple[StageResult, bool]],
) -> dict[str, Any]:
    """Write ``summary.md`` / ``summary.json`` and a Prefect markdown artifact."""
    corpus = read_artifact(corpus_ref).to_pandas()
    out_dir = context.artifacts_root / context.run_id / "summary"
    top = {
        key: top_word_lists(word_scores(read_artifact(info["attributions"]).to_pandas(), corpus), signed=info["signed"])
        for key, info in per_method.items()
    }
    markdown = explain_markdown(
        run_id=context.run_id,
        model=settings.model.path,
        corpus=settings.corpus.path,
        texts=len(corpus),
        replacement=settings.evaluation.replacement,
        max_texts=settings.evaluation.max_texts,
        methods={key: MethodSummary(info["metrics"], info["attribute_seconds"]) for key, info in per_method.items()},
        top_words=top,
        stages=[(r.stage, r.seconds, c) for r, c in stage_results],
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
    try:
        create_markdown_artifact(markdown=markdown, key="xattr-summary", description="xattr run summary")
    except Exception:  # noqa: BLE001 - the UI artifact is a convenience; files and MLflow hold the record
        get_run_logger().warning("could not create the Prefect markdown artifact")
    payload.update(summary_path=str(summary_path), evaluation_table=str(table_path))
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
