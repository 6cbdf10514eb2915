"""storage: pyarrow schemas per artifact kind, atomic immutable writes, FAISS index IO.

Stages exchange :class:`ArtifactRef` records; every failure is a :class:`StorageError` that
names the artifact.
"""

from __future__ import annotations

from storage.artifacts import (
    DATASET_MANIFEST,
    ArtifactRef,
    ArtifactStore,
    artifact_metadata,
    artifact_problem,
    dataset_parts,
    file_sha256,
    read_artifact,
    read_artifact_path,
    write_artifact,
)
from storage.errors import StorageError, TrackingStoreError, WorkdirError
from storage.faiss_io import read_index, read_index_manifest, write_index
from storage.paths import UnsafePathError, inside, path_component, writable_directory
from storage.schemas import KINDS, SCHEMA_VERSIONS, embedding_matrix, schema_for

__all__ = [
    "DATASET_MANIFEST",
    "KINDS",
    "SCHEMA_VERSIONS",
    "embedding_matrix",
    "ArtifactRef",
    "ArtifactStore",
    "StorageError",
    "TrackingStoreError",
    "WorkdirError",
    "UnsafePathError",
    "artifact_metadata",
    "artifact_problem",
    "dataset_parts",
    "file_sha256",
    "inside",
    "path_component",
    "read_artifact",
    "read_artifact_path",
    "read_index",
    "read_index_manifest",
    "schema_for",
    "write_artifact",
    "write_index",
    "writable_directory",
]
