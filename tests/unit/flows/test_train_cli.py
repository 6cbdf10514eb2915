"""`xattr train` and `xattr concepts` on the command line; train config files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from flows.cli import app
from flows.settings import SettingsError
from flows.train_settings import load_train_settings
from tests.conftest import save_tiny_model
from xattr.ldav import LdavVectors, save_ldav_vectors

runner = CliRunner()


@pytest.fixture
def ldav_dir(tmp_path: Path) -> Path:
    directory = save_tiny_model(tmp_path / "model", num_labels=2)
    vectors = torch.randn(2, 32, generator=torch.Generator().manual_seed(0))
    save_ldav_vectors(directory, LdavVectors(vectors, False, 1.0, 0.01, "cosine", "predicted", ("neg", "pos")))
    return directory


def test_train_and_concepts_have_help() -> None:
    for command in (["train"], ["concepts"]):
        result = runner.invoke(app, [*command, "--help"])
        assert result.exit_code == 0 and "Usage" in result.output


def test_concepts_prints_a_score_per_class_and_the_correlations(ldav_dir: Path, tmp_path: Path) -> None:
    words = tmp_path / "negative.txt"
    words.write_text("bad\nawful\n\nboring\n")
    result = runner.invoke(
        app, ["concepts", str(ldav_dir), "good movie", "--word-list", f"lexicon={words}"], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    assert "good movie" in result.output and "lexicon" in result.output
    assert "neg" in result.output and "pos" in result.output and "Correlation" in result.output
    assert "+1.00" in result.output and "-1.00" in result.output  # two classes: exactly +-1


def test_concepts_refuses_unknown_phrases_and_models_without_ldav(ldav_dir: Path, tiny_classifier_dir: Path) -> None:
    result = runner.invoke(app, ["concepts", str(ldav_dir), "zzyzx"], env={"COLUMNS": "300"})
    assert result.exit_code == 1 and "has no word piece the model knows" in result.output
    result = runner.invoke(app, ["concepts", str(tiny_classifier_dir), "good"], env={"COLUMNS": "300"})
    assert result.exit_code == 1 and "trained without LDAV" in result.output


def test_train_config_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    config = tmp_path / "sub" / "train.yaml"
    config.parent.mkdir()
    config.write_text(
        "corpus: {path: data/c.csv, label_column: y}\nbase_model: ../base\nldav: {enabled: true, distance: euclidean}\n"
    )
    settings = load_train_settings(config)
    assert settings.corpus.path == tmp_path / "sub" / "data" / "c.csv"
    assert settings.base_model == str(tmp_path / "base")
    assert settings.workdir == tmp_path / "sub" / "xattr-runs"
    assert (settings.ldav.enabled, settings.ldav.distance, settings.ldav.rho1, settings.ldav.rho2) == (
        True,
        "euclidean",
        1.0,
        0.01,
    )


def test_bad_train_config_names_the_field(tmp_path: Path) -> None:
    config = tmp_path / "train.yaml"
    config.write_text("corpus: {path: c.csv, label_column: y}\nbase_model: b\nldav: {distance: manhattan}\n")
    with pytest.raises(SettingsError, match="ldav.distance"):
        load_train_settings(config)
    result = runner.invoke(app, ["train", str(config)], env={"COLUMNS": "300"})
    assert result.exit_code == 2 and "ldav.distance" in result.output
