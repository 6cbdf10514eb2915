"""storage: pyarrow schemas per artifact kind, atomic immutable writes, FAISS index IO.

Stages exchange :class:`ArtifactRef` records; every failure is a :class:`StorageError` that
names the artifact.
"""

from __future__ import annotations

from storage.artifacts import (
    ArtifactRef,
    ArtifactStore,
    artifact_metadata,
    file_sha256,
    read_artifact,
    read_artifact_path,
    write_artifact,
)
from storage.errors import StorageError
from storage.faiss_io import read_index, read_index_manifest, write_index
from storage.schemas import KINDS, SCHEMA_VERSIONS, schema_for

__all__ = [
    "KINDS",
    "SCHEMA_VERSIONS",
    "ArtifactRef",
    "ArtifactStore",
    "StorageError",
    "artifact_metadata",
    "file_sha256",
    "read_artifact",
    "read_artifact_path",
    "read_index",
    "read_index_manifest",
    "schema_for",
    "write_artifact",
    "write_index",
]
