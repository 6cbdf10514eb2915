from __future__ import annotations

import sys
from pathlib import Path

from typer.testing import CliRunner

from flows.cli import app
from xattr.methods import available_methods

runner = CliRunner()


def test_methods_table_at_80_columns_never_cuts_a_name_or_value() -> None:
    result = runner.invoke(app, ["methods"], env={"COLUMNS": "80"})  # CliRunner output is not a terminal
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert max(len(line) for line in lines) <= 80 and "…" not in result.output
    rows = {line.split()[0]: line for line in lines if line.strip() and line.split()[0] in available_methods()}
    assert set(rows) == set(available_methods())  # every name whole, at the start of its row
    for header in ("needs", "scores", "cost per", "tasks"):
        assert header in result.output
    assert rows["lafa"].split()[1] == "index" and "head masks" in rows["mask_lrp"] and "LDAV model" in rows["ldav"]
    assert rows["lrp"].split()[2] == "signed" and rows["simple_grad"].split()[2] == "magnitude*"
    assert "25 fwd + 25" in rows["integrated_gradients"] and "200 fwd" in rows["lime"]
    assert "pair_classification" in result.output  # ldav's tasks, unbroken


def test_methods_through_a_real_pipe_at_the_default_width() -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", "methods"],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parents[3],
        check=True,
    )
    assert "…" not in done.stdout and max(len(line) for line in done.stdout.splitlines()) <= 80
    firsts = {line.split()[0] for line in done.stdout.splitlines() if line.strip()}
    assert set(available_methods()) <= firsts


def test_methods_name_shows_one_method_in_full() -> None:
    result = runner.invoke(app, ["methods", "lafa"], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    cls = available_methods()["lafa"]
    assert cls.summary in result.output and cls.paper in result.output
    assert "needs: index" in result.output and "scores: magnitude*" in result.output
    assert "epsilon_quantile" in result.output and "max_neighbours" in result.output
    assert "cost template: base method x (1 + up to {max_neighbours} neighbours)" in result.output
    unknown = runner.invoke(app, ["methods", "nope"], env={"COLUMNS": "300"})
    assert unknown.exit_code == 1 and unknown.output.startswith("error: unknown attribution method 'nope'")
    assert unknown.output.count("\n") == 1


def test_version_and_every_help_page_has_an_example() -> None:
    from xattr import __version__

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output == f"xattr {__version__}\n"
    names = [c.name or c.callback.__name__ for c in app.registered_commands]
    from flows.cli import report_app

    reports = [["report", c.name or c.callback.__name__] for c in report_app.registered_commands]
    assert ["report", "explanations"] in reports and ["report", "price-drivers"] in reports
    commands = [[], *([n] for n in names), ["report"], *reports]
    for command in commands:
        result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0 and "Usage" in result.output, command
        assert result.output.count("Example: xattr") == 1, command


def test_a_known_failure_is_one_line_unless_debug(monkeypatch) -> None:
    import flows.cli
    from storage import StorageError

    def broken(cls):
        raise StorageError("corpus", "unreadable: /x [y]")

    monkeypatch.setattr(flows.cli, "_method_facts", broken)
    result = runner.invoke(app, ["methods"], env={"COLUMNS": "300"})
    assert result.exit_code == 1 and result.output == "error: artifact 'corpus': unreadable: /x [y]\n"
    debug = runner.invoke(app, ["--debug", "methods"], env={"COLUMNS": "300"})
    assert isinstance(debug.exception, StorageError)
    monkeypatch.setattr(flows.cli, "_method_facts", lambda cls: 1 / 0)  # not a known failure: traceback
    assert isinstance(runner.invoke(app, ["methods"]).exception, ZeroDivisionError)
    flows.cli._DEBUG["on"] = False


def test_missing_model_or_data_is_refused_before_any_server_starts(tmp_path: Path, monkeypatch) -> None:
    import flows.price_drivers

    def no_flow(settings):
        raise AssertionError("the flow (and its temporary Prefect server) must not start")

    monkeypatch.setattr(flows.price_drivers, "price_drivers", no_flow)
    config = tmp_path / "p.yaml"
    config.write_text("catalogue: {path: nowhere.csv, format: table}\nmodel: {path: ./no-model}\n")
    result = runner.invoke(app, ["report", "price-drivers", str(config)], env={"COLUMNS": "300"})
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert result.output == (
        f"error: config file {str(config)!r}: catalogue.path: {str(tmp_path / 'nowhere.csv')!r} does not exist\n"
    )
    (tmp_path / "nowhere.csv").write_text("text,price\n")
    result = runner.invoke(app, ["report", "price-drivers", str(config)], env={"COLUMNS": "300"})
    assert (
        result.output
        == f"error: config file {str(config)!r}: model.path: {str(tmp_path / 'no-model')!r} does not exist\n"
    )
    debug = runner.invoke(app, ["--debug", "report", "price-drivers", str(config)])
    assert type(debug.exception).__name__ == "SettingsError"
    import flows.cli

    flows.cli._DEBUG["on"] = False


def test_ui_command_names_the_workdir() -> None:
    from flows.cli import ui_command

    assert ui_command("sqlite:////tmp/w/mlflow.db") == "xattr ui --workdir /tmp/w"
    assert ui_command("sqlite:////tmp/w/other.db") == "xattr ui --tracking-uri sqlite:////tmp/w/other.db"


def test_ui_command_is_typeable_when_the_venv_is_not_on_path(tmp_path: Path, monkeypatch) -> None:
    from flows.cli import ui_command

    # `make demo` runs .venv/bin/xattr without putting .venv/bin on PATH: a bare `xattr` is not found.
    script = tmp_path / ".venv" / "bin" / "xattr"
    script.parent.mkdir(parents=True)
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [str(script), "demo"])
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert ui_command("sqlite:////tmp/w/mlflow.db") == ".venv/bin/xattr ui --workdir /tmp/w"
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # not under the clone: the absolute path
    assert ui_command("sqlite:////tmp/w/mlflow.db") == f"{script} ui --workdir /tmp/w"
    monkeypatch.setenv("PATH", f"{script.parent}:/usr/bin:/bin")  # activated venv: the bare name works
    assert ui_command("sqlite:////tmp/w/mlflow.db") == "xattr ui --workdir /tmp/w"
    from flows.cli import typeable

    monkeypatch.chdir(tmp_path)
    assert typeable("prefect") == ".venv/bin/prefect"  # no prefect script on PATH: the venv's, by path
    prefect = script.with_name("prefect")
    prefect.write_text("#!/bin/sh\n")
    prefect.chmod(0o755)
    assert typeable("prefect") == "prefect"


def test_bad_config_exits_2_naming_the_field(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("corpus: {path: c.csv, txt: 1}\nmodel: {path: m}\n")
    result = runner.invoke(app, ["run", str(config)], env={"COLUMNS": "300"})
    assert result.exit_code == 2
    assert "corpus.txt: Extra inputs are not permitted" in result.output


def test_benchmark_command_help_and_bad_config(tmp_path: Path) -> None:
    result = runner.invoke(app, ["benchmark", "--help"], env={"COLUMNS": "300"})
    assert result.exit_code == 0 and "--data-root" in result.output
    config = tmp_path / "b.yaml"
    config.write_text("dataset: {name: sst, eval: dev.txt}\nmodel: {path: /m}\nevaluation: {replacement: blank}\n")
    result = runner.invoke(app, ["benchmark", str(config)], env={"COLUMNS": "300"})
    assert result.exit_code == 2
    assert "evaluation.replacement" in result.output


def test_the_viewer_and_ui_lines_never_break_a_path_at_80_columns(tmp_path) -> None:
    from rich.console import Console

    from flows import cli

    deep = tmp_path / ("w" * 40) / "artifacts" / ("r" * 40)
    summary = {
        "artifacts_dir": str(deep),
        "viewer": str(deep / "viewer" / "explanations.html"),
        "tracking_uri": f"sqlite:///{tmp_path / ('w' * 40) / 'mlflow.db'}",
    }
    narrow = Console(width=80, record=True)
    original, cli.console = cli.console, narrow
    try:
        cli._viewer_lines(summary)
    finally:
        cli.console = original
    lines = narrow.export_text().splitlines()
    assert any(line.endswith(summary["viewer"]) for line in lines)
    assert any(line.endswith(f"xattr ui --workdir {tmp_path / ('w' * 40)}") for line in lines)


#: A flow that drops its Ctrl-C (as Python drops it inside a garbage-collector callback) and goes on
#: for a minute, with a child process (as a Dask worker) that would outlive it.
_DROPS_ITS_INTERRUPT = """
import subprocess, sys, time
import typer
import flows.cli as cli

def flow(settings):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    print(child.pid, flush=True)
    try:
        time.sleep(60)
    except KeyboardInterrupt:
        pass
    time.sleep(60)
    return {}

cli.INTERRUPT_GRACE_SECONDS = 1.0
try:
    cli._run_flow(flow, None)
except typer.Exit as exc:
    sys.exit(exc.exit_code)
"""


def _interrupted(script: str) -> tuple[int, int, str, str]:
    """Run ``script``; Ctrl-C it once its flow printed its child's pid: (exit code, child pid, stdout, stderr)."""
    import os
    import signal
    import subprocess

    env = os.environ | {"PREFECT_API_URL": "http://127.0.0.1:9/api"}  # set: no temporary server is started
    process = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=Path(__file__).resolve().parents[3],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        child = int(process.stdout.readline())
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    return process.returncode, child, out, err


def test_a_ctrl_c_dropped_inside_a_run_still_stops_it_and_its_children() -> None:
    import psutil

    code, child, _, err = _interrupted(_DROPS_ITS_INTERRUPT)
    assert code == 130, err
    assert "interrupted; the run did not stop within 1 s, so its processes were stopped" in err
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE


def test_a_run_interrupted_normally_exits_130_with_one_line() -> None:
    dropped, kept = "    except KeyboardInterrupt:\n        pass\n", "    finally:\n        child.kill()\n"
    assert dropped in _DROPS_ITS_INTERRUPT
    code, _, out, err = _interrupted(_DROPS_ITS_INTERRUPT.replace(dropped, kept))
    assert code == 130 and "interrupted (Ctrl-C); finished stages are cached" in out, out + err
    assert "did not stop within" not in err
