"""``xattr deploy`` against a real local Prefect server started (and stopped) by this test.

The project deployed is the repository's own ``prefect.yaml``, copied into a temporary
directory whose ``flows`` is a link to the repository's, with the config files it names
created there. Deployments whose entrypoint file is not in this checkout are left out (and
named in a warning).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from flows.cli import app
from flows.tracking_ui import free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    """Stop the process group this test started (the server runs uvicorn as a child)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
    }
    env.pop("PREFECT_API_URL", None)
    prefect = str(Path(sys.executable).with_name("prefect"))
    log = (home / "server.log").open("wb")
    server = subprocess.Popen(
        [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, (home / "server.log").read_text()
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "Prefect server not healthy within 60 s"
            time.sleep(0.5)
        yield url
    finally:
        _stop_group(server)
        log.close()


def _valid_config(function: str, config: Path, classifier: Path, regressor: Path) -> None:
    """A config the deployment's flow accepts (``xattr deploy`` reads it and checks its paths)."""
    config.parent.mkdir(parents=True, exist_ok=True)
    data = config.parent / f"{config.stem}-data.csv"
    if function == "price_drivers_from_config":
        data.write_text("text,price\n" + "".join(f"item {i} laptop,{100 + i}\n" for i in range(20)))
        config.write_text(f"catalogue: {{path: {data.name}, format: table}}\nmodel: {{path: {regressor}}}\n")
    else:
        data.write_text("text\ngood film\nbad plot\n")
        config.write_text(f"corpus: {{path: {data.name}}}\nmodel: {{path: {classifier}}}\n")


@pytest.fixture(scope="module")
def project(
    tmp_path_factory: pytest.TempPathFactory, tiny_classifier_dir: Path, tiny_regressor_dir: Path
) -> tuple[Path, list[str], list[str]]:
    """A copy of the repository's deployments: (directory, deployable names, left-out names)."""
    root = tmp_path_factory.mktemp("project")
    (root / "flows").symlink_to(REPO / "flows", target_is_directory=True)
    raw = yaml.safe_load((REPO / "prefect.yaml").read_text())
    kept, left_out = [], []
    for deployment in raw["deployments"]:
        path, _, function = deployment["entrypoint"].partition(":")
        if (REPO / path).is_file():
            kept.append(deployment)
            config = root / deployment["parameters"]["config"]
            _valid_config(function, config, tiny_classifier_dir, tiny_regressor_dir)
        else:
            left_out.append(deployment["name"])
    (root / "prefect.yaml").write_text(yaml.safe_dump({**raw, "deployments": kept}, sort_keys=False))
    return root, [d["name"] for d in kept], left_out


@pytest.fixture(scope="module")
def deployed(prefect_server: str, project: tuple[Path, list[str], list[str]]) -> str:
    """``xattr deploy`` of the project, once; returns its output."""
    root, _, _ = project
    saved = {key: os.environ.get(key) for key in ("PYTHONPATH", "XATTR_HOME")}
    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO), saved["PYTHONPATH"] or ""])
    os.environ.pop("XATTR_HOME", None)
    try:
        result = runner.invoke(
            app,
            ["deploy", "--prefect-file", str(root / "prefect.yaml"), "--api-url", prefect_server],
            env={"COLUMNS": "300"},
        )
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    assert result.exit_code == 0, result.output
    return result.output


def test_deploy_creates_pool_deployments_and_cron_schedules(
    prefect_server: str, project: tuple[Path, list[str], list[str]], deployed: str
) -> None:
    from prefect.client.orchestration import SyncPrefectClient

    root, names, left_out = project
    assert "created work pool 'xattr-process'" in deployed

    declared = {d["name"]: d for d in yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]}
    with SyncPrefectClient(prefect_server) as client:
        assert client.read_work_pool("xattr-process").type == "process"
        deployed = {d.name: d for d in client.read_deployments()}
        assert set(deployed) == set(names)
        for name in names:
            deployment, want = deployed[name], declared[name]
            assert deployment.entrypoint == want["entrypoint"]
            assert deployment.parameters == want["parameters"]
            assert deployment.work_pool_name == "xattr-process"
            assert deployment.pull_steps == [
                {"prefect.deployments.steps.set_working_directory": {"directory": str(root.resolve())}}
            ]
            schedules = client.read_deployment_schedules(deployment.id)
            assert [(s.schedule.cron, s.schedule.timezone, s.active) for s in schedules] == [
                (want["schedules"][0]["cron"], "UTC", True)
            ]
    assert "explain-corpus-nightly" in names
    if left_out:
        warnings.warn(f"deployed {names}; entrypoint not in this checkout for {left_out}", stacklevel=1)


def test_server_rejects_a_bad_cron(
    prefect_server: str, project: tuple[Path, list[str], list[str]], deployed: str
) -> None:
    from prefect.client.orchestration import SyncPrefectClient

    root, names, _ = project
    with SyncPrefectClient(prefect_server) as client:
        deployments = client.read_deployments()
        target = deployments[0]
        response = httpx.post(
            f"{prefect_server}/deployments/{target.id}/schedules",
            json=[{"schedule": {"cron": "61 3 * * *", "timezone": "UTC"}, "active": True}],
            timeout=10,
        )
        assert response.status_code == 422
        assert 'Invalid cron string: \\"61 3 * * *\\"' in response.text
        assert len(client.read_deployment_schedules(target.id)) == 1

    bad = root / "bad-cron.yaml"
    raw = yaml.safe_load((root / "prefect.yaml").read_text())
    raw["deployments"][0]["schedules"] = [{"cron": "0 25 * * *", "timezone": "UTC"}]
    bad.write_text(yaml.safe_dump(raw))
    result = runner.invoke(app, ["deploy", "--prefect-file", str(bad), "--api-url", prefect_server])
    assert result.exit_code == 1
    assert result.output == (
        f"error: deployment '{raw['deployments'][0]['name']}': schedule rejected: Invalid cron string: \"0 25 * * *\"\n"
    )
    # The refused file deployed nothing.
    with SyncPrefectClient(prefect_server) as client:
        assert {d.name for d in client.read_deployments()} == set(names)


def test_a_worker_runs_the_nightly_deployment_in_its_working_directory(
    prefect_server: str,
    project: tuple[Path, list[str], list[str]],
    deployed: str,
    tiny_classifier_dir: Path,
    tmp_path: Path,
) -> None:
    """The pull step makes the project the working directory, so the relative config resolves."""
    from prefect.client.orchestration import SyncPrefectClient

    root, _, _ = project
    config = root / "xattr-demo" / "demo-config.yaml"
    (root / "xattr-demo" / "corpus.csv").write_text("text\ngood film\nbad plot\ngreat acting\nboring movie\nfun\n")
    config.write_text(
        f"name: deployed-nightly\nworkdir: runs\ncorpus: {{path: corpus.csv}}\nmodel: {{path: {tiny_classifier_dir}}}\n"
        "attribution: {methods: [{name: simple_grad}]}\nevaluation: {max_texts: 3}\n"
    )
    with SyncPrefectClient(prefect_server) as client:
        deployment = next(d for d in client.read_deployments() if d.name == "explain-corpus-nightly")
        flow_run = client.create_flow_run_from_deployment(deployment.id)
    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_server,
        "PREFECT_HOME": str(tmp_path / "worker-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    worker = subprocess.Popen(
        [str(Path(sys.executable).with_name("prefect")), "worker", "start", "--pool", "xattr-process", "--run-once"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        output, _ = worker.communicate(timeout=180)
    finally:
        _stop_group(worker)
    with SyncPrefectClient(prefect_server) as client:
        state = client.read_flow_run(flow_run.id).state
    assert state is not None and state.is_completed(), output.decode(errors="replace")[-3000:]
    summaries = list((root / "xattr-demo" / "runs" / "artifacts").glob("*/summary/summary.md"))
    assert len(summaries) == 1 and "simple_grad" in summaries[0].read_text()
