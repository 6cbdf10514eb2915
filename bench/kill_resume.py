"""A large sharded run of ``explain_corpus`` killed with SIGKILL mid-attribution, then resumed.

The tiny model and synthetic corpus of ``bench_flow.py`` (``--texts`` texts, shards of
``--shard-size``), methods ``simple_grad`` and ``lafa``; each run is ``python -m flows.cli run
CONFIG`` in its own process group against one standing Prefect server. Three runs:

1. uninterrupted, in its own work directory (the reference);
2. the same config in a second work directory, killed (``kill -9`` of the whole group) once
   ``--kill-after`` LAFA parts are written;
3. that run again, resumed.

Printed per run: wall seconds, peak RSS of the run's process tree (sampled every 0.2 s), and
the artifact bytes; for the resumed run, the shards it reused (cached) and recomputed per stage,
and whether its token attributions and evaluation numbers equal the uninterrupted run's.

    .venv/bin/python bench/kill_resume.py --texts 200000 --shard-size 20000 --base /tmp/kill-resume
"""

from __future__ import annotations

import argparse
import calendar
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))


class TreeRss(threading.Thread):
    """Peak summed RSS of a process and its descendants, sampled every ``every`` seconds."""

    def __init__(self, pid: int, every: float = 0.2) -> None:
        super().__init__(daemon=True)
        import psutil

        self.root = psutil.Process(pid)
        self.every, self.peak, self.stopped = every, 0, threading.Event()
        self.samples: list[tuple[float, int]] = []  # (epoch seconds, summed RSS)

    def run(self) -> None:
        import psutil

        while not self.stopped.is_set():
            try:
                tree = [self.root, *self.root.children(recursive=True)]
                total = 0
                for p in tree:
                    try:
                        total += p.memory_info().rss
                    except psutil.Error:
                        continue
                # the Prefect server is not a child of the run (it stands apart), so it is not counted
                self.peak = max(self.peak, total)
                self.samples.append((time.time(), total))
            except psutil.Error:
                return
            time.sleep(self.every)


def start(config: Path, api: str, log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PREFECT_API_URL": api}
    with log.open("wb") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "flows.cli", "run", str(config)],
            cwd=REPO,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def watched(process: subprocess.Popen, until=None, log: Path | None = None) -> tuple[float, int, bool]:  # noqa: ANN001
    """Wait for ``process`` (or until ``until()`` is true, then SIGKILL its group): seconds, peak RSS, killed.

    With ``log`` (the run's output), the seconds and peak RSS of each stage are printed too.
    """
    started = time.perf_counter()
    sampler = TreeRss(process.pid)
    sampler.start()
    killed = False
    while process.poll() is None:
        if until is not None and until():
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            killed = True
            break
        time.sleep(0.1)
    sampler.stopped.set()
    sampler.join()
    if log is not None:
        print_stage_memory(log, sampler.samples)
    return time.perf_counter() - started, sampler.peak, killed


_FINISHED = re.compile(r"^(\d\d):(\d\d):(\d\d\.\d+) \| INFO +\| Task run '([^']+)' - Finished in state")


def print_stage_memory(log: Path, samples: list[tuple[float, int]]) -> None:
    """Per stage (its shards together), the seconds between task-run finishes and the peak RSS in them.

    A stage's window runs from the previous task run's finish to its own (the flow runs one task at
    a time); what follows the last one is the flow's own summary. Log times are UTC clock times.
    """
    if not samples:
        return
    day = time.gmtime(samples[0][0])
    midnight = calendar.timegm((day.tm_year, day.tm_mon, day.tm_mday, 0, 0, 0))
    windows: dict[str, list[float]] = {}
    previous = samples[0][0]
    for line in log.read_text(errors="replace").splitlines():
        match = _FINISHED.match(line)
        if not match:
            continue
        h, m, sec, name = match.groups()
        at = midnight + int(h) * 3600 + int(m) * 60 + float(sec)
        group = re.sub(r"-shard-\d+$", "", re.sub(r"-[0-9a-f]{3}$", "", name))  # Prefect's run-name suffix
        peak = max((rss for t, rss in samples if previous <= t <= at), default=0)
        entry = windows.setdefault(group, [0.0, 0])
        entry[0] += at - previous
        entry[1] = max(entry[1], peak)
        previous = at
    tail = [rss for t, rss in samples if t >= previous]
    windows["(flow summary, after the last stage)"] = [samples[-1][0] - previous, max(tail, default=0)]
    print(f"  {'stage':<40}{'seconds':>10}{'peak RSS MB':>14}")
    for group, (seconds, peak) in windows.items():
        print(f"  {group:<40}{seconds:>10.1f}{peak / 2**20:>14.0f}")


def summary_of(workdir: Path) -> dict:
    latest = max((workdir / "artifacts").glob("*/summary/summary.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(latest.read_text())


def artifact_bytes(workdir: Path) -> int:
    return sum(f.stat().st_size for f in (workdir / "artifacts").rglob("*") if f.is_file())


def same_results(a: dict, b: dict) -> str:
    from storage import ArtifactRef, read_artifact

    out = []
    for label in ("simple_grad", "lafa"):
        refs = [
            next(
                ArtifactRef.from_dict(s["refs"]["attributions"])
                for s in x["stages"]
                if s["stage"] == f"attribute-{label}"
            )
            for x in (a, b)
        ]
        x, y = (read_artifact(r).column("score").to_numpy() for r in refs)
        out.append(f"{label}: scores equal {np.array_equal(x, y)} (max |d| {np.abs(x - y).max():.2g})")
        metrics = {k: v for k, v in a["metrics"][label].items() if isinstance(v, float)}
        equal = all(np.isclose(v, b["metrics"][label][k], rtol=0, atol=0, equal_nan=True) for k, v in metrics.items())
        out.append(f"{label}: {len(metrics)} evaluation numbers equal {equal}")
    return "; ".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=200_000)
    parser.add_argument("--shard-size", type=int, default=20_000)
    parser.add_argument("--kill-after", type=int, default=3, help="LAFA parts written before the kill")
    parser.add_argument("--base", type=Path, required=True)
    parser.add_argument("--skip-reference", action="store_true", help="no uninterrupted run")
    parser.add_argument("--reference-only", action="store_true", help="only the uninterrupted run")
    args = parser.parse_args()
    import yaml
    from bench_flow import synthetic_corpus, tiny_model

    from flows.runners import prefect_api

    base = args.base
    base.mkdir(parents=True, exist_ok=True)
    model = base / "model"
    if not (model / "config.json").exists():
        tiny_model(model)
    corpus = base / f"corpus-{args.texts}.parquet"
    if not corpus.exists():
        synthetic_corpus(corpus, args.texts)

    def config(workdir: Path) -> Path:
        path = base / f"{workdir.name}.yaml"
        settings = {
            "workdir": str(workdir),
            "corpus": {"path": str(corpus), "id_column": "id", "label_column": "label"},
            "model": {"path": str(model), "max_length": 64},
            "evaluation": {"max_texts": 200},
            "attribution": {"methods": [{"name": "simple_grad"}, {"name": "lafa"}]},
            "sharding": {"shard_size": args.shard_size},
        }
        path.write_text(yaml.safe_dump(settings))
        return path

    lafa_parts = "*/attribute-lafa/attributions/part-*.parquet"
    with prefect_api(base / "prefect-home", startup_timeout=600) as api:
        reference = None
        if not args.skip_reference:
            whole = base / "uninterrupted"
            seconds, peak, _ = watched(
                start(config(whole), api, base / "uninterrupted.log"), log=base / "uninterrupted.log"
            )
            reference = summary_of(whole)
            print(
                f"uninterrupted: {seconds:.1f} s, peak RSS {peak / 2**30:.2f} GiB, "
                f"artifacts {artifact_bytes(whole) / 1e6:.1f} MB"
            )
        if args.reference_only:
            return
        work = base / "killed"
        process = start(config(work), api, base / "killed.log")
        seconds, peak, killed = watched(
            process,
            until=lambda: len(list((work / "artifacts").glob(lafa_parts))) >= args.kill_after,
            log=base / "killed.log",
        )
        written = len(list((work / "artifacts").glob(lafa_parts)))
        print(
            f"killed (SIGKILL: {killed}) after {seconds:.1f} s with {written} LAFA parts written, "
            f"peak RSS {peak / 2**30:.2f} GiB"
        )
        seconds, peak, _ = watched(start(config(work), api, base / "resumed.log"), log=base / "resumed.log")
        resumed = summary_of(work)
        stages: dict[str, list[int]] = {}
        for s in resumed["stages"]:
            if "-shard-" in s["stage"]:
                group = stages.setdefault(s["stage"].split("-shard-")[0], [0, 0])
                group[0 if s["cached"] else 1] += 1
        print(
            f"resumed: {seconds:.1f} s, peak RSS {peak / 2**30:.2f} GiB, "
            f"artifacts {artifact_bytes(work) / 1e6:.1f} MB; "
            + ", ".join(f"{k} {r} reused / {c} computed" for k, (r, c) in stages.items())
        )
        if reference is not None:
            print("resumed vs uninterrupted:", same_results(resumed, reference))


if __name__ == "__main__":
    main()
