"""Names that become path components: the one check, and the one "stays inside its parent" check.

Run ids, stage and artifact names, method labels, run and train names all end up as a directory
or file name under the work directory. A name such as ``../../x`` or ``/etc`` would write outside
it, so every such name goes through :func:`path_component`, and every path built from one through
:func:`inside`.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from storage.errors import StorageError, WorkdirError

__all__ = ["UnsafePathError", "inside", "path_component", "writable_directory"]

_FORBIDDEN = ("/", "\\", "\0")
_MAX_BYTES = 200  # below the usual 255-byte file-name limit, leaving room for suffixes


class UnsafePathError(StorageError, ValueError):
    """A name cannot be used as a path component, or a path leaves its parent directory.

    A :class:`ValueError` too, so a settings validator that calls :func:`path_component`
    reports it as a config error naming the field.
    """

    def __init__(self, value: str, problem: str) -> None:
        StorageError.__init__(self, value, problem)

    def __str__(self) -> str:
        return self.problem


def path_component(value: object, what: str) -> str:
    """``value`` when it is safe as one file or directory name.

    Safe: a non-empty string of at most 200 bytes (UTF-8), without ``/``, ``\\``, NUL or other
    control characters, that does not start with ``.`` (so neither ``.``, ``..`` nor a hidden name).

    Args:
        value: The name.
        what: How the message names it (``"run id"``, ``"name"``).

    Raises:
        UnsafePathError: Naming ``what``, the value and the rule.
    """
    rule = (
        "it must be a non-empty name of at most 200 bytes without '/', '\\', NUL or control "
        "characters that does not start with '.'"
    )
    if (
        not isinstance(value, str)
        or not value
        or value.startswith(".")
        or any(char in value for char in _FORBIDDEN)
        or any(ord(char) < 32 or ord(char) == 127 for char in value)
        or len(value.encode("utf-8", "surrogatepass")) > _MAX_BYTES
    ):
        raise UnsafePathError(str(value), f"unsafe {what} {value!r}: {rule}")
    return value


def inside(parent: Path | str, *parts: str, what: str = "name") -> Path:
    """``parent / part / ...`` with each part checked by :func:`path_component`, resolved inside ``parent``.

    The resolved path (symbolic links followed) must lie inside the resolved ``parent``: a link
    planted under the work directory cannot redirect a write elsewhere.

    Raises:
        UnsafePathError: A part is unsafe, or the resolved path is not inside ``parent``.
    """
    root = Path(parent).resolve()
    for part in parts:
        path_component(part, what)
    target = root.joinpath(*parts).resolve()
    if target != root and root not in target.parents:
        raise UnsafePathError(str(target), f"{what} {'/'.join(parts)!r} resolves to {target}, outside {root}")
    return target


def writable_directory(path: Path | str) -> Path:
    """``path`` resolved, created when missing, after proving a file can be created and removed in it.

    Checked before anything is started, so a read-only or full work directory is one clear line
    up front instead of an error (or minutes of retries) deep inside a stage or the MLflow store.

    Raises:
        WorkdirError: It is not a directory, cannot be created, or a file cannot be written in it.
    """
    directory = Path(path).resolve()
    if directory.exists() and not directory.is_dir():
        raise WorkdirError(str(directory), "is not a directory")
    probe = directory / f".xattr-write-check-{secrets.token_hex(4)}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(descriptor, b"x")
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
    except OSError as exc:
        raise WorkdirError(str(directory), f"is not writable ({exc.strerror or exc})") from exc
    finally:
        try:
            probe.unlink(missing_ok=True)
        except OSError:
            pass  # nothing was created
    return directory
