"""``xattr deploy`` checks that need no server: the repository's prefect.yaml and bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from flows.cli import app
from flows.deploy import DeployError, read_plan
from flows.tracking_ui import free_port

REPO = Path(__file__).resolve().parents[3]
runner = CliRunner()


def _project(tmp_path: Path, cron: str = "0 3 * * *", config: str | None = "cfg/run.yaml") -> Path:
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "job.py").write_text("")
    if config:
        (tmp_path / "cfg").mkdir()
        (tmp_path / "cfg" / "run.yaml").write_text("name: x\n")
    deployment = {
        "name": "job-nightly",
        "entrypoint": "flows/job.py:job",
        "parameters": {"config": "cfg/run.yaml"},
        "work_pool": {"name": "pool-a"},
        "schedules": [{"cron": cron, "timezone": "UTC"}],
    }
    path = tmp_path / "prefect.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "deployments": [deployment]}))
    return path


def test_repository_deployments_are_declared_as_the_issue_asks() -> None:
    raw = yaml.safe_load((REPO / "prefect.yaml").read_text())
    assert raw["pull"] == [{"prefect.deployments.steps.set_working_directory": {"directory": "{{ $XATTR_HOME }}"}}]
    by_name = {d["name"]: d for d in raw["deployments"]}
    nightly, weekly = by_name["explain-corpus-nightly"], by_name["price-drivers-weekly"]
    assert nightly["entrypoint"] == "flows/explain_corpus.py:explain_corpus_from_config"
    assert weekly["entrypoint"] == "flows/price_drivers.py:price_drivers_from_config"
    assert nightly["schedules"] == [{"cron": "0 3 * * *", "timezone": "UTC"}]
    assert weekly["schedules"] == [{"cron": "0 4 * * 1", "timezone": "UTC"}]
    for deployment in (nightly, weekly):
        assert deployment["work_pool"] == {"name": "xattr-process"}
        assert set(deployment["parameters"]) == {"config"}


def test_plan_of_a_good_file(tmp_path: Path) -> None:
    (plan,) = read_plan(_project(tmp_path))
    assert (plan.name, plan.entrypoint, plan.config, plan.work_pool) == (
        "job-nightly",
        "flows/job.py:job",
        "cfg/run.yaml",
        "pool-a",
    )
    assert plan.crons == (("0 3 * * *", "UTC"),)


@pytest.mark.parametrize(
    ("cron", "message"),
    [
        ("61 3 * * *", "deployment 'job-nightly': schedule rejected: Invalid cron string: \"61 3 * * *\""),
        ("every night", "deployment 'job-nightly': schedule rejected: Invalid cron string: \"every night\""),
    ],
)
def test_bad_cron_is_one_clear_line(tmp_path: Path, cron: str, message: str) -> None:
    with pytest.raises(DeployError) as caught:
        read_plan(_project(tmp_path, cron=cron))
    assert str(caught.value) == message
    result = runner.invoke(app, ["deploy", "--prefect-file", str(tmp_path / "prefect.yaml")])
    assert result.exit_code == 1
    assert result.output.strip() == f"error: {message}"


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    path = _project(tmp_path, config=None)
    result = runner.invoke(app, ["deploy", "--prefect-file", str(path)])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1
    assert result.output.startswith(
        "error: deployment 'job-nightly': parameter config 'cfg/run.yaml' names a file that does not exist"
        f" ({tmp_path / 'cfg' / 'run.yaml'}; relative paths are taken from {tmp_path})"
    )


def test_missing_entrypoint_unknown_name_and_missing_file(tmp_path: Path) -> None:
    path = _project(tmp_path)
    with pytest.raises(DeployError, match=r"no deployment named 'other' in .*; declared: job-nightly"):
        read_plan(path, ["other"])
    (tmp_path / "flows" / "job.py").unlink()
    with pytest.raises(DeployError, match=r"entrypoint file 'flows/job.py' does not exist in "):
        read_plan(path)
    with pytest.raises(DeployError, match=r"deployment file '.*nope.yaml' does not exist"):
        read_plan(tmp_path / "nope.yaml")


def test_unreachable_server_is_one_clear_line(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/api"
    result = runner.invoke(app, ["deploy", "--prefect-file", str(_project(tmp_path)), "--api-url", url])
    assert result.exit_code == 1
    assert result.output == (
        f"error: no Prefect server answers at {url} (ConnectError); start one with"
        " `prefect server start --host 127.0.0.1` and set PREFECT_API_URL (or --api-url)\n"
    )


def test_deploy_and_ui_have_help() -> None:
    for command in (["deploy"], ["ui"]):
        result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0 and "Usage" in result.output


def test_a_deployment_whose_config_names_missing_data_is_refused_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("")  # the project root: a relative data_root starts here
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "price_drivers.py").write_text("")
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "p.yaml").write_text("data_root: data\ncatalogue: {path: products/walmart_amazon}\n")
    deployment = {
        "name": "price-drivers-weekly",
        "entrypoint": "flows/price_drivers.py:price_drivers_from_config",
        "parameters": {"config": "configs/p.yaml"},
        "work_pool": {"name": "pool-a"},
    }
    path = tmp_path / "prefect.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "deployments": [deployment]}))
    url = f"http://127.0.0.1:{free_port()}/api"  # never asked: the check comes first
    result = runner.invoke(app, ["deploy", "--prefect-file", str(path), "--api-url", url], env={"COLUMNS": "300"})
    assert result.exit_code == 1 and result.output.count("\n") == 1
    missing = tmp_path / "data" / "products" / "walmart_amazon"
    assert result.output == (
        f"error: deployment 'price-drivers-weekly': config file {str(tmp_path / 'configs' / 'p.yaml')!r}:"
        f" catalogue.path: {str(missing)!r} does not exist\n"
    )
    missing.mkdir(parents=True)
    (plan,) = read_plan(path)
    assert plan.config == "configs/p.yaml"
