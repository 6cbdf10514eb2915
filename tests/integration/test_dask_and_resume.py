"""On a standing Prefect server: a 2-worker local Dask run equals the in-process run, and a run
killed during attribution resumes with its finished shards reused and no corrupt artifact.

A standing ``prefect server start`` (own PREFECT_HOME under tmp) lets the Dask workers and the
CLI subprocesses share one API instead of each starting a temporary server (STACK.md).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows.explain_corpus import explain_corpus, explain_corpus_with_runner
from flows.settings import RunnerSettings
from storage import ArtifactRef, read_artifact, read_artifact_path
from tests.integration.test_sharded_flow import TEXTS, assert_same_results, settings_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


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
    """A Prefect server on 127.0.0.1, stopped by its process id at the end of the module."""
    home = tmp_path_factory.mktemp("prefect-home")
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    log = (home / "server.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        while not _healthy(url):
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Prefect server did not start; see {home / 'server.log'}")
            time.sleep(0.5)
        previous = os.environ.get("PREFECT_API_URL")
        os.environ["PREFECT_API_URL"] = url  # inherited by Dask worker processes
        with temporary_settings({PREFECT_API_URL: url}):
            yield url
            # Prefect's log and event workers are process-wide singletons bound to this server: drain
            # and stop them while it still answers, or a later test harness waits on them forever.
            _drain_prefect_workers()
        if previous is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = previous
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


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


def _config(directory: Path, corpus: Path, model: Path, workdir: Path) -> Path:
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
        {"stages": summary["stages"], "metrics": summary["metrics"]},
        {"stages": _summary(whole)["stages"], "metrics": _summary(whole)["metrics"]},
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
