from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from flows.cli import app
from xattr.methods import available_methods

runner = CliRunner()


def test_methods_lists_every_registered_method_with_its_reference() -> None:
    result = runner.invoke(app, ["methods"], env={"COLUMNS": "300"})
    assert result.exit_code == 0
    for name, cls in available_methods().items():
        assert name in result.output
        assert cls.paper.split(";")[0] in result.output
    assert "epsilon_quantile" in result.output and "steps" in result.output


def test_every_command_has_help() -> None:
    for command in ([], ["run"], ["methods"], ["demo"], ["heads"]):
        result = runner.invoke(app, [*command, "--help"])
        assert result.exit_code == 0 and "Usage" in result.output


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
