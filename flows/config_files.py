"""Reading YAML config files: one place for the checks and messages every flow's settings share."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

SettingsModel = TypeVar("SettingsModel", bound=BaseModel)


class SettingsError(ValueError):
    """A configuration file cannot be used; the message names the file and the field."""


def read_config(path: Path | str) -> tuple[Path, dict[str, Any]]:
    """The config file's directory (relative paths are relative to it) and its top-level mapping.

    Raises:
        SettingsError: Missing file, invalid YAML, or no mapping at the top level.
    """
    path = Path(path)
    if not path.is_file():
        raise SettingsError(f"config file {str(path)!r} does not exist")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise SettingsError(f"config file {str(path)!r} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise SettingsError(f"config file {str(path)!r} must hold a mapping at the top level")
    return path.resolve().parent, raw


def resolve_path(base: Path, value: str | Path) -> Path:
    """``value`` as an absolute path, taken relative to ``base`` when relative."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else (base / path).resolve()


def resolve_model_path(base: Path, value: str) -> str:
    """A model location: a path relative to ``base`` when it exists or looks like a path, else a hub id."""
    candidate = resolve_path(base, value)
    return str(candidate) if candidate.exists() or str(value).startswith((".", "/", "~")) else value


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
