"""Opening a dataset file: one place for the "does not exist" and "cannot be read" messages."""

from __future__ import annotations

from pathlib import Path


def existing_file(path: Path | str, *, what: str, error: type[Exception]) -> Path:
    """``path`` as a :class:`Path` when it is a file.

    Args:
        path: The file.
        what: How messages name it (``"SST file"``).
        error: The adapter's error type.

    Raises:
        ``error``: The file does not exist or is a directory.
    """
    path = Path(path)
    if path.is_dir():
        raise error(f"{what} {str(path)!r} is a directory, not a file")
    if not path.is_file():
        raise error(f"{what} {str(path)!r} does not exist")
    return path


def read_text_lines(path: Path | str, *, what: str, error: type[Exception]) -> list[str]:
    """The UTF-8 text file's lines (without line ends).

    Raises:
        ``error``: The file does not exist, cannot be read or is not UTF-8.
    """
    path = existing_file(path, what=what, error=error)
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{what} {str(path)!r} cannot be read: {exc}") from exc
