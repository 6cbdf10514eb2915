"""The one scaffold every flow runs in: run id, artifacts, MLflow parent run, cached stages, summary.

A flow body reads like its stage list::

    with flow_run(settings, flow="explain-corpus") as run:
        corpus = run.stage(load_corpus_stage, path=..., context=run.context).refs["corpus"]
        ...
        run.finish(headline_metrics)

:func:`flow_run` owns what every flow needs and must not get wrong: a run id, the
:class:`~tasks.results.RunContext` artifacts go under, the explicit-URI MLflow parent run
(marked FAILED on any exception, FINISHED with the headline metrics otherwise), the JSON stage cache
under ``<workdir>/stage-cache`` that makes stages cacheable across runs (``tasks.caching``), and
:class:`StageRunner`, which records one MLflow child run per stage and recomputes a stage whose
cache entry does not parse or whose artifacts were deleted or changed.
:func:`attribute_and_evaluate` is the per-method "attribute, then evaluate" loop shared by the
flows that score methods.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.futures import as_completed
from prefect.runtime import flow_run as prefect_flow_run

from flows.config_files import FlowSettingsBase, base_model_path
from flows.runners import worker_failure
from flows.settings import AttributionSettings
from storage import ArtifactRef, TrackingStoreError, path_component, writable_directory
from tasks import tracking
from tasks.attribute import attribute_stage
from tasks.caching import StageCache, task_cache_key
from tasks.evaluate import evaluate_stage
from tasks.fine_tune import CorpusFile, fine_tune_stage
from tasks.results import RunContext, Shard, StageResult
from tasks.shards import shard_dataset_stage
from xattr.methods import method_params, method_requirements
from xattr.models.loading import ModelSpec
from xattr.neighbours.selection import NeighbourRequest
from xattr.training.trainer import TrainConfig


def new_run_id() -> str:
    """``<UTC timestamp>-<first 8 characters of the Prefect flow-run id>`` (``local`` outside a flow)."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{str(prefect_flow_run.get_id() or 'local')[:8]}"


class StageRunner:
    """Runs stage tasks with the cross-run JSON stage cache and records each as an MLflow child run.

    A stage whose key has a valid entry in ``cache`` (``tasks.caching.StageCache``: its artifacts'
    bytes are the recorded ones) is not run; otherwise it runs and its result is stored.

    Attributes:
        results: Every stage run so far, with whether it was served from cache.
        last_cached: Whether the last :meth:`run` or :meth:`run_sharded` was served from cache
            (sharded: every shard and the dataset listing).
    """

    def __init__(self, cache: StageCache, tracking_uri: str, parent_run_id: str) -> None:
        self.cache = cache
        self.tracking_uri = tracking_uri
        self.parent_run_id = parent_run_id
        self.results: list[tuple[StageResult, bool]] = []
        self.last_cached = False

    @property
    def cache_hits(self) -> int:
        return sum(cached for _, cached in self.results)

    def _cached(self, stage_task: Any, kwargs: dict[str, Any]) -> tuple[str | None, StageResult | None]:
        key = task_cache_key(stage_task, kwargs)
        return key, self.cache.load(key) if key is not None else None

    def run(self, stage_task: Any, **kwargs: Any) -> StageResult:
        """Run one stage (from cache when its key has a valid entry) and record it."""
        key, hit = self._cached(stage_task, kwargs)
        if hit is not None:
            return self._record(hit, cached=True)
        result = stage_task(**kwargs)
        self._save(key, result)
        return self._record(result, cached=False)

    def run_sharded(self, stage_task: Any, shards: Sequence[Shard] | None, **kwargs: Any) -> StageResult:
        """Run ``stage_task`` on the whole corpus, or once per shard (in parallel) and list the parts.

        Shards with a valid cache entry are not submitted. The result is named like the whole
        stage and carries each artifact the shards wrote as one dataset of their parts
        (``tasks.shards.shard_dataset_stage``) under its short name; its seconds are the shards'
        summed compute time.
        """
        if not shards:
            return self.run(stage_task, **kwargs)
        found = [self._cached(stage_task, {**kwargs, "shard": shard}) for shard in shards]
        futures = {
            stage_task.submit(shard=shard, **kwargs): number
            for number, (shard, (_, hit)) in enumerate(zip(shards, found, strict=True))
            if hit is None
        }
        computed: dict[int, StageResult] = {}
        # As they finish, not in shard order: a failed shard (a dead Dask worker) stops the run at
        # once, and every finished shard's cache entry is written before it (a re-run resumes).
        for future in as_completed(list(futures)):
            number = futures[future]
            try:
                computed[number] = future.result()
            except Exception as exc:
                label = f"-{kwargs['label']}" if "label" in kwargs else ""
                failure = worker_failure(exc, f"{stage_task.name}{label}-{shards[number].name}")
                if failure is None:
                    raise
                raise failure from exc
            self._save(found[number][0], computed[number])
        parts = [
            self._record(computed[number] if hit is None else hit, cached=hit is not None)
            for number, (_, hit) in enumerate(found)
        ]
        all_cached = not computed
        listed = self.run(
            shard_dataset_stage,
            stage=parts[0].stage.rsplit("-shard-", 1)[0],
            shards=[p.refs for p in parts],
            context=kwargs["context"],
        )
        self.last_cached = all_cached and self.last_cached
        # One shard's metrics (a method's diagnostics) hold for the dataset as they are.
        single = len(parts) == 1
        metrics = {**parts[0].metrics, **listed.metrics} if single else listed.metrics
        notes = parts[0].notes if single else listed.notes
        return dataclasses.replace(listed, seconds=sum(p.seconds for p in parts), metrics=metrics, notes=notes)

    def _save(self, key: str | None, result: StageResult) -> None:
        if key is not None:
            self.cache.save(key, result)

    def _record(self, result: StageResult, *, cached: bool) -> StageResult:
        tracking.log_stage(self.tracking_uri, self.parent_run_id, result, cached=cached)
        self.results.append((result, cached))
        self.last_cached = cached
        return result


@dataclass
class FlowRun:
    """One flow run's scaffold (see :func:`flow_run`).

    Attributes:
        workdir: The resolved working directory.
        context: Where this run's artifacts go.
        tracking_uri: The explicit MLflow tracking URI.
        parent_run_id: The flow's MLflow parent run.
        stages: The stage runner (one MLflow child run per stage).
        headline: Metrics logged on the parent run when the flow finishes.
    """

    workdir: Path
    context: RunContext
    tracking_uri: str
    parent_run_id: str
    stages: StageRunner
    headline: dict[str, float] = field(default_factory=dict)

    @property
    def run_id(self) -> str:
        return self.context.run_id

    @property
    def run_dir(self) -> Path:
        """``artifacts/<run id>``: where this run's stage directories and summaries go."""
        return self.context.artifacts_root / self.context.run_id

    def stage(self, stage_task: Any, **kwargs: Any) -> StageResult:
        """Run one stage through :class:`StageRunner` (``context`` is this run's unless given)."""
        kwargs.setdefault("context", self.context)
        return self.stages.run(stage_task, **kwargs)

    def log_files(self, files: Mapping[str, Path]) -> None:
        """Attach files to the parent run under the given artifact sub-directories."""
        tracking.log_files(self.tracking_uri, self.parent_run_id, files)


def publish_markdown(markdown: str, *, key: str, description: str) -> None:
    """Show ``markdown`` in the Prefect UI; files and MLflow hold the record, so a failure only warns."""
    try:
        create_markdown_artifact(markdown=markdown, key=key, description=description)
    except Exception:  # noqa: BLE001 - the UI artifact is a convenience
        get_run_logger().warning("could not create the Prefect markdown artifact")


@contextmanager
def flow_run(
    settings: FlowSettingsBase,
    *,
    flow: str,
    run_name: str | None = None,
    tags: Mapping[str, str] | None = None,
    run_id: str | None = None,
) -> Iterator[FlowRun]:
    """The scaffold of one flow run; the MLflow parent run ends FAILED on any exception.

    Args:
        settings: The flow's resolved settings (its config is logged on the parent run).
        flow: The flow's name, tagged ``xattr.flow``.
        run_name: The MLflow run name (default ``settings.name``).
        tags: More parent-run tags.
        run_id: This run's id (default :func:`new_run_id`).

    Yields:
        The :class:`FlowRun`; on a normal exit its ``headline`` metrics are logged and the run
        is marked FINISHED.
    """
    workdir = writable_directory(settings.workdir)
    context = RunContext(workdir / "artifacts", path_component(run_id or new_run_id(), "run id"))
    uri = settings.tracking_uri()
    parent = tracking.start_parent_run(
        uri,
        settings.tracking.experiment,
        workdir / "mlflow-artifacts",
        run_name or settings.name,
        settings.model_dump(mode="json"),
        {"xattr.run_id": context.run_id, "xattr.flow": flow, **dict(tags or {})},
        log=get_run_logger().warning,
    )
    get_run_logger().info(
        "run %s: artifacts under %s, MLflow run %s (%s)",
        context.run_id,
        context.artifacts_root / context.run_id,
        parent,
        uri,
    )
    cache = StageCache(workdir / "stage-cache", get_run_logger().warning)
    run = FlowRun(workdir, context, uri, parent, StageRunner(cache, uri, parent))
    try:
        yield run
    except BaseException:
        try:
            tracking.finish_parent_run(uri, parent, {}, status="FAILED")
        except TrackingStoreError as exc:  # the run's own error is the one to report
            get_run_logger().warning("could not mark MLflow run %s FAILED: %s", parent, exc)
        raise
    tracking.finish_parent_run(uri, parent, run.headline)


@dataclass(frozen=True)
class MethodRun:
    """What :func:`attribute_and_evaluate` returns per method.

    Attributes:
        attributed: The attribute stage's result (one dataset of the shards' parts when sharded).
        evaluated: The evaluate stage's result.
        cached: Whether both stages were served from cache.
    """

    attributed: StageResult
    evaluated: StageResult
    cached: bool

    @property
    def attributions(self) -> ArtifactRef:
        return self.attributed.refs["attributions"]

    @property
    def evaluation(self) -> ArtifactRef:
        return self.evaluated.refs["evaluation"]

    @property
    def metrics(self) -> dict[str, float]:
        return self.evaluated.metrics


def fine_tune(
    run: FlowRun, rows: ArtifactRef | CorpusFile, base_model: str | None, config: TrainConfig, **options: Any
) -> StageResult:
    """The fine-tune stage (``tasks.fine_tune``): models under ``<workdir>/models``, reused while unchanged.

    Args:
        run: The flow run.
        rows: The training rows (an artifact, or a corpus file).
        base_model: The pretrained encoder (``None``: all-MiniLM-L6-v2).
        config: The trainer's settings.
        options: More ``fine_tune_stage`` arguments (``task``, ``num_labels``, ``name``, ``stage``,
            ``output_dir``).
    """
    options.setdefault("models_dir", str(run.workdir / "models"))  # a string: the key must not hash the models
    return run.stages.run(fine_tune_stage, rows=rows, base_model=base_model_path(base_model), config=config, **options)


#: The neighbour index (embeddings, index) that serves a method's neighbour request.
IndexFor = Callable[[NeighbourRequest], tuple[ArtifactRef, ArtifactRef]]


def attribute_and_evaluate(
    run: FlowRun,
    attribution: AttributionSettings,
    *,
    corpus: ArtifactRef,
    model: ModelSpec,
    seed: int,
    evaluation: Mapping[str, Any],
    index_for: IndexFor | None = None,
    head_masks: ArtifactRef | None = None,
    shards: Sequence[Shard] | None = None,
    neighbour_pool: tuple[ArtifactRef, Shard, ArtifactRef | None] | None = None,
    predictions: ArtifactRef | None = None,
    tokens: ArtifactRef | None = None,
) -> dict[str, MethodRun]:
    """For each configured method: its attribute stage (sharded when ``shards``), then its evaluate stage.

    Args:
        run: The flow run.
        attribution: The methods, which output they explain and the rows per attribution pass.
        corpus: The corpus artifact the methods explain and are evaluated on.
        model: The explained model.
        seed: Seed of neighbour selection (and of the evaluation unless ``evaluation`` sets one).
        evaluation: Keyword arguments of ``evaluate_stage`` beyond corpus, attributions, model,
            label and context (fractions, replacement, max_texts, batch_size, metrics, ...).
        index_for: The neighbour index for a method's request (each method declares whether it
            needs one: ``xattr.methods.method_requirements``).
        head_masks: The head-statistics artifact, given to the methods that need head masks.
        shards: Run attribute stages per shard, each writing its part of one dataset.
        neighbour_pool: ``(pool, shard, pool predictions)``: methods that need neighbours run on
            the ``pool`` corpus (``index_for`` must serve indexes built on it), explaining only the
            ``shard`` of its positions that holds ``corpus``'s texts in order, reading the pool's
            predictions; they are evaluated on ``corpus``.
        predictions: The encode stage's ``predictions`` artifact: the outputs the attribute
            stages explain and the evaluate stages start from (the corpus is predicted once).
        tokens: The encode stage's ``tokens`` artifact of ``corpus``: the texts the attribute and
            evaluate stages read instead of tokenising (the corpus is tokenised once).

    Raises:
        ValueError: A method needs neighbours or head masks and none were given.

    Returns:
        Per method key, its stage results, in configuration order.
    """
    out: dict[str, MethodRun] = {}
    # Attribute stages by (method, validated parameters, label): a configured method that is also
    # another's base (LAFA's) runs once, and its attributions are given to the other; a base stage
    # of its own (no such method configured) runs once for every method sharing that base.
    attributed: dict[tuple[str, str, str], StageResult] = {}
    bases: dict[tuple[str, str], str] = {}

    def identity_of(name: str, params: Mapping[str, Any]) -> tuple[str, str]:
        return name, json.dumps(method_params(name, dict(params)).model_dump(), sort_keys=True, default=str)

    def attribute(name: str, params: Mapping[str, Any], label: str, base: ArtifactRef | None = None) -> StageResult:
        identity = (*identity_of(name, params), label)
        if identity in attributed:
            return attributed[identity]
        needs = method_requirements(name, dict(params))
        if needs.neighbours is not None and index_for is None:
            raise ValueError(f"method {label!r} needs a neighbour index and the flow built none")
        if needs.head_masks and head_masks is None:
            raise ValueError(f"method {label!r} needs head masks and the flow mined none")
        embeddings, index = index_for(needs.neighbours) if needs.neighbours is not None and index_for else (None, None)
        pooled = needs.neighbours is not None and neighbour_pool is not None
        result = run.stages.run_sharded(
            attribute_stage,
            [neighbour_pool[1]] if pooled else shards,  # type: ignore[index]
            corpus=neighbour_pool[0] if pooled else corpus,  # type: ignore[index]
            model=model,
            method=name,
            label=label,
            params=dict(params),
            target=attribution.target,
            batch_size=attribution.batch_size,
            context=run.context,
            embeddings=embeddings,
            index=index,
            seed=seed,
            head_masks=head_masks if needs.head_masks else None,
            predictions=neighbour_pool[2] if pooled else predictions,  # type: ignore[index]
            tokens=None if pooled else tokens,
            **({"base_attributions": base} if base is not None else {}),
        )
        if not pooled:
            attributed[identity] = result
        return result

    for method in attribution.methods:
        needs = method_requirements(method.name, method.params)
        base = None
        if needs.base is not None and not (needs.neighbours is not None and neighbour_pool is not None):
            # The base attributions of the whole corpus once, when the run computes them anyway (the
            # base method is configured too) or when shards would each recompute their neighbours'.
            base_name, base_params = needs.base
            wanted = identity_of(base_name, base_params)
            twin = next((m for m in attribution.methods if identity_of(m.name, m.params) == wanted), None)
            if twin is not None or (shards is not None and len(shards) > 1):
                label = twin.key if twin is not None else bases.setdefault(wanted, f"{method.key}-base")
                base = attribute(base_name, base_params, label).refs["attributions"]
        attributed_result = attribute(method.name, method.params, method.key, base)
        attribute_cached = run.stages.last_cached
        evaluated = run.stage(
            evaluate_stage,
            corpus=corpus,
            attributions=attributed_result.refs["attributions"],
            model=model,
            label=method.key,
            predictions=predictions,
            tokens=tokens,
            **({"seed": seed} | dict(evaluation)),
        )
        out[method.key] = MethodRun(attributed_result, evaluated, attribute_cached and run.stages.last_cached)
    return out


__all__ = [
    "FlowRun",
    "IndexFor",
    "MethodRun",
    "StageRunner",
    "attribute_and_evaluate",
    "fine_tune",
    "flow_run",
    "new_run_id",
    "publish_markdown",
]
