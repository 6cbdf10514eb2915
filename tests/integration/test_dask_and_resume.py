"""On a standing Prefect server: a 2-worker local Dask run equals the in-process run, a run
killed during attribution resumes with its finished shards reused and no corrupt artifact, a
killed Dask worker fails a fresh-clone run (no PYTHONPATH) with one line, and Ctrl-C stops it.

A standing server (``flows.runners.prefect_api``, own PREFECT_HOME under tmp) lets the Dask
workers and the CLI subprocesses share one API instead of each starting a temporary server.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from flows import runners
from flows.explain_corpus import explain_corpus, explain_corpus_with_runner
from flows.settings import RunnerSettings
from storage import ArtifactRef, read_artifact, read_artifact_path
from tests.integration.test_sharded_flow import TEXTS, assert_same_results, settings_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _drain_prefect_workers() -> None:
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    try:
        APILogWorker.drain_all(timeout=30)
    except RuntimeError:
        pass  # never started
    EventsWorker.drain_all(timeout=30)


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory: pytest.TempPathFactory):
    """A Prefect server on 127.0.0.1 with its own PREFECT_HOME (``flows.runners.prefect_api``), for the module."""
    with runners.prefect_api(tmp_path_factory.mktemp("prefect-home"), startup_timeout=180) as url:
        yield url
        # Prefect's log and event workers are process-wide singletons bound to this server: drain
        # and stop them while it still answers, or a later test harness waits on them forever.
        _drain_prefect_workers()


@pytest.fixture(scope="module")
def corpus_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "reviews.csv"
    pd.DataFrame({"id": [f"doc-{i}" for i in range(16)], "text": TEXTS, "label": [i % 2 for i in range(16)]}).to_csv(
        path, index=False
    )
    return path


def test_two_worker_dask_run_equals_in_process_run(
    prefect_api: str, tmp_path: Path, corpus_csv: Path, tiny_classifier_dir: Path
) -> None:
    local = explain_corpus(settings_for(tmp_path / "local", corpus_csv, tiny_classifier_dir, 5))
    settings = settings_for(tmp_path / "dask", corpus_csv, tiny_classifier_dir, 5).model_copy(
        update={"runner": RunnerSettings(type="dask", workers=2)}
    )
    distributed = explain_corpus_with_runner(settings)
    assert distributed["cache_hits"] == 0
    assert_same_results(distributed, local, ["simple_grad", "random", "lafa"])
    shard_runs = [s for s in distributed["stages"] if "-shard-" in s["stage"]]
    assert len(shard_runs) == 4 * 4  # encode + three methods, four shards each


def _slow_corpus(directory: Path) -> Path:
    words = "good bad great awful boring fun plot acting movie film love hate".split()
    texts = [" ".join(words[(i + k) % len(words)] for k in range(4 + i % 5)) for i in range(36)]
    path = directory / "slow.csv"
    pd.DataFrame({"id": [f"t{i}" for i in range(36)], "text": texts, "label": [i % 2 for i in range(36)]}).to_csv(
        path, index=False
    )
    return path


def _config(directory: Path, corpus: Path, model: Path, workdir: Path, **more: object) -> Path:
    config = directory / f"{workdir.name}.yaml"
    config.write_text(
        json.dumps(
            {
                "workdir": str(workdir),
                "corpus": {"path": str(corpus), "id_column": "id", "label_column": "label"},
                "model": {"path": str(model)},
                "attribution": {"methods": [{"name": "integrated_gradients", "params": {"steps": 256}}]},
                "evaluation": {"max_texts": 6},
                "sharding": {"shard_size": 3},
                **more,
            }
        )
    )
    return config


def _cli(config: Path, api: str) -> subprocess.Popen:
    env = {**os.environ, "PREFECT_API_URL": api, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "run", str(config)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _summary(workdir: Path) -> dict:
    (path,) = (workdir / "artifacts").glob("*/summary/summary.json")
    return json.loads(path.read_text())


def test_killed_run_resumes_with_finished_shards_and_no_partial_artifact(
    prefect_api: str, tmp_path: Path, tiny_classifier_dir: Path
) -> None:
    corpus = _slow_corpus(tmp_path)
    workdir = tmp_path / "killed"
    process = _cli(_config(tmp_path, corpus, tiny_classifier_dir, workdir), prefect_api)
    pattern = "*/attribute-integrated_gradients/attributions/part-*.parquet"
    deadline = time.monotonic() + 300
    # Two part files: the first shard's task run has then finished, cache record included (one at a time).
    while len(list((workdir / "artifacts").glob(pattern))) < 2:
        assert process.poll() is None, "the run ended before any attribution shard was written"
        assert time.monotonic() < deadline, "no attribution shard within 300 s"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    killed_at = time.time()
    done_before_kill = {p.resolve() for p in (workdir / "artifacts").glob(pattern)}
    assert 2 <= len(done_before_kill) < 12, "the kill should land during attribution"

    resumed = _cli(_config(tmp_path, corpus, tiny_classifier_dir, workdir), prefect_api)
    assert resumed.wait(timeout=600) == 0
    summary = _summary(workdir)
    stages = {s["stage"]: s for s in summary["stages"]}
    assert all(stages[f"encode_corpus-shard-{i:05d}"]["cached"] for i in range(12))
    reused = {
        Path(s["refs"]["attributions"]["path"])
        for name, s in stages.items()
        if name.startswith("attribute-integrated_gradients-shard-") and s["cached"]
    }
    # Every shard written before the kill is reused, except the last if the kill cut off its cache record.
    assert reused <= done_before_kill and len(reused) >= len(done_before_kill) - 1 >= 1
    assert all(p.stat().st_mtime < killed_at for p in reused)
    recomputed = [n for n, s in stages.items() if n.startswith("attribute-integrated") and not s["cached"]]
    assert len(recomputed) >= 12 - len(reused)

    whole = tmp_path / "uninterrupted"
    assert _cli(_config(tmp_path, corpus, tiny_classifier_dir, whole), prefect_api).wait(timeout=600) == 0
    assert_same_results(
        {k: summary[k] for k in ("stages", "metrics", "top_words")},
        {k: _summary(whole)[k] for k in ("stages", "metrics", "top_words")},
        ["integrated_gradients"],
    )

    # No partial or corrupt artifact anywhere: every Parquet file reads and fits its kind's schema,
    # every referenced one matches its recorded SHA-256, and only hidden temporary files may remain.
    for path in workdir.rglob("*.parquet"):
        kind = pq.read_schema(path).metadata[b"xattr.kind"].decode()
        read_artifact_path(path, kind)
    for stage in summary["stages"]:
        for ref in stage["refs"].values():
            if ref["kind"] != "faiss_index":
                read_artifact(ArtifactRef.from_dict(ref))
    leftovers = [p for p in (workdir / "artifacts").rglob("*") if p.is_file() and p.name.startswith(".")]
    assert all(re.fullmatch(r"\..+\.[0-9a-f]{16}\.tmp", p.name) for p in leftovers), leftovers


def _fresh_clone_cli(config: Path, api: str, output: Path) -> subprocess.Popen:
    """``python -m flows.cli run`` from the repository root with no PYTHONPATH, as in a fresh clone."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PREFECT_API_URL": api, "COLUMNS": "400"}
    with output.open("wb") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "flows.cli", "run", str(config)],
            cwd=REPO,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _dask_workers(process: subprocess.Popen, deadline: float) -> list:
    """The local cluster's worker processes under ``process`` (multiprocessing children, not its tracker)."""
    import psutil

    while time.monotonic() < deadline:
        workers = [
            child
            for child in psutil.Process(process.pid).children(recursive=True)
            if "multiprocessing" in " ".join(child.cmdline()) and "resource_tracker" not in " ".join(child.cmdline())
        ]
        if len(workers) >= 2:
            return workers
        time.sleep(0.2)
    raise AssertionError("no two Dask worker processes appeared")


def _wait_for_parts(workdir: Path, process: subprocess.Popen, output: Path) -> None:
    pattern = "*/attribute-integrated_gradients/attributions/part-*.parquet"
    deadline = time.monotonic() + 420
    while not list((workdir / "artifacts").glob(pattern)):
        assert process.poll() is None, output.read_text(errors="replace")[-2000:]
        assert time.monotonic() < deadline, "no attribution part within 420 s"
        time.sleep(0.1)


def _session_left(process: subprocess.Popen) -> list[str]:
    """Processes still running in the run's session (its Dask workers, a temporary Prefect server)."""
    import psutil

    left = []
    for other in psutil.process_iter(["pid", "cmdline"]):
        try:
            if other.pid != os.getpid() and os.getsid(other.pid) == process.pid:
                left.append(" ".join(other.info["cmdline"] or [])[:120])
        except (ProcessLookupError, psutil.Error):
            continue
    return left


def _wait_session_empty(process: subprocess.Popen, seconds: float) -> list[str]:
    deadline = time.monotonic() + seconds
    while (left := _session_left(process)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


def test_a_killed_dask_worker_fails_the_run_with_one_line_within_the_timeout(
    prefect_api: str, tmp_path: Path, tiny_classifier_dir: Path
) -> None:
    corpus = _slow_corpus(tmp_path)
    workdir = tmp_path / "dead-worker"
    runner = {"type": "dask", "workers": 2, "worker_timeout": 30}
    output = tmp_path / "dead-worker.log"
    config = _config(tmp_path, corpus, tiny_classifier_dir, workdir, runner=runner)
    process = _fresh_clone_cli(config, prefect_api, output)
    try:
        _wait_for_parts(workdir, process, output)
        victim = _dask_workers(process, time.monotonic() + 60)[0]
        victim.kill()
        killed = time.monotonic()
        code = process.wait(timeout=30 + 90)
        took = time.monotonic() - killed
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    text = output.read_text(errors="replace")
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert code == 1, text[-3000:]
    assert len(errors) == 1, text[-3000:]
    assert re.fullmatch(
        r"error: attribute-integrated_gradients-shard-\d{5}: the Dask worker running it died \(killed or out of "
        r"memory\); the run stops here\. Finished shards are cached: run again to resume",
        errors[0],
    ), errors[0]
    # The run's last word is that line (Prefect's own flow-run log above it keeps its traceback;
    # only the killed worker's multiprocessing resource tracker may warn after it).
    said = [line for line in text.splitlines() if line.strip() and "resource_tracker" not in line]
    assert said[-1] == errors[0]
    assert took < 30 + 60, f"the run failed {took:.0f} s after the kill"
    assert _wait_session_empty(process, 30) == []


def test_ctrl_c_stops_a_dask_run_and_leaves_no_process(
    prefect_api: str, tmp_path: Path, tiny_classifier_dir: Path
) -> None:
    corpus = _slow_corpus(tmp_path)
    workdir = tmp_path / "interrupted"
    output = tmp_path / "interrupted.log"
    config = _config(tmp_path, corpus, tiny_classifier_dir, workdir, runner={"type": "dask", "workers": 2})
    process = _fresh_clone_cli(config, prefect_api, output)
    try:
        _wait_for_parts(workdir, process, output)
        os.killpg(process.pid, signal.SIGINT)  # what a terminal's Ctrl-C sends: the whole foreground group
        interrupted = time.monotonic()
        code = process.wait(timeout=90)
        took = time.monotonic() - interrupted
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    state = f"SIGINT here: {signal.getsignal(signal.SIGINT)}, blocked {sorted(blocked)}"
    assert code != 0 and took < 90, f"exit {code} after {took:.1f} s; {state}\n" + output.read_text(errors="replace")[-3000:]
    assert _wait_session_empty(process, 30) == [], output.read_text(errors="replace")[-2000:]
