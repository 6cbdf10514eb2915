"""``xattr ui`` serves the MLflow UI of a run store; headless Chromium sees the run and a metric.

The store is written by the tracking code the flow uses (``tasks.tracking``: a parent run with
a headline metric, a stage child run with the index recall). The test starts ``xattr ui`` as a
subprocess, renders the experiment page (a JavaScript app) in Debian's headless Chromium,
checks the rendered DOM and takes a screenshot, then stops ``xattr ui`` with Ctrl-C (SIGINT) and
checks that the MLflow server it started is gone. Set ``XATTR_UI_SCREENSHOT=/path.png`` to keep
the screenshot.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from matplotlib import image as mpimg
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from flows.cli import app
from flows.tracking_ui import free_port, port_in_use
from tasks import tracking
from tasks.results import StageResult

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
RUN_NAME = "reviews-nightly-ui-check"


def _chromium(url: str, profile: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--window-size=1400,1000",
        "--virtual-time-budget=15000",
        *extra,
        url,
    ]
    env = {**os.environ, "HOME": str(profile)}
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env, check=False)


def _visible_text(dom: str) -> str:
    text = re.sub(r"<script.*?</script>|<style.*?</style>", " ", dom, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", text)).split())


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.skipif(not CHROMIUM.is_file(), reason="Debian chromium (/usr/bin/chromium) is not installed")
def test_ui_shows_the_run_and_its_metric_and_stops_by_pid(tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    workdir.mkdir()
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    parent = tracking.start_parent_run(
        uri, "xattr", workdir / "mlflow-artifacts", RUN_NAME, {"index": {"type": "hnsw"}}, {"xattr.run_id": "r1"}
    )
    stage = StageResult("build_index", {}, {"recall_at_10": 0.9731}, {"index_type": "hnsw"}, 1.5)
    tracking.log_stage(uri, parent, stage, cached=False)
    tracking.finish_parent_run(uri, parent, {"simple_grad/aopc": 0.4321})
    experiment = MlflowClient(uri).get_experiment_by_name("xattr").experiment_id

    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "COLUMNS": "300",
    }
    log = tmp_path / "ui.log"
    with log.open("wb") as sink:
        ui = subprocess.Popen(
            [sys.executable, "-m", "flows.cli", "ui", "--workdir", str(workdir), "--port", str(port)],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server_pid: int | None = None
    try:
        deadline = time.monotonic() + 90
        while server_pid is None:
            assert ui.poll() is None, log.read_text()
            found = re.search(r"server pid (\d+)", log.read_text())
            server_pid = int(found.group(1)) if found else None
            assert time.monotonic() < deadline, f"xattr ui did not report a healthy server: {log.read_text()}"
            time.sleep(0.5)
        url = f"http://127.0.0.1:{port}"
        assert f"MLflow UI: {url}" in log.read_text()
        assert "prefect server start --host 127.0.0.1" in log.read_text()
        assert httpx.get(f"{url}/health", timeout=5).text == "OK"
        # The printed experiment link opens the runs table (MLflow 3's default for a fresh browser is
        # the GenAI traces overview, whatever the experiment's tags say).
        link = f"{url}/#/experiments/{experiment}?workflowType=machine_learning"
        assert f"experiment xattr: {link}" in log.read_text()
        for _ in range(4):
            opened = _visible_text(_chromium(link, tmp_path / "fresh-profile", "--dump-dom").stdout)
            if RUN_NAME in opened:
                break
        assert RUN_NAME in opened and "Run Name" in opened and "Traces 0" not in opened, opened[:3000]

        # A second UI on the same port is refused with one line.
        busy = CliRunner().invoke(app, ["ui", "--workdir", str(workdir), "--port", str(port)], env={"COLUMNS": "300"})
        assert busy.exit_code == 1
        assert busy.output == f"error: port {port} on 127.0.0.1 is already in use; choose another with --port\n"

        # The page is a JavaScript app that fetches runs and metrics after it loads; on a loaded
        # machine the first render can come before the data, so render again (warm cache) until
        # everything is there.
        page = f"{url}/#/experiments/{experiment}/runs?compareRunsMode=CHART"
        # (Stage child runs are folded under the parent row; the parent's metric is charted.)
        wanted = ("Training runs", RUN_NAME, "simple_grad/aopc", "0.43")
        for _ in range(4):
            dom = _chromium(page, tmp_path / "profile", "--dump-dom")
            assert dom.returncode == 0, dom.stderr[-2000:]
            text = _visible_text(dom.stdout)
            if all(word in text for word in wanted):
                break
        assert all(word in text for word in wanted), text[:3000]
        colour = re.search(r"#([0-9a-f]{6}) " + RUN_NAME, text)  # the colour MLflow gave the run
        assert colour is not None, text[:3000]
        rgb = np.array([int(colour.group(1)[i : i + 2], 16) for i in (0, 2, 4)]) / 255

        # The screenshot shows the run's bar chart: a large area in the run's colour.
        shot = tmp_path / "mlflow-ui.png"
        for _ in range(4):
            shot.unlink(missing_ok=True)
            taken = _chromium(page, tmp_path / "profile", f"--screenshot={shot}")
            assert taken.returncode == 0 and shot.is_file(), taken.stderr[-2000:]
            pixels = mpimg.imread(shot)[..., :3]
            run_colour = (np.abs(pixels - rgb).max(axis=-1) < 0.05).sum()
            if run_colour > 5000:
                break
        assert pixels.shape[:2] == (1000, 1400)
        assert run_colour > 5000, f"{run_colour} pixels in the run colour"
        assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 200  # a rendered page, not a blank one
        if os.environ.get("XATTR_UI_SCREENSHOT"):
            shutil.copyfile(shot, os.environ["XATTR_UI_SCREENSHOT"])

        ui.send_signal(signal.SIGINT)
        assert ui.wait(30) == 0, log.read_text()
        assert "stopping the MLflow server" in log.read_text()
        assert not _group_alive(server_pid)  # the server and its uvicorn child are gone
        assert not port_in_use("127.0.0.1", port)
    finally:
        if ui.poll() is None:
            os.killpg(ui.pid, signal.SIGKILL)
            ui.wait(10)
        if server_pid is not None and _group_alive(server_pid):
            os.killpg(server_pid, signal.SIGKILL)
