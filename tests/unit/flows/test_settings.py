from __future__ import annotations

from pathlib import Path

import pytest

from flows.settings import ExplainSettings, SettingsError, load_settings


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_relative_paths_resolve_against_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    path = _write(tmp_path, "corpus:\n  path: data/c.csv\nmodel:\n  path: model\nworkdir: out\n")
    settings = load_settings(path)
    assert settings.corpus.path == tmp_path / "data" / "c.csv"
    assert settings.model.path == str(tmp_path / "model")
    assert settings.workdir == tmp_path / "out"
    assert settings.tracking_uri() == f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}"
    assert [m.key for m in settings.attribution.methods] == ["simple_grad", "grad_input"]


def test_hub_ids_are_left_alone(tmp_path: Path) -> None:
    path = _write(tmp_path, "corpus: {path: c.csv}\nmodel: {path: textattack/bert-base-uncased-SST-2}\n")
    assert load_settings(path).model.path == "textattack/bert-base-uncased-SST-2"


def test_unknown_method_is_named_with_the_valid_ones(tmp_path: Path) -> None:
    path = _write(tmp_path, "corpus: {path: c.csv}\nmodel: {path: m}\nattribution:\n  methods: [{name: magic}]\n")
    with pytest.raises(SettingsError, match="unknown attribution method 'magic'; valid methods: .*simple_grad"):
        load_settings(path)


def test_typos_and_bad_values_name_the_field(tmp_path: Path) -> None:
    path = _write(tmp_path, "corpus: {path: c.csv, txt_column: body}\nmodel: {path: m}\n")
    with pytest.raises(SettingsError, match="corpus.txt_column: Extra inputs are not permitted"):
        load_settings(path)
    path = _write(tmp_path, "corpus: {path: c.csv}\nmodel: {path: m}\nevaluation: {fractions: [0.0, 0.5]}\n")
    with pytest.raises(SettingsError, match="evaluation.fractions"):
        load_settings(path)


def test_repeated_method_labels_are_refused() -> None:
    with pytest.raises(ValueError, match="repeated: grad_input"):
        ExplainSettings.model_validate(
            {
                "corpus": {"path": "c"},
                "model": {"path": "m"},
                "attribution": {"methods": [{"name": "grad_input"}, {"name": "grad_input"}]},
            }
        )


def test_missing_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(tmp_path / "none.yaml")
    with pytest.raises(SettingsError, match="not valid YAML"):
        load_settings(_write(tmp_path, "corpus: [unclosed\n"))


def test_fine_tune_train_path_resolves_and_driver_and_viewer_settings_reach_the_library(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "corpus: {path: c.csv}\nmodel:\n  fine_tune: {train_path: data/train.csv}\n"
        "drivers: {min_count: 3, top_k: 4, drop_numbers: false}\nviewer: {max_documents: 50}\n",
    )
    settings = load_settings(path)
    assert settings.model.fine_tune is not None
    assert settings.model.fine_tune.train_path == tmp_path / "data" / "train.csv"
    drivers = settings.drivers.library(seed=7, batch_size=16)
    assert (drivers.min_count, drivers.top_k, drivers.drop_numbers, drivers.seed, drivers.batch_size) == (
        3, 4, False, 7, 16,
    )  # fmt: skip
    assert (drivers.drop_stop_words, drivers.min_chars, drivers.replacement) == (True, 2, "mask")  # defaults
    viewer = settings.viewer.library(seed=1, title="t")
    assert (viewer.max_documents, viewer.max_chars, viewer.seed, viewer.title) == (50, 1000, 1, "t")
    with pytest.raises(SettingsError, match="drivers.min_count"):
        load_settings(_write(tmp_path, "corpus: {path: c.csv}\nmodel: {path: m}\ndrivers: {min_count: 0}\n"))
