"""Parquet artifacts: immutable files with explicit schemas, referenced by :class:`ArtifactRef`.

Stages exchange :class:`ArtifactRef` records, never tables. A write casts the table to its
kind's schema and publishes the file atomically without ever overwriting; a read checks the
file's SHA-256, kind, schema version and schema before returning the table.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from storage._files import file_sha256, publish_file, read_verified
from storage.errors import StorageError
from storage.paths import path_component
from storage.schemas import (
    KINDS,
    SCHEMA_VERSIONS,
    USER_METADATA_PREFIX,
    check_schema,
    conform_table,
    require_kind,
    schema_for,
)

__all__ = [
    "ArtifactRef",
    "ArtifactStore",
    "artifact_metadata",
    "artifact_problem",
    "file_sha256",
    "read_artifact",
    "read_artifact_path",
    "write_artifact",
]

logger = logging.getLogger(__name__)

_SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")
_STRING_FIELDS = ("name", "kind", "path", "sha256")
_INTEGER_FIELDS = ("schema_version", "rows")


@dataclass(frozen=True)
class ArtifactRef:
    """A reference to one written artifact: what stages pass to each other.

    Attributes:
        name: The artifact's name, e.g. ``"encode/embeddings"``.
        kind: The artifact kind: one of :data:`storage.schemas.KINDS`, or ``"faiss_index"``.
        path: The absolute path of the Parquet file (of the directory, for a FAISS index).
        schema_version: The schema version the artifact was written with.
        sha256: The SHA-256 of the file's bytes (of the index file, for a FAISS index).
        rows: The number of rows (of vectors, for a FAISS index).
    """

    name: str
    kind: str
    path: str
    schema_version: int
    sha256: str
    rows: int

    def __post_init__(self) -> None:
        artifact = self.name if isinstance(self.name, str) else repr(self.name)
        for field in _STRING_FIELDS:
            if not isinstance(getattr(self, field), str):
                raise StorageError(artifact, f"reference field {field!r} must be a string")
        for field in _INTEGER_FIELDS:
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise StorageError(artifact, f"reference field {field!r} must be a non-negative integer")
        if not _SHA256_PATTERN.fullmatch(self.sha256):
            raise StorageError(artifact, "reference field 'sha256' must be 64 lowercase hex digits")

    def to_dict(self) -> dict[str, Any]:
        """The reference as a JSON-compatible dictionary.

        Returns:
            A dictionary with exactly the six fields.
        """
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ArtifactRef:
        """Rebuild a reference from :meth:`to_dict`'s output.

        Args:
            d: A mapping with exactly the six fields.

        Returns:
            The reference.

        Raises:
            StorageError: If a field is missing, unknown or of the wrong type.
        """
        name = d.get("name")
        artifact = name if isinstance(name, str) else "<unnamed>"
        expected = {field.name for field in dataclasses.fields(cls)}
        missing = sorted(expected - set(d))
        if missing:
            raise StorageError(artifact, f"reference lacks field(s): {', '.join(missing)}")
        unknown = sorted(str(key) for key in set(d) - expected)
        if unknown:
            raise StorageError(artifact, f"reference has unknown field(s): {', '.join(unknown)}")
        return cls(**{field: d[field] for field in expected})


def _user_metadata(metadata: Mapping[str, str] | None, artifact: str) -> dict[bytes, bytes]:
    if metadata is None:
        return {}
    encoded: dict[bytes, bytes] = {}
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise StorageError(artifact, f"metadata must map strings to strings; got {key!r}: {value!r}")
        encoded[(USER_METADATA_PREFIX + key).encode()] = value.encode()
    return encoded


def write_artifact(
    path: Path | str,
    kind: str,
    table: pa.Table,
    *,
    name: str,
    metadata: dict[str, str] | None = None,
    **schema_params: object,
) -> ArtifactRef:
    """Cast a table to its kind's schema and write it as an immutable Parquet file.

    The file is written to a temporary file in the target directory, fsynced, and hard-linked
    into place, so the target appears complete or not at all and an existing file is never
    overwritten. An interrupted write (any exception, ``KeyboardInterrupt`` included) leaves
    neither the target nor the temporary file.

    Args:
        path: The file to create; parent directories are created.
        kind: The artifact kind, one of :data:`storage.schemas.KINDS`.
        table: The rows. Columns may come in any order and with castable types; missing
            nullable columns are filled with nulls.
        name: The artifact's name, recorded in the reference and used in error messages.
        metadata: User metadata, stored in the schema under keys prefixed ``xattr.meta.``.
        **schema_params: Schema parameters of the kind (``dim`` for ``embeddings``).

    Returns:
        The reference to the written file (absolute path, SHA-256, row count).

    Raises:
        StorageError: If the kind or its parameters are invalid, the table does not fit the
            schema (the offending columns are named), the path already exists, or writing
            fails.
    """
    target = Path(path).absolute()
    try:
        schema = schema_for(kind, **schema_params)
    except StorageError as exc:
        raise StorageError(name, exc.problem) from exc
    schema = schema.with_metadata({**schema.metadata, **_user_metadata(metadata, name)})
    conformed = conform_table(table, schema, artifact=name)

    def write(temporary: Path) -> None:
        try:
            with pa.OSFile(os.fspath(temporary), mode="wb") as sink:
                pq.write_table(conformed, sink)
        except pa.ArrowException as exc:
            raise StorageError(name, f"cannot write Parquet to {temporary}: {exc}") from exc

    digest = publish_file(target, write, artifact=name)
    ref = ArtifactRef(
        name=name,
        kind=kind,
        path=str(target),
        schema_version=SCHEMA_VERSIONS[kind],
        sha256=digest,
        rows=conformed.num_rows,
    )
    logger.debug("wrote %s artifact %r: %d rows to %s", kind, name, ref.rows, target)
    return ref


def _parquet_file(source: pa.NativeFile, artifact: str, path: Path) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(source)
    except (pa.ArrowException, OSError) as exc:
        raise StorageError(artifact, f"cannot read Parquet file {path}: {exc}") from exc


def _read_table(source: pa.NativeFile, kind: str, artifact: str, path: Path) -> pa.Table:
    parquet = _parquet_file(source, artifact, path)
    check_schema(parquet.schema_arrow, kind, artifact=artifact)
    try:
        return parquet.read()
    except (pa.ArrowException, OSError) as exc:
        raise StorageError(artifact, f"cannot read Parquet file {path}: {exc}") from exc


def _open_local(path: Path, artifact: str) -> pa.NativeFile:
    if not path.is_file():
        raise StorageError(artifact, f"file {path} does not exist")
    try:
        return pa.OSFile(os.fspath(path), mode="rb")
    except (pa.ArrowException, OSError) as exc:
        raise StorageError(artifact, f"cannot open {path}: {exc}") from exc


def _check_table_ref(ref: ArtifactRef) -> None:
    if ref.kind not in KINDS:
        raise StorageError(
            ref.name,
            f"kind {ref.kind!r} is not a table artifact kind; valid kinds: {', '.join(KINDS)}",
        )
    if ref.schema_version != SCHEMA_VERSIONS[ref.kind]:
        raise StorageError(
            ref.name,
            f"reference has schema version {ref.schema_version}, but kind {ref.kind!r} is at "
            f"version {SCHEMA_VERSIONS[ref.kind]}",
        )


def read_artifact(ref: ArtifactRef, *, verify_hash: bool = True) -> pa.Table:
    """Read and validate a Parquet artifact.

    With ``verify_hash`` the file is read into memory once and those bytes are both hashed
    and parsed, so the table returned is exactly the content that was verified.

    Args:
        ref: The reference returned when the artifact was written.
        verify_hash: Whether to check the file's SHA-256 against ``ref.sha256``.

    Returns:
        The table, with the kind's schema and the stored metadata.

    Raises:
        StorageError: If the file is missing, its hash differs, its kind or schema version is
            not the reference's, its schema drifted from the kind's schema, or its row count is
            not the reference's.
    """
    _check_table_ref(ref)
    path = Path(ref.path)
    if verify_hash:
        source: pa.NativeFile = pa.BufferReader(read_verified(path, ref.sha256, artifact=ref.name))
    else:
        source = _open_local(path, ref.name)
    with source:
        table = _read_table(source, ref.kind, ref.name, path)
    if table.num_rows != ref.rows:
        raise StorageError(ref.name, f"row count mismatch: reference records {ref.rows}, file has {table.num_rows}")
    return table


def read_artifact_path(path: Path | str, kind: str) -> pa.Table:
    """Read and validate a Parquet artifact by path, without a reference or hash check.

    Args:
        path: The Parquet file.
        kind: The kind the file must hold, one of :data:`storage.schemas.KINDS`.

    Returns:
        The table, with the kind's schema and the stored metadata.

    Raises:
        StorageError: Naming the path, if the file is missing or unreadable, or its kind,
            schema version or schema is not the kind's current one.
    """
    path = Path(path)
    require_kind(kind, artifact=str(path))
    with _open_local(path, str(path)) as source:
        return _read_table(source, kind, str(path), path)


def artifact_metadata(ref: ArtifactRef) -> dict[str, str]:
    """The user metadata stored with an artifact.

    Only the file's footer is read; the hash is not checked (use :func:`read_artifact` for
    that), but the kind, schema version and schema are.

    Args:
        ref: The artifact's reference.

    Returns:
        The ``metadata`` given to :func:`write_artifact`, with the ``xattr.meta.`` prefix
        stripped.

    Raises:
        StorageError: If the file is missing or unreadable, or fails the schema checks.
    """
    _check_table_ref(ref)
    path = Path(ref.path)
    with _open_local(path, ref.name) as source:
        schema = _parquet_file(source, ref.name, path).schema_arrow
    check_schema(schema, ref.kind, artifact=ref.name)
    prefix = USER_METADATA_PREFIX.encode()
    return {
        key[len(prefix) :].decode(): value.decode()
        for key, value in (schema.metadata or {}).items()
        if key.startswith(prefix)
    }


def artifact_problem(ref: ArtifactRef) -> str | None:
    """Why the file ``ref`` points at is not the one recorded, or ``None`` when its SHA-256 matches.

    A FAISS index is checked by its ``index.faiss`` (the file its reference's digest is of).
    Used to tell a stale or corrupted cache entry from a good one without reading the table.

    Args:
        ref: The artifact's reference.

    Returns:
        ``"<path> does not exist"``, ``"cannot hash ..."`` or ``"sha256 of <path> differs ..."``;
        ``None`` when the bytes are the recorded ones.
    """
    from storage.faiss_io import FAISS_INDEX_KIND, INDEX_FILENAME

    path = Path(ref.path) / INDEX_FILENAME if ref.kind == FAISS_INDEX_KIND else Path(ref.path)
    if not path.is_file():
        return f"{path} does not exist"
    try:
        actual = file_sha256(path)
    except StorageError as exc:
        return exc.problem
    if actual != ref.sha256:
        return f"sha256 of {path} differs from the recorded one (recorded {ref.sha256[:12]}, file has {actual[:12]})"
    return None


def _check_component(value: str, what: str) -> None:
    path_component(value, what)


class ArtifactStore:
    """The artifacts of one run, laid out as ``<root>/<run_id>/<stage>/<name><suffix>``.

    Args:
        root: The directory holding every run.
        run_id: The run's identifier, a safe path component.

    Raises:
        StorageError: If ``run_id`` is not a safe path component.
    """

    def __init__(self, root: Path | str, run_id: str) -> None:
        _check_component(run_id, "run id")
        self._root = Path(root)
        self._run_id = run_id

    def __repr__(self) -> str:
        return f"ArtifactStore(root={str(self._root)!r}, run_id={self._run_id!r})"

    @property
    def root(self) -> Path:
        """The directory holding every run."""
        return self._root

    @property
    def run_id(self) -> str:
        """The run's identifier."""
        return self._run_id

    @property
    def run_dir(self) -> Path:
        """The directory of this run's artifacts: ``root / run_id``."""
        return self._root / self._run_id

    def path_for(self, stage: str, name: str, suffix: str = ".parquet") -> Path:
        """The path of a stage's artifact.

        Pass ``suffix=""`` for a directory artifact such as a FAISS index.

        Args:
            stage: The stage name, a safe path component.
            name: The artifact name within the stage, a safe path component.
            suffix: Appended to ``name``; it must not contain path separators.

        Returns:
            ``root / run_id / stage / (name + suffix)``.

        Raises:
            StorageError: If ``stage``, ``name`` or ``suffix`` could escape the run directory:
                empty, containing ``/``, ``\\`` or NUL, or starting with ``.``.
        """
        _check_component(stage, "stage")
        _check_component(name, "name")
        if any(char in suffix for char in ("/", "\\", "\0")):
            raise StorageError(f"{stage}/{name}", f"unsafe suffix {suffix!r}")
        return self.run_dir / stage / f"{name}{suffix}"

    def write(
        self,
        kind: str,
        stage: str,
        name: str,
        table: pa.Table,
        *,
        metadata: dict[str, str] | None = None,
        **schema_params: object,
    ) -> ArtifactRef:
        """Write a stage's Parquet artifact as ``<stage>/<name>``.

        Args:
            kind: The artifact kind, one of :data:`storage.schemas.KINDS`.
            stage: The stage name, a safe path component.
            name: The artifact name within the stage, a safe path component.
            table: The rows; see :func:`write_artifact`.
            metadata: User metadata; see :func:`write_artifact`.
            **schema_params: Schema parameters of the kind (``dim`` for ``embeddings``).

        Returns:
            The reference, named ``f"{stage}/{name}"``.

        Raises:
            StorageError: As :meth:`path_for` and :func:`write_artifact` do.
        """
        return write_artifact(
            self.path_for(stage, name),
            kind,
            table,
            name=f"{stage}/{name}",
            metadata=metadata,
            **schema_params,
        )
