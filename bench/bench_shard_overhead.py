"""What one more shard costs: ``explain_corpus`` on the same corpus in 1 shard and in many, side by side.

Tiny model and synthetic corpus of ``bench_flow.py``, method ``random`` only (no model passes to
hide the overhead), under one standing Prefect server. For each shard size the flow runs in this
process; the cache-key computations (``StageRunner._cached``), the MLflow stage records
(``tracking.log_stage``) and the Prefect task runs of the shards are timed by wrapping them. Printed:
flow wall time per shard count, the extra seconds per added shard task run, and how much of it
each of those three parts takes.

    .venv/bin/python bench/bench_shard_overhead.py [--texts 2000] [--shards 1 20]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--shards", type=int, nargs="+", default=[1, 20])
    args = parser.parse_args()
    from bench_flow import synthetic_corpus, tiny_model

    import flows.runtime as runtime
    from flows.explain_corpus import explain_corpus_with_runner
    from flows.runners import prefect_api
    from flows.settings import ExplainSettings

    timers = {"cache keys": 0.0, "MLflow stage records": 0.0}
    cached, log_stage = runtime.StageRunner._cached, runtime.tracking.log_stage

    def timed_cached(self, *a, **k):  # noqa: ANN001, ANN002, ANN003, ANN202
        t = time.perf_counter()
        try:
            return cached(self, *a, **k)
        finally:
            timers["cache keys"] += time.perf_counter() - t

    def timed_log(*a, **k):  # noqa: ANN002, ANN003, ANN202
        t = time.perf_counter()
        try:
            return log_stage(*a, **k)
        finally:
            timers["MLflow stage records"] += time.perf_counter() - t

    runtime.StageRunner._cached, runtime.tracking.log_stage = timed_cached, timed_log
    rows = []
    with (
        tempfile.TemporaryDirectory(prefix="shard-overhead-") as tmp,
        prefect_api(Path(tmp) / "home", startup_timeout=600),
    ):
        base = Path(tmp)
        model = tiny_model(base / "model")
        corpus = synthetic_corpus(base / "corpus.parquet", args.texts)
        for shards in [args.shards[0], *args.shards]:  # the first run warms up (model, MLflow store) untimed
            size = -(-args.texts // shards)
            settings = ExplainSettings.model_validate(
                {
                    "workdir": str(base / f"run-{len(rows)}-{shards}"),
                    "corpus": {"path": str(corpus), "id_column": "id", "label_column": "label"},
                    "model": {"path": str(model), "max_length": 64},
                    "evaluation": {"max_texts": 50},
                    "attribution": {"methods": [{"name": "random"}]},
                    "sharding": {"shard_size": size if shards > 1 else None},
                }
            )
            for key in timers:
                timers[key] = 0.0
            started = time.perf_counter()
            summary = explain_corpus_with_runner(settings)
            seconds = time.perf_counter() - started
            tasks = len(summary["stages"])
            rows.append((shards, tasks, seconds, dict(timers)))
            if len(rows) == 1:
                continue
            print(f"{shards:>4} shards: {tasks:>3} stage records, flow {seconds:7.2f} s, " + ", ".join(
                f"{k} {v:.2f} s" for k, v in timers.items()
            ))  # fmt: skip
    (s1, t1, w1, m1), (s2, t2, w2, m2) = rows[1], rows[-1]
    added = t2 - t1
    print(f"\nper added shard stage ({added} more, {s1} -> {s2} shards): {(w2 - w1) / added:.3f} s, of which")
    for key in m1:
        print(f"  {key:<22}{(m2[key] - m1[key]) / added:.3f} s")
    rest = (w2 - w1 - sum(m2[k] - m1[k] for k in m1)) / added
    print(f"  {'the rest (Prefect task run, reading/writing the part, the stage itself)':<22} {rest:.3f} s")


if __name__ == "__main__":
    main()
