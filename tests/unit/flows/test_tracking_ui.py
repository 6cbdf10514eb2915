"""``xattr ui`` bad input that needs no server: a taken port, a missing store, no store given."""

from __future__ import annotations

import socket
from pathlib import Path

from typer.testing import CliRunner

from flows.cli import app
from flows.tracking_ui import port_in_use
from tasks.tracking import sqlite_path

runner = CliRunner()


def test_port_in_use_is_one_clear_line(tmp_path: Path) -> None:
    (tmp_path / "mlflow.db").write_bytes(b"")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        assert port_in_use("127.0.0.1", port)
        result = runner.invoke(app, ["ui", "--workdir", str(tmp_path), "--port", str(port)])
    assert result.exit_code == 1
    assert result.output == f"error: port {port} on 127.0.0.1 is already in use; choose another with --port\n"


def test_missing_store_and_no_store_are_named(tmp_path: Path) -> None:
    result = runner.invoke(app, ["ui", "--workdir", str(tmp_path / "nowhere")])
    assert result.exit_code == 1
    assert result.output == (
        f"error: no MLflow store at {tmp_path / 'nowhere' / 'mlflow.db'} (run `xattr run CONFIG` first,"
        " or pass --tracking-uri)\n"
    )
    result = runner.invoke(app, ["ui"])
    assert result.exit_code == 2
    assert result.output == "error: give a CONFIG, --workdir or --tracking-uri\n"


def test_store_of_a_config_is_its_tracking_uri(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("workdir: runs\ncorpus: {path: c.csv}\nmodel: {path: m}\n")
    result = runner.invoke(app, ["ui", str(config)])
    assert result.exit_code == 1
    assert f"no MLflow store at {tmp_path / 'runs' / 'mlflow.db'}" in result.output
    assert sqlite_path("sqlite:////a/b/mlflow.db") == Path("/a/b/mlflow.db")
    assert sqlite_path("http://127.0.0.1:5000") is None
