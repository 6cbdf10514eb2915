"""Fault injection on the tiny model: every case completes with results equal to an uninterrupted
run, or fails with one clear line, and leaves a work directory the next run can use.

Cases (issue "Hardening"): kill -9 during encoding, attribution and evaluation, then resume; disk
full at the store's creation and while writing artifacts (a small tmpfs where mounting is allowed,
else a patched writer); corrupted and deleted artifacts; two concurrent first runs on one fresh
work directory; a read-only work directory (a read-only bind mount as root, where chmod does not
stop writes; mode 0555 otherwise); a malicious pickle planted in the stage cache.

Every run is ``python -m flows.cli run CONFIG`` in a subprocess against one standing Prefect
server on 127.0.0.1 (its own PREFECT_HOME), on a 36-text corpus in shards of 3 explained by
integrated gradients (slow enough for the kills to land mid-stage). Prints one line per case.

    nice -n 19 .venv/bin/python bench/fault_injection.py [--base DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

WORDS = "the a movie film good bad great awful not very plot acting love hate boring fun".split()
IG = "attribute-integrated_gradients"
TEXTS = [" ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(6 + i % 5)) for i in range(36)]

# Free space left on the small tmpfs: too little for the MLflow store's migrations (a fresh store
# is about 930 KiB); and, with the store already there, too little for the run's artifacts.
STORE_ROOM = 96 * 1024
ARTIFACT_ROOM = 48 * 1024

# A CLI run whose artifact writes fail with ENOSPC after the first few (when no tmpfs can be mounted).
_PATCHED_WRITER = """
import errno, sys
import storage._files as files
real, calls = files._sync_and_hash, [0]
def full(path):
    calls[0] += 1
    if calls[0] > 3:
        raise OSError(errno.ENOSPC, "No space left on device")
    return real(path)
files._sync_and_hash = full
sys.argv = ["xattr", "run", sys.argv[1]]
from flows.cli import main
main()
"""


class Planted:
    """Unpickling this creates ``marker``: proof that a cache file was executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@contextlib.contextmanager
def prefect_server(home: Path) -> Iterator[str]:
    """A Prefect server on 127.0.0.1 with its own PREFECT_HOME (``flows.runners.prefect_api``), stopped at the end."""
    from flows.runners import prefect_api

    with prefect_api(home, startup_timeout=240) as url:
        yield url


class Bench:
    """The corpus, model, config files and CLI runs shared by every case."""

    def __init__(self, base: Path, api: str) -> None:
        import pandas as pd

        from tests.conftest import save_tiny_model

        self.base = base
        self.api = api
        self.model = save_tiny_model(base / "tiny-model", num_labels=2)
        self.corpus = base / "corpus.csv"
        labels = [i % 2 for i in range(len(TEXTS))]
        pd.DataFrame({"id": [f"t{i}" for i in range(len(TEXTS))], "text": TEXTS, "label": labels}).to_csv(
            self.corpus, index=False
        )
        self.reference: dict | None = None

    def config(self, workdir: Path) -> Path:
        path = self.base / "configs" / f"{workdir.name}.yaml"
        path.parent.mkdir(exist_ok=True)
        path.write_text(
            json.dumps(
                {
                    "name": "faults",
                    "workdir": str(workdir),
                    "corpus": {"path": str(self.corpus), "id_column": "id", "label_column": "label"},
                    "model": {"path": str(self.model)},
                    "attribution": {"methods": [{"name": "integrated_gradients", "params": {"steps": 128}}]},
                    "evaluation": {"max_texts": 6},
                    "sharding": {"shard_size": 3},
                }
            )
        )
        return path

    def start(self, workdir: Path, *, patched_writer: bool = False) -> subprocess.Popen:
        env = {**os.environ, "PREFECT_API_URL": self.api, "PYTHONPATH": str(REPO), "COLUMNS": "400"}
        command = (
            [sys.executable, "-c", _PATCHED_WRITER, str(self.config(workdir))]
            if patched_writer
            else [sys.executable, "-m", "flows.cli", "run", str(self.config(workdir))]
        )
        return subprocess.Popen(
            command,
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )

    def run(self, workdir: Path, **options: bool) -> tuple[int, str]:
        """Run to the end: exit code and the CLI's one ``error:`` line (or its last stderr line)."""
        process = self.start(workdir, **options)
        out, err = process.communicate(timeout=900)
        return process.returncode, failure_line(out, err)

    def kill_when(self, workdir: Path, ready: Callable[[Path], bool]) -> str:
        """Start a run, SIGKILL its process group as soon as ``ready(workdir)``; what was there then."""
        process = self.start(workdir)
        deadline = time.monotonic() + 600
        while not ready(workdir):
            if process.poll() is not None:
                return f"the run ended (exit {process.returncode}) before the kill point"
            if time.monotonic() > deadline:
                break
            time.sleep(0.02)
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        return "killed"


def failure_line(out: str, err: str) -> str:
    lines = [line.strip() for line in out.splitlines() if line.strip().startswith("error:")]
    if lines:
        return lines[0]
    tail = [line for line in err.splitlines() if line.strip()]
    return f"no error line; stderr ends: {tail[-1][:200] if tail else ''}"


def latest_summary(workdir: Path) -> dict:
    paths = sorted((workdir / "artifacts").glob("*/summary/summary.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(paths[-1].read_text())


def results(summary: dict) -> dict:
    """What must equal the uninterrupted run: metrics and every stage's artifact digests."""
    stages = {s["stage"]: {n: r["sha256"] for n, r in s["refs"].items()} for s in summary["stages"]}
    return {"metrics": summary["metrics"], "stages": stages}


def mlflow_statuses(workdir: Path) -> dict[str, int]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("xattr")
    runs = client.search_runs([experiment.experiment_id], "tags.`xattr.flow` = 'explain-corpus'")
    counts: dict[str, int] = {}
    for run in runs:
        counts[run.info.status] = counts.get(run.info.status, 0) + 1
    return counts


def verdict(bench: Bench, workdir: Path, code: int, line: str, before: str = "") -> str:
    """``completed, equal`` / ``completed, DIFFERENT`` / ``failed: <line>`` plus the store's run states."""
    prefix = f"{before}; " if before else ""
    if code != 0:
        return f"{prefix}FAILED (exit {code}): {line}"
    same = results(latest_summary(workdir)) == bench.reference
    cached = sum(s["cached"] for s in latest_summary(workdir)["stages"])
    states = ", ".join(f"{n} {s}" for s, n in sorted(mlflow_statuses(workdir).items()))
    return (
        f"{prefix}completed, results {'equal to' if same else 'DIFFERENT from'} the uninterrupted run "
        f"({cached} stages from cache; MLflow runs: {states})"
    )


def can_mount() -> bool:
    probe = Path(tempfile.mkdtemp(prefix="xattr-mount-probe-"))
    try:
        ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(probe)], capture_output=True)
        if ok.returncode == 0:
            subprocess.run(["umount", str(probe)], check=True)
            return True
        return False
    finally:
        probe.rmdir()


def count(pattern: str, at_least: int) -> Callable[[Path], bool]:
    return lambda workdir: len(list((workdir / "artifacts").glob(pattern))) >= at_least


def case_kill(bench: Bench, name: str, ready: Callable[[Path], bool]) -> str:
    workdir = bench.base / name.replace(" ", "-")
    killed = bench.kill_when(workdir, ready)
    shards = len(list((workdir / "artifacts").glob("*/*/*/part-*.parquet")))
    code, line = bench.run(workdir)
    return verdict(bench, workdir, code, line, f"{killed} with {shards} part files written, then resumed")


def fill(directory: Path, leave_bytes: int) -> None:
    """Fill the file system of ``directory`` until about ``leave_bytes`` are free."""
    stats = os.statvfs(directory)
    free = stats.f_bavail * stats.f_frsize
    # ENOSPC part-way through is the point: the file system is then as full as it can get.
    with (directory / "filler").open("wb") as sink, contextlib.suppress(OSError):
        sink.write(b"\0" * max(0, free - leave_bytes))


def case_disk_full(bench: Bench, name: str, leave_bytes: int, mountable: bool, *, store_first: bool = False) -> str:
    root = bench.base / name.replace(" ", "-")
    root.mkdir()
    if not mountable:
        workdir = root / "work"
        code, line = bench.run(workdir, patched_writer=True)
        first = f"writer patched to fail with ENOSPC after 3 artifact files: exit {code}: {line}"
        code, line = bench.run(workdir)
        return verdict(bench, workdir, code, line, first)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(root)], check=True)
    try:
        workdir = root / "work"
        workdir.mkdir()
        if store_first:  # the store exists (an earlier run): the disk fills while the run writes
            from tasks import tracking

            uri = f"sqlite:///{workdir / 'mlflow.db'}"
            earlier = tracking.start_parent_run(uri, "xattr", workdir / "m", "earlier", {}, {})
            tracking.finish_parent_run(uri, earlier, {})
        fill(root, leave_bytes)
        code, line = bench.run(workdir)
        first = f"tmpfs with {leave_bytes // 1024} KiB free: exit {code}: {line}"
        (root / "filler").unlink()
        code, line = bench.run(workdir)
        return verdict(bench, workdir, code, line, first + "; space freed, rerun")
    finally:
        subprocess.run(["umount", "-l", str(root)], check=False)


def case_corrupted(bench: Bench) -> str:
    workdir = bench.base / "corrupted"
    code, line = bench.run(workdir)
    if code != 0:
        return f"first run failed: {line}"
    summary = latest_summary(workdir)
    targets = [
        Path(s["refs"][name]["path"])
        for s in summary["stages"]
        for name in ("attributions", "embeddings")
        if name in s["refs"] and "-shard-00001" in s["stage"]
    ]
    for path in targets:
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    code, line = bench.run(workdir)
    return verdict(bench, workdir, code, line, f"flipped a byte in {len(targets)} artifacts")


def case_deleted(bench: Bench) -> str:
    workdir = bench.base / "deleted"
    code, line = bench.run(workdir)
    if code != 0:
        return f"first run failed: {line}"
    summary = latest_summary(workdir)
    index = next(Path(s["refs"]["index"]["path"]) for s in summary["stages"] if s["stage"] == "build_index")
    merged = next(Path(s["refs"]["attributions"]["path"]) for s in summary["stages"] if s["stage"] == IG)
    shutil.rmtree(index)
    merged.unlink()
    code, line = bench.run(workdir)
    return verdict(bench, workdir, code, line, "deleted the FAISS index and the merged attributions")


def case_concurrent(bench: Bench) -> str:
    workdir = bench.base / "concurrent"
    processes = [bench.start(workdir) for _ in range(2)]
    outcomes = []
    for process in processes:
        out, err = process.communicate(timeout=900)
        outcomes.append((process.returncode, failure_line(out, err)))
    codes = [c for c, _ in outcomes]
    if any(codes):
        return f"two first runs: exits {codes}: {[line for c, line in outcomes if c][0]}"
    summaries = sorted((workdir / "artifacts").glob("*/summary/summary.json"))
    same = all(results(json.loads(p.read_text())) == bench.reference for p in summaries)
    states = mlflow_statuses(workdir)
    return (
        f"two first runs at once: both exit 0, {len(summaries)} summaries, results "
        f"{'equal to' if same else 'DIFFERENT from'} the uninterrupted run; MLflow runs: {states}"
    )


def case_read_only(bench: Bench) -> str:
    workdir = bench.base / "read-only"
    workdir.mkdir()
    root = os.geteuid() == 0
    if root:
        subprocess.run(["mount", "--bind", str(workdir), str(workdir)], check=True)
        subprocess.run(["mount", "-o", "remount,bind,ro", str(workdir)], check=True)
        how = "read-only bind mount (root: chmod would not stop writes)"
    else:
        workdir.chmod(0o555)
        how = "mode 0555"
    try:
        started = time.monotonic()
        code, line = bench.run(workdir)
        first = f"{how}: exit {code} after {time.monotonic() - started:.0f} s: {line}"
    finally:
        if root:
            subprocess.run(["umount", str(workdir)], check=True)
        else:
            workdir.chmod(0o755)
    code, line = bench.run(workdir)
    return verdict(bench, workdir, code, line, first + "; made writable, rerun")


def case_planted_pickle(bench: Bench) -> str:
    workdir = bench.base / "planted"
    code, line = bench.run(workdir)
    if code != 0:
        return f"first run failed: {line}"
    entries = [p for p in (workdir / "stage-cache").rglob("*") if p.is_file()]
    marker = bench.base / "planted-pickle-was-executed"
    for path in entries:
        path.write_bytes(pickle.dumps(Planted(marker)))
    code, line = bench.run(workdir)
    executed = "EXECUTED" if marker.exists() else "never loaded"
    return verdict(bench, workdir, code, line, f"{len(entries)} cache entries replaced by a pickle payload: {executed}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, default=None, help="scratch directory (default: a new temporary one)")
    parser.add_argument("--only", default=None, help="run only the cases whose name contains this text")
    args = parser.parse_args()
    base = (args.base or Path(tempfile.mkdtemp(prefix="xattr-faults-"))).resolve()
    base.mkdir(parents=True, exist_ok=True)
    mountable = os.geteuid() == 0 and can_mount()
    started = time.monotonic()
    with prefect_server(base / "prefect-home") as api:
        bench = Bench(base, api)
        code, line = bench.run(base / "uninterrupted")
        if code != 0:
            raise SystemExit(f"the uninterrupted run failed: {line}")
        bench.reference = results(latest_summary(base / "uninterrupted"))
        headline = {
            m: {k: round(v, 9) for k, v in metrics.items() if k in ("aopc", "log_odds", "texts")}
            for m, metrics in bench.reference["metrics"].items()
        }
        print(f"uninterrupted run: {len(bench.reference['stages'])} stages, {headline}")
        cases: list[tuple[str, Callable[[], str]]] = [
            (
                "kill -9 during encoding",
                lambda: case_kill(bench, "kill encode", count("*/encode_corpus/embeddings/part-*", 2)),
            ),
            (
                "kill -9 during attribution",
                lambda: case_kill(bench, "kill attribute", count(f"*/{IG}/attributions/part-*", 2)),
            ),
            (
                "kill -9 during evaluation",
                lambda: case_kill(bench, "kill evaluate", count(f"*/{IG}/attributions/_manifest.json", 1)),
            ),
            ("disk full at store creation", lambda: case_disk_full(bench, "full store", STORE_ROOM, mountable)),
            (
                "disk full during the run (store exists)",
                lambda: case_disk_full(bench, "full artifacts", ARTIFACT_ROOM, mountable, store_first=True),
            ),
            (
                "disk full in an artifact write (patched writer)",
                lambda: case_disk_full(bench, "full writer", 0, mountable=False),
            ),
            ("corrupted artifacts", lambda: case_corrupted(bench)),
            ("deleted artifacts", lambda: case_deleted(bench)),
            ("two concurrent first runs", lambda: case_concurrent(bench)),
            ("read-only workdir", lambda: case_read_only(bench)),
            ("planted pickle in stage-cache", lambda: case_planted_pickle(bench)),
        ]
        for name, case in cases:
            if args.only and args.only not in name:
                continue
            t0 = time.monotonic()
            try:
                outcome = case()
            except Exception as exc:  # noqa: BLE001 - a case that breaks the bench is reported, not hidden
                outcome = f"BENCH ERROR {type(exc).__name__}: {exc}"
            print(f"{name}: {outcome} [{time.monotonic() - t0:.0f} s]", flush=True)
    print(f"all cases in {time.monotonic() - started:.0f} s (scratch: {base})")


if __name__ == "__main__":
    main()
