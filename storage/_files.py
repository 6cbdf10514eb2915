"""File primitives: streamed hashing and atomic, never-overwriting publication of a file."""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
from collections.abc import Callable
from pathlib import Path

from storage.errors import StorageError

__all__ = ["file_sha256", "publish_file", "read_verified", "refuse_existing"]

logger = logging.getLogger(__name__)

_CHUNK_BYTES = 1 << 20


def file_sha256(path: Path | str) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB chunks.

    Args:
        path: The file to hash.

    Returns:
        The digest as 64 lowercase hexadecimal characters.

    Raises:
        StorageError: If the file cannot be read; the artifact named is the path.
    """
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as file:
            while chunk := file.read(_CHUNK_BYTES):
                digest.update(chunk)
    except OSError as exc:
        raise StorageError(str(path), f"cannot hash file: {exc}") from exc
    return digest.hexdigest()


def read_verified(path: Path, expected_sha256: str, *, artifact: str) -> bytes:
    """Read a whole file and check its SHA-256, so that the bytes checked are the bytes used.

    Args:
        path: The file to read.
        expected_sha256: The digest recorded when the file was written.
        artifact: The artifact's name, for error messages.

    Returns:
        The file's bytes.

    Raises:
        StorageError: If the file is missing or unreadable, or its digest differs.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise StorageError(artifact, f"file {path} does not exist") from exc
    except OSError as exc:
        raise StorageError(artifact, f"cannot read {path}: {exc}") from exc
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected_sha256:
        raise StorageError(
            artifact,
            f"sha256 mismatch for {path}: recorded {expected_sha256}, file has {actual}; "
            "the file was modified after it was written",
        )
    return data


def refuse_existing(target: Path, *, artifact: str) -> None:
    """Fail if anything, even a dangling link, is at ``target``.

    Args:
        target: The path an artifact is about to be written to.
        artifact: The artifact's name, for error messages.

    Raises:
        StorageError: If ``target`` exists.
    """
    if os.path.lexists(target):
        raise StorageError(artifact, f"{target} already exists; artifacts are immutable")


def _sync_and_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK_BYTES):
            digest.update(chunk)
        os.fsync(file.fileno())
    return digest.hexdigest()


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _discard(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        logger.warning("could not remove temporary file %s: %s", path, exc)


def publish_file(target: Path, write: Callable[[Path], object], *, artifact: str, same_bytes_ok: bool = False) -> str:
    """Write a file next to ``target`` and link it into place without ever overwriting.

    ``write`` fills a fresh temporary file in ``target``'s directory, named
    ``.<target name>.<random>.tmp``. The file is fsynced, hashed, then hard-linked to ``target``
    (``os.link`` fails if ``target`` exists, so a concurrent writer can never be overwritten),
    and the temporary name is removed. Whatever happens, including ``KeyboardInterrupt``, the
    temporary file does not survive; ``target`` appears only complete or not at all.

    Args:
        target: The final path; its parent directories are created.
        write: Fills the file at the path it is given. It should raise :class:`StorageError`
            for its own failures; an ``OSError`` it raises is wrapped.
        artifact: The artifact's name, for error messages.
        same_bytes_ok: A file already at ``target`` with exactly the bytes ``write`` produced is
            kept and counts as published (a task run again after its worker died writes the same
            part again); one with other bytes is still refused.

    Returns:
        The SHA-256 of the published file.

    Raises:
        StorageError: If ``target`` already exists (checked before writing and again at the
            link), or creating, writing, syncing or linking fails.
    """
    if not same_bytes_ok:
        refuse_existing(target, artifact=artifact)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(artifact, f"cannot create directory {target.parent}: {exc}") from exc
    temporary = target.parent / f".{target.name}.{secrets.token_hex(8)}.tmp"
    try:
        # O_EXCL: never reuse a file we did not create; 0o666 lets the umask decide permissions.
        os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except OSError as exc:
        raise StorageError(artifact, f"cannot create temporary file {temporary}: {exc}") from exc
    try:
        try:
            write(temporary)
            digest = _sync_and_hash(temporary)
        except OSError as exc:
            raise StorageError(artifact, f"cannot write {temporary}: {exc}") from exc
        try:
            os.link(temporary, target)
        except FileExistsError as exc:
            if same_bytes_ok and file_sha256(target) == digest:
                logger.debug("%s already holds the same bytes; kept", target)
                return digest
            raise StorageError(artifact, f"{target} already exists; artifacts are immutable") from exc
        except OSError as exc:
            raise StorageError(artifact, f"cannot link {temporary} to {target}: {exc}") from exc
    finally:
        _discard(temporary)
    try:
        _fsync_directory(target.parent)
    except OSError as exc:
        # The file is complete and in place; only the durability of its name is in doubt.
        logger.warning("could not sync directory %s: %s", target.parent, exc)
    logger.debug("published %s (sha256 %s)", target, digest)
    return digest
