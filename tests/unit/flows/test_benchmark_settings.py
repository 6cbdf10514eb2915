"""Benchmark configs: every shipped config validates; data_root resolution; bad configs named."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from flows.benchmark_settings import load_benchmark_settings
from flows.config_files import repo_root
from flows.settings import SettingsError
from xattr.metrics.applicability import MetricNotApplicableError
from xattr.metrics.suite import applicable_metrics

REPO = Path(__file__).resolve().parents[3]
CONFIGS = sorted((REPO / "configs" / "benchmarks").rglob("*.yaml"))
SHARED = REPO.parent / "shared" / "data"
if not SHARED.is_dir():
    SHARED = REPO.parent.parent / "shared" / "data"


@pytest.mark.parametrize("config", CONFIGS, ids=[str(c.relative_to(REPO / "configs" / "benchmarks")) for c in CONFIGS])
def test_shipped_configs_validate(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XATTR_DATA_ROOT", raising=False)
    settings = load_benchmark_settings(config)
    assert settings.workdir == (REPO / "xattr-benchmarks" / settings.workdir.name).resolve()
    assert settings.data_root == (REPO / "../shared/data").resolve()
    # Metrics asked for apply to the dataset's task.
    applicable_metrics(settings.dataset.task, tuple(settings.evaluation.metrics or ()) or None)
    if config.stem != "tiny" and SHARED.is_dir():
        shared = load_benchmark_settings(config, data_root=SHARED)
        for part in (shared.dataset.train, shared.dataset.eval):
            if part is not None:
                assert shared.data_file(part).is_file(), shared.data_file(part)


def test_a_given_model_is_one_a_shipped_config_fine_tunes() -> None:
    """A config naming ``model.path`` names the ``<task>-<key>`` directory that another shipped config's
    fine_tune stage creates under its workdir's ``models/`` (run that config first), never a placeholder."""
    settings = {config: load_benchmark_settings(config) for config in CONFIGS}
    trained_here = {s.workdir / "models" for s in settings.values() if s.model.path is None}
    for config, found in settings.items():
        if found.model.path is None:
            continue
        path = Path(found.model.path)
        assert path.parent in trained_here, f"{config.name}: model.path {path} is no shipped config's models/ directory"
        assert re.fullmatch(rf"{found.dataset.task}-[0-9a-f]{{16}}", path.name), f"{config.name}: model.path {path}"


def test_expected_configs_are_shipped() -> None:
    assert {c.stem for c in CONFIGS} >= {"sst2", "webnlg", "catalogue", "ag_news", "tiny"}


def test_data_root_override_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("dataset: {name: imdb, eval: imdb/x.csv.gz}\nmodel: {path: /m}\n")
    monkeypatch.setenv("XATTR_DATA_ROOT", str(tmp_path / "env"))
    assert load_benchmark_settings(config).data_file(Path("a")) == tmp_path / "env" / "a"
    assert load_benchmark_settings(config, data_root=tmp_path / "arg").data_root == tmp_path / "arg"
    assert repo_root(tmp_path) == tmp_path  # no pyproject.toml above a temporary directory


def test_bad_configs_are_named(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("dataset: {name: sst}\n")
    with pytest.raises(SettingsError, match="needs dataset.train and/or dataset.eval"):
        load_benchmark_settings(config)
    config.write_text("dataset: {name: sst, eval: dev.txt}\n")
    with pytest.raises(SettingsError, match="fine-tuning needs dataset.train"):
        load_benchmark_settings(config)
    config.write_text("dataset: {name: sst, eval: dev.txt}\nmodel: {path: /m}\nevaluation: {fractions: [0]}\n")
    with pytest.raises(SettingsError, match="evaluation.fractions"):
        load_benchmark_settings(config)


def test_metric_for_the_wrong_task_is_refused() -> None:
    with pytest.raises(MetricNotApplicableError, match="'switching_point' does not apply to a regression model"):
        applicable_metrics("regression", ("aopc", "switching_point"))
    with pytest.raises(MetricNotApplicableError, match="unknown metric 'auc'"):
        applicable_metrics("classification", ("auc",))
    assert applicable_metrics("regression", None) == ("aopc", "degradation", "mape")
    assert applicable_metrics("classification", None) == ("aopc", "degradation", "switching_point")
