"""FAISS index artifacts: a directory holding ``index.faiss`` and ``manifest.json``.

The index file is published first and the manifest last, each atomically and without
overwriting, so a directory with a manifest holds a complete index.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from storage._files import publish_file, read_verified, refuse_existing
from storage.artifacts import ArtifactRef
from storage.errors import StorageError

__all__ = [
    "FAISS_INDEX_KIND",
    "FAISS_INDEX_SCHEMA_VERSION",
    "INDEX_FILENAME",
    "MANIFEST_FILENAME",
    "read_index",
    "write_index",
]

logger = logging.getLogger(__name__)

#: The kind recorded in references to FAISS index artifacts.
FAISS_INDEX_KIND = "faiss_index"
#: The version of the index artifact layout (the two files and the manifest's fields).
FAISS_INDEX_SCHEMA_VERSION = 1
INDEX_FILENAME = "index.faiss"
MANIFEST_FILENAME = "manifest.json"
_RESERVED_KEYS = ("ntotal", "dim", "index_type", "sha256", "schema_version")


def _manifest_text(manifest: dict[str, Any], name: str) -> str:
    try:
        return json.dumps(manifest, indent=2, sort_keys=True, allow_nan=False) + "\n"
    except (TypeError, ValueError) as exc:
        raise StorageError(name, f"manifest is not JSON-serialisable: {exc}") from exc


def write_index(index: faiss.Index, directory: Path | str, *, name: str, manifest: dict[str, Any]) -> ArtifactRef:
    """Write a FAISS index and its manifest into a directory, never overwriting.

    ``manifest.json`` holds ``manifest`` plus ``ntotal``, ``dim``, ``index_type`` (the index's
    class name), ``sha256`` (of ``index.faiss``) and ``schema_version``.

    Args:
        index: The index to save.
        directory: The artifact directory; created if absent, and it must not already hold
            ``index.faiss`` or ``manifest.json``.
        name: The artifact's name, recorded in the reference and used in error messages.
        manifest: JSON-serialisable information about the index (e.g. the embedding model and
            the upstream artifact's hash); it must not use the keys written by this function.

    Returns:
        A reference of kind ``"faiss_index"`` whose path is the (absolute) directory, whose
        hash is the index file's and whose row count is ``index.ntotal``.

    Raises:
        StorageError: If ``index`` is not a FAISS index, the manifest uses a reserved key or
            is not JSON-serialisable, either file already exists, or writing fails.
    """
    if not isinstance(index, faiss.Index):
        raise StorageError(name, f"expected a faiss.Index, got {type(index).__name__}")
    if not isinstance(manifest, dict):
        raise StorageError(name, f"manifest must be a dict, got {type(manifest).__name__}")
    reserved = [key for key in _RESERVED_KEYS if key in manifest]
    if reserved:
        raise StorageError(name, f"manifest uses reserved key(s): {', '.join(reserved)}")
    _manifest_text(manifest, name)
    directory = Path(directory).absolute()
    index_path = directory / INDEX_FILENAME
    manifest_path = directory / MANIFEST_FILENAME
    refuse_existing(index_path, artifact=name)
    refuse_existing(manifest_path, artifact=name)

    def write_index_file(temporary: Path) -> None:
        try:
            faiss.write_index(index, os.fspath(temporary))
        except RuntimeError as exc:
            raise StorageError(name, f"faiss cannot write the index: {exc}") from exc

    digest = publish_file(index_path, write_index_file, artifact=name)
    full_manifest = {
        **manifest,
        "ntotal": int(index.ntotal),
        "dim": int(index.d),
        "index_type": type(index).__name__,
        "sha256": digest,
        "schema_version": FAISS_INDEX_SCHEMA_VERSION,
    }
    text = _manifest_text(full_manifest, name)
    try:
        publish_file(manifest_path, lambda temporary: temporary.write_text(text, "utf-8"), artifact=name)
    except BaseException:
        # The index file is ours (os.link never replaces a file); without a manifest it is an
        # orphan, so take it back.
        try:
            index_path.unlink(missing_ok=True)
        except OSError as exc:
            logger.warning("could not remove orphaned index file %s: %s", index_path, exc)
        raise
    logger.debug("wrote faiss index %r: %d vectors to %s", name, index.ntotal, directory)
    return ArtifactRef(
        name=name,
        kind=FAISS_INDEX_KIND,
        path=str(directory),
        schema_version=FAISS_INDEX_SCHEMA_VERSION,
        sha256=digest,
        rows=int(index.ntotal),
    )


def _read_manifest(path: Path, name: str) -> dict[str, Any]:
    try:
        manifest = json.loads(path.read_text("utf-8"))
    except FileNotFoundError as exc:
        raise StorageError(name, f"manifest {path} does not exist") from exc
    except (OSError, ValueError) as exc:
        raise StorageError(name, f"cannot read manifest {path}: {exc}") from exc
    if not isinstance(manifest, dict):
        raise StorageError(name, f"manifest {path} is not a JSON object")
    missing = [key for key in _RESERVED_KEYS if key not in manifest]
    if missing:
        raise StorageError(name, f"manifest {path} lacks key(s): {', '.join(missing)}")
    return manifest


def _check_loaded(index: faiss.Index, manifest: dict[str, Any], ref: ArtifactRef) -> None:
    problems: list[str] = []
    if index.ntotal != manifest["ntotal"] or index.ntotal != ref.rows:
        problems.append(
            f"index holds {index.ntotal} vectors, manifest records {manifest['ntotal']}, reference records {ref.rows}"
        )
    if index.d != manifest["dim"]:
        problems.append(f"index dimension is {index.d}, manifest records {manifest['dim']}")
    # faiss.read_index returns the most derived class (IndexFlat comes back as IndexFlatL2 or
    # IndexFlatIP), so the recorded class must be the loaded one or one of its bases.
    recorded_class = getattr(faiss, str(manifest["index_type"]), None)
    if not (isinstance(recorded_class, type) and isinstance(index, recorded_class)):
        problems.append(f"index type is {type(index).__name__}, manifest records {manifest['index_type']}")
    if problems:
        raise StorageError(ref.name, "; ".join(problems))


def read_index_manifest(ref: ArtifactRef) -> dict[str, Any]:
    """The manifest of a FAISS index artifact, checked against its reference, without loading the index.

    Raises:
        StorageError: As :func:`read_index`, for everything but the index file itself.
    """
    if ref.kind != FAISS_INDEX_KIND:
        raise StorageError(ref.name, f"kind {ref.kind!r} is not {FAISS_INDEX_KIND!r}")
    if ref.schema_version != FAISS_INDEX_SCHEMA_VERSION:
        raise StorageError(
            ref.name,
            f"reference has schema version {ref.schema_version}, but FAISS index artifacts "
            f"are at version {FAISS_INDEX_SCHEMA_VERSION}",
        )
    manifest = _read_manifest(Path(ref.path) / MANIFEST_FILENAME, ref.name)
    if manifest["schema_version"] != FAISS_INDEX_SCHEMA_VERSION:
        raise StorageError(
            ref.name,
            f"manifest has schema version {manifest['schema_version']!r}, but FAISS index "
            f"artifacts are at version {FAISS_INDEX_SCHEMA_VERSION}",
        )
    if manifest["sha256"] != ref.sha256:
        raise StorageError(
            ref.name,
            f"manifest sha256 {manifest['sha256']!r} differs from the reference's {ref.sha256}",
        )
    return manifest


def read_index(ref: ArtifactRef) -> tuple[faiss.Index, dict[str, Any]]:
    """Load a FAISS index artifact and check it against its reference and manifest.

    The index file is read once; the bytes whose hash is checked are the bytes loaded.

    Args:
        ref: The reference returned by :func:`write_index`.

    Returns:
        The index and the full manifest (including the fields :func:`write_index` added).

    Raises:
        StorageError: If the reference is not a FAISS index reference, a file is missing, the
            index file's hash differs from the reference's or the manifest's, the schema
            version differs, or the loaded index disagrees with the manifest.
    """
    directory = Path(ref.path)
    manifest = read_index_manifest(ref)
    data = read_verified(directory / INDEX_FILENAME, ref.sha256, artifact=ref.name)
    try:
        index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
    except RuntimeError as exc:
        raise StorageError(ref.name, f"faiss cannot load the index: {exc}") from exc
    _check_loaded(index, manifest, ref)
    return index, manifest
