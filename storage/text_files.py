"""Small text outputs (run summaries, markdown tables), written atomically and never overwritten."""

from __future__ import annotations

from pathlib import Path

from storage._files import publish_file


def write_text_file(path: Path | str, text: str, *, name: str) -> str:
    """Publish ``text`` at ``path`` atomically; refuse to overwrite.

    Args:
        path: Target file path (parents are created).
        text: UTF-8 content.
        name: Artifact name for error messages.

    Returns:
        The SHA-256 of the written file.

    Raises:
        StorageError: ``path`` exists, or writing fails.
    """
    data = text.encode("utf-8")
    return publish_file(Path(path), lambda tmp: tmp.write_bytes(data), artifact=name)


def write_binary_file(path: Path | str, data: bytes, *, name: str) -> str:
    """Publish ``data`` (an image, say) at ``path`` atomically; refuse to overwrite.

    Args:
        path: Target file path (parents are created).
        data: The file's bytes.
        name: Artifact name for error messages.

    Returns:
        The SHA-256 of the written file.

    Raises:
        StorageError: ``path`` exists, or writing fails.
    """
    payload = bytes(data)
    return publish_file(Path(path), lambda tmp: tmp.write_bytes(payload), artifact=name)
