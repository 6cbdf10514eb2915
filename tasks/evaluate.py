"""Stage: faithfulness of one method's attributions under token removal."""

from __future__ import annotations

import time
from collections import defaultdict

import numpy as np
import pyarrow as pa
from prefect import task

from storage import ArtifactRef, ArtifactStore, read_artifact
from tasks.caching import stage_cache_key
from tasks.corpus_io import read_corpus
from tasks.models import loaded_model
from tasks.progress import StageProgress
from tasks.results import RunContext, StageResult
from xattr.methods.runner import TokenAttribution
from xattr.metrics.perturbation import removal_curves
from xattr.metrics.uncertainty import bootstrap_mean
from xattr.models.loading import ModelSpec
from xattr.types import ReplacementPolicy


def evaluation_sample(doc_ids: list[str], max_texts: int | None, seed: int) -> list[int]:
    """Positions of the texts to evaluate: all, or ``max_texts`` drawn with ``seed``.

    The draw depends only on the corpus and the seed, so every method is scored on the same texts.
    """
    if max_texts is None or max_texts >= len(doc_ids):
        return list(range(len(doc_ids)))
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(len(doc_ids), size=max_texts, replace=False))


@task(name="evaluate", task_run_name="evaluate-{label}", cache_key_fn=stage_cache_key, persist_result=True)
def evaluate_stage(
    corpus: ArtifactRef,
    attributions: ArtifactRef,
    model: ModelSpec,
    label: str,
    fractions: tuple[float, ...],
    replacement: ReplacementPolicy,
    max_texts: int | None,
    seed: int,
    batch_size: int,
    context: RunContext,
) -> StageResult:
    """Write the ``evaluation`` artifact: per-text values and aggregate rows (``doc_id`` null)."""
    started = time.perf_counter()
    loaded = loaded_model(model)
    view = read_corpus(corpus, loaded)
    chosen = evaluation_sample(view.doc_ids, max_texts, seed)
    position_of = {doc_id: i for i, doc_id in enumerate(view.doc_ids)}
    wanted = {view.doc_ids[i] for i in chosen}
    table = read_artifact(attributions).to_pandas()
    table = table[table["doc_id"].isin(wanted)].sort_values(["doc_id", "target", "token_index"], kind="stable")
    attributions_list = [
        TokenAttribution(position_of[doc_id], int(target), group["score"].to_numpy(dtype=np.float64))
        for (doc_id, target), group in table.groupby(["doc_id", "target"], sort=False)
    ]
    values = removal_curves(
        loaded,
        view.encoded,
        attributions_list,
        fractions=fractions,
        policy=replacement,
        batch_size=batch_size,
        progress=StageProgress(f"evaluate-{label}"),
    )
    rows: dict[str, list] = defaultdict(list)
    grouped: dict[tuple[str, float | None], list[float]] = defaultdict(list)
    for v in values:
        rows["doc_id"].append(view.doc_ids[v.position])
        rows["metric"].append(v.metric)
        rows["fraction"].append(v.fraction)
        rows["value"].append(v.value)
        grouped[(v.metric, v.fraction)].append(v.value)
    for (metric, fraction), vals in sorted(grouped.items(), key=lambda kv: (kv[0][0], kv[0][1] or -1.0)):
        rows["doc_id"].append(None)
        rows["metric"].append(metric)
        rows["fraction"].append(fraction)
        rows["value"].append(float(np.mean(vals)))
    n = len(rows["value"])
    out = pa.table(
        {
            "method": pa.array([label] * n, pa.string()),
            "doc_id": pa.array(rows["doc_id"], pa.string()),
            "metric": pa.array(rows["metric"], pa.string()),
            "fraction": pa.array(rows["fraction"], pa.float64()),
            "value": pa.array(rows["value"], pa.float64()),
            "replacement": pa.array([replacement] * n, pa.string()),
        }
    )
    ref = ArtifactStore(context.artifacts_root, context.run_id).write(
        "evaluation",
        f"evaluate-{label}",
        "evaluation",
        out,
        metadata={"replacement": replacement, "texts": str(len(chosen))},
    )
    metrics = {"texts": float(len(chosen))}
    for metric in ("aopc", "aopc_sufficiency", "log_odds"):
        vals = grouped.get((metric, None), [])
        if len(vals) >= 2:
            # 95% percentile-bootstrap CI of the mean; the spread is over evaluated texts.
            estimate = bootstrap_mean(np.asarray(vals), seed=seed)
            metrics[f"{metric}_ci_low"], metrics[f"{metric}_ci_high"] = estimate.low, estimate.high
    for (metric, fraction), vals in grouped.items():
        # "name@step": tracking logs curves as one MLflow metric with the percentage as its step.
        key = metric if fraction is None else f"{metric}_curve@{round(fraction * 100)}"
        metrics[key] = float(np.mean(vals))
    return StageResult(
        f"evaluate-{label}",
        {"evaluation": ref},
        metrics,
        {
            "replacement": replacement,
            "fractions": ",".join(f"{f:g}" for f in fractions),
            "max_texts": str(max_texts),
            "seed": str(seed),
            "removal_count": "ceil(fraction * removable tokens); special tokens never removed",
        },
        time.perf_counter() - started,
    )
