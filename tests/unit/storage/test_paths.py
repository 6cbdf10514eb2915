"""Names that become path components cannot leave their directory (issue "Hardening", 5)."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.settings import ExplainSettings, SettingsError, load_settings
from flows.train_settings import load_train_settings
from storage import UnsafePathError, inside, path_component

ESCAPES = ["../../../x", "..", ".", "", "a/b", "/etc", "a\\b", "a\0b", ".hidden", "tab\there", "x" * 201]


@pytest.mark.parametrize("name", ESCAPES)
def test_unsafe_names_are_refused(name: str, tmp_path: Path) -> None:
    with pytest.raises(UnsafePathError, match="unsafe name"):
        path_component(name, "name")
    with pytest.raises(UnsafePathError):
        inside(tmp_path, name)


def test_safe_names_pass_and_stay_inside(tmp_path: Path) -> None:
    for name in ("reviews-nightly", "my run 2", "sst2_dev", "é-ü"):
        assert path_component(name, "name") == name
        assert inside(tmp_path, name) == tmp_path.resolve() / name


def test_a_planted_link_cannot_redirect_a_name_outside(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    parent = tmp_path / "models"
    parent.mkdir()
    (parent / "m-1").symlink_to(outside)
    with pytest.raises(UnsafePathError, match="outside"):
        inside(parent, "m-1")


def test_train_name_that_escapes_the_workdir_is_a_config_error(tmp_path: Path) -> None:
    config = tmp_path / "train.yaml"
    config.write_text("name: ../../../x\ncorpus: {path: c.csv, label_column: y}\n")
    escape = r"config file .*train.yaml.*: name: Value error, unsafe name '\.\./\.\./\.\./x'"
    with pytest.raises(SettingsError, match=escape):
        load_train_settings(config)


def test_run_name_and_method_label_are_path_components(tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text("name: a/b\ncorpus: {path: c.csv}\nmodel: {path: m}\n")
    with pytest.raises(SettingsError, match="name: Value error, unsafe name 'a/b'"):
        load_settings(config)
    with pytest.raises(ValueError, match="unsafe method label"):
        ExplainSettings.model_validate(
            {
                "workdir": str(tmp_path),
                "corpus": {"path": "c.csv"},
                "model": {"path": "m"},
                "attribution": {"methods": [{"name": "simple_grad", "label": ".."}]},
            }
        )
