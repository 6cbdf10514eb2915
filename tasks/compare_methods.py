"""Stage: each method against the random baseline, paired on the same texts; the ``method_verdicts`` artifact."""

from __future__ import annotations

import time

import pyarrow as pa

from storage import ArtifactRef, ArtifactStore, read_artifact, schema_for
from tasks.caching import stage_task
from tasks.results import RunContext, StageResult
from xattr.reporting.summary import paired_vs_reference, verdicts_vs_reference


@stage_task(name="compare_methods")
def compare_methods_stage(
    evaluations: dict[str, ArtifactRef],
    metrics: dict[str, dict[str, float]],
    reference: str,
    alpha: float,
    context: RunContext,
) -> StageResult:
    """Paired sign-flip test of every method against ``reference`` per headline metric, and its verdict.

    The tests are :func:`xattr.reporting.summary.paired_vs_reference` (as in the benchmark
    table); the verdicts :func:`~xattr.reporting.summary.verdicts_vs_reference`. The stage's
    metrics are the tests by method (``<method>/vs_<reference>/<metric>_difference`` and
    ``_p``) and ``not_better_than_<reference>``, the number of methods whose primary metric is
    not significantly better.

    Args:
        evaluations: Per method key, its ``evaluation`` artifact.
        metrics: Per method key, its evaluation metrics (which headline metrics it has).
        reference: The baseline method's key.
        alpha: Significance level of the verdict.
        context: Where the artifact goes.
    """
    started = time.perf_counter()
    if reference not in evaluations:
        raise ValueError(f"compare_methods: the reference method {reference!r} was not evaluated")
    frames = {key: read_artifact(ref).to_pandas() for key, ref in evaluations.items()}
    tests = paired_vs_reference(metrics, frames, reference)
    rows = verdicts_vs_reference(tests, reference=reference, alpha=alpha)
    ref = ArtifactStore(context.artifacts_root, context.run_id).write(
        "method_verdicts",
        "compare_methods",
        "verdicts",
        pa.Table.from_pylist(rows, schema=schema_for("method_verdicts")),
        metadata={"test": "paired sign-flip permutation (2000 sign vectors, seed 0) on shared texts"},
    )
    flagged = sum(1 for row in rows if row["primary"] and not row["better_than_reference"])
    return StageResult(
        "compare_methods",
        {"verdicts": ref},
        {f"{key}/{name}": value for key, found in tests.items() for name, value in found.items()}
        | {f"not_better_than_{reference}": float(flagged)},
        {"reference": reference, "alpha": f"{alpha:g}", "methods": ",".join(evaluations)},
        time.perf_counter() - started,
        tuple(
            f"{row['method']}: not better than {reference} ({row['metric']} {row['difference']:+.3f}, "
            f"p={row['p_value']:.3g})"
            for row in rows
            if row["primary"] and not row["better_than_reference"]
        ),
    )
