"""Parquet artifacts: immutable files with explicit schemas, referenced by :class:`ArtifactRef`.

Stages exchange :class:`ArtifactRef` records, never tables. A write casts the table to its
kind's schema and publishes the file atomically without ever overwriting; a read checks the
file's SHA-256, kind, schema version and schema before returning the table.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from storage._files import file_sha256, publish_file, read_verified, refuse_existing
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
    "DATASET_MANIFEST",
    "ArtifactRef",
    "ArtifactStore",
    "artifact_metadata",
    "dataset_parts",
    "artifact_problem",
    "file_sha256",
    "read_artifact",
    "read_artifact_path",
    "write_artifact",
]

logger = logging.getLogger(__name__)

_SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")
#: The file in a dataset directory that lists its parts (a leading ``_``: Parquet readers skip it).
DATASET_MANIFEST = "_manifest.json"
_DATASET_FORMAT = "xattr.dataset"
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
    same_bytes_ok: bool = False,
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
        same_bytes_ok: An existing file with exactly these bytes is kept instead of refused
            (``storage._files.publish_file``).
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

    digest = publish_file(target, write, artifact=name, same_bytes_ok=same_bytes_ok)
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


def _parquet_file(source: pa.NativeFile, artifact: str, path: Path, dictionary: Sequence[str] = ()) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(source, read_dictionary=list(dictionary) or None)
    except (pa.ArrowException, OSError) as exc:
        raise StorageError(artifact, f"cannot read Parquet file {path}: {exc}") from exc


def _read_table(
    source: pa.NativeFile,
    kind: str,
    artifact: str,
    path: Path,
    columns: list[str] | None = None,
    dictionary: Sequence[str] = (),
) -> pa.Table:
    parquet = _parquet_file(source, artifact, path, dictionary)
    schema = parquet.schema_arrow
    if dictionary:  # checked as stored: a column read as a dictionary holds the stored values
        plain = [f.with_type(f.type.value_type) if pa.types.is_dictionary(f.type) else f for f in schema]
        schema = pa.schema(plain, metadata=schema.metadata)
    check_schema(schema, kind, artifact=artifact)
    try:
        return parquet.read(columns=columns)
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


def _read_file(
    ref: ArtifactRef, verify_hash: bool, columns: list[str] | None, dictionary: Sequence[str] = ()
) -> pa.Table:
    path = Path(ref.path)
    if verify_hash:
        source: pa.NativeFile = pa.BufferReader(read_verified(path, ref.sha256, artifact=ref.name))
    else:
        source = _open_local(path, ref.name)
    with source:
        table = _read_table(source, ref.kind, ref.name, path, columns, dictionary)
    if table.num_rows != ref.rows:
        raise StorageError(ref.name, f"row count mismatch: reference records {ref.rows}, file has {table.num_rows}")
    return table


def read_artifact(
    ref: ArtifactRef,
    *,
    verify_hash: bool = True,
    rows: range | None = None,
    columns: list[str] | None = None,
    dictionary: Sequence[str] = (),
) -> pa.Table:
    """Read and validate a Parquet artifact: one file, or a dataset of parts (:meth:`ArtifactStore.write_dataset`).

    With ``verify_hash`` the file is read into memory once and those bytes are both hashed
    and parsed, so the table returned is exactly the content that was verified. Of a dataset
    only the parts that overlap ``rows`` are read (a shard's rows cost one part, not the corpus).

    Args:
        ref: The reference returned when the artifact was written.
        verify_hash: Whether to check the file's SHA-256 against ``ref.sha256`` (a dataset: its
            manifest's and each part's read).
        rows: Only these rows (a step-1 range within ``0..ref.rows``); default every row.
        columns: Only these columns, in this order; default every column.
        dictionary: String columns to read as dictionary arrays (their distinct values once, and
            an int32 index per row: a token table's ``doc_id`` reads ~4x faster), checked against
            the kind's schema as their values.

    Returns:
        The table, with the kind's schema (but for ``dictionary``'s columns) and the stored metadata.

    Raises:
        StorageError: If the file is missing, its hash differs, its kind or schema version is
            not the reference's, its schema drifted from the kind's schema, its row count is
            not the reference's, or ``rows`` is outside the artifact.
    """
    _check_table_ref(ref)
    if rows is not None and (rows.step != 1 or rows.start < 0 or rows.stop > ref.rows or rows.start > rows.stop):
        raise StorageError(ref.name, f"rows {rows.start}..{rows.stop} are outside the artifact's {ref.rows} rows")
    if not Path(ref.path).is_dir():
        table = _read_file(ref, verify_hash, columns, dictionary)
        return table if rows is None else table.slice(rows.start, len(rows))
    wanted = rows if rows is not None else range(ref.rows)
    tables = []
    start = 0
    for part in dataset_parts(ref, verify_hash=verify_hash):
        stop = start + part.rows
        if start < wanted.stop and wanted.start < stop:
            table = _read_file(part, verify_hash, columns, dictionary)
            low, high = max(wanted.start, start) - start, min(wanted.stop, stop) - start
            tables.append(table.slice(low, max(high - low, 0)))
        start = stop
    if start != ref.rows:
        raise StorageError(ref.name, f"row count mismatch: reference records {ref.rows}, the parts hold {start}")
    if not tables:
        first = dataset_parts(ref, verify_hash=verify_hash)[0]
        return _read_file(first, verify_hash, columns, dictionary).slice(0, 0)
    return pa.concat_tables(tables)


def dataset_parts(ref: ArtifactRef, *, verify_hash: bool = True) -> list[ArtifactRef]:
    """The part files of a dataset artifact, in row order, from its manifest.

    Raises:
        StorageError: The manifest is missing, its hash is not the reference's (with
            ``verify_hash``), it does not parse, or it names another kind or a part outside the
            dataset's directory.
    """
    directory = Path(ref.path)
    manifest = directory / DATASET_MANIFEST
    if verify_hash:
        data = read_verified(manifest, ref.sha256, artifact=ref.name)
    else:
        try:
            data = manifest.read_bytes()
        except OSError as exc:
            raise StorageError(ref.name, f"cannot read {manifest}: {exc}") from exc
    try:
        record = json.loads(data)
        if record.get("format") != _DATASET_FORMAT or record.get("kind") != ref.kind:
            raise ValueError(f"not an xattr dataset of kind {ref.kind!r}")
        parts = []
        for number, part in enumerate(record["parts"]):
            file = part["file"]
            if not isinstance(file, str) or Path(file).name != file or file.startswith((".", "_")):
                raise ValueError(f"part {number + 1} names an unsafe file {file!r}")
            parts.append(
                ArtifactRef(
                    name=f"{ref.name}/{file}",
                    kind=ref.kind,
                    path=str(directory / file),
                    schema_version=ref.schema_version,
                    sha256=part["sha256"],
                    rows=part["rows"],
                )
            )
    except (ValueError, KeyError, TypeError, AttributeError, StorageError) as exc:
        raise StorageError(ref.name, f"invalid dataset manifest {manifest}: {exc}") from exc
    return parts


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
    if path.is_dir():
        parts = dataset_parts(ref, verify_hash=False)
        if not parts:
            return {}
        path = Path(parts[0].path)
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

    if ref.kind != FAISS_INDEX_KIND and Path(ref.path).is_dir():
        manifest = Path(ref.path) / DATASET_MANIFEST
        problem = _file_problem(manifest, ref.sha256)
        if problem is not None:
            return problem
        try:
            parts = dataset_parts(ref)
        except StorageError as exc:
            return exc.problem
        return next((p for p in map(artifact_problem, parts) if p is not None), None)
    path = Path(ref.path) / INDEX_FILENAME if ref.kind == FAISS_INDEX_KIND else Path(ref.path)
    return _file_problem(path, ref.sha256)


def _file_problem(path: Path, sha256: str) -> str | None:
    if not path.is_file():
        return f"{path} does not exist"
    try:
        actual = file_sha256(path)
    except StorageError as exc:
        return exc.problem
    if actual != sha256:
        return f"sha256 of {path} differs from the recorded one (recorded {sha256[:12]}, file has {actual[:12]})"
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
        part: int | None = None,
        **schema_params: object,
    ) -> ArtifactRef:
        """Write a stage's Parquet artifact as ``<stage>/<name>`` (or part ``part`` of the dataset ``<stage>/<name>``).

        Args:
            kind: The artifact kind, one of :data:`storage.schemas.KINDS`.
            stage: The stage name, a safe path component.
            name: The artifact name within the stage, a safe path component.
            table: The rows; see :func:`write_artifact`.
            metadata: User metadata; see :func:`write_artifact`.
            part: Write ``<stage>/<name>/part-<part>.parquet`` (a shard's rows), which
                :meth:`write_dataset` then lists with the other parts. A part already there
                with exactly these bytes is kept: distributed runs a finished task again when
                the worker holding its result dies, and that run writes the same part.
            **schema_params: Schema parameters of the kind (``dim`` for ``embeddings``).

        Returns:
            The reference, named ``f"{stage}/{name}"`` (a part: ``f"{stage}/{name}/part-<part>"``).

        Raises:
            StorageError: As :meth:`path_for` and :func:`write_artifact` do.
        """
        if part is None:
            path, artifact = self.path_for(stage, name), f"{stage}/{name}"
        else:
            path, artifact = self.path_for(stage, name, "") / _part_file(part), f"{stage}/{name}/{_part_file(part)}"
        return write_artifact(
            path, kind, table, name=artifact, metadata=metadata, same_bytes_ok=part is not None, **schema_params
        )

    def write_dataset(self, stage: str, name: str, parts: list[ArtifactRef]) -> ArtifactRef:
        """List written parts, in row order, as the one dataset ``<stage>/<name>`` (no row is rewritten).

        The dataset is the directory ``<stage>/<name>/`` holding ``part-<i>.parquet`` and a
        manifest (:data:`DATASET_MANIFEST`: each part's file, rows and SHA-256); Parquet readers
        given the directory read the parts in order. A part written elsewhere (a shard reused from
        an earlier run's cache) is hard-linked in (copied where links are not possible), so the
        directory is complete and outlives the run it came from.

        Args:
            stage: The stage name, a safe path component.
            name: The artifact name within the stage, a safe path component.
            parts: The parts' references (:meth:`write` with ``part``), one kind and schema version.

        Returns:
            The dataset's reference: its path the directory, its SHA-256 the manifest's, its rows
            the parts' sum.

        Raises:
            StorageError: No parts, mixed kinds, a part whose bytes are not the recorded ones, or
                a dataset already listed there.
        """
        artifact = f"{stage}/{name}"
        if not parts:
            raise StorageError(artifact, "a dataset needs at least one part")
        kinds = sorted({part.kind for part in parts})
        if len(kinds) != 1:
            raise StorageError(artifact, f"the parts mix artifact kinds: {', '.join(kinds)}")
        _check_table_ref(parts[0])
        directory = self.path_for(stage, name, "")
        manifest = directory / DATASET_MANIFEST
        refuse_existing(manifest, artifact=artifact)
        listed = []
        for number, part in enumerate(parts):
            target = directory / _part_file(number)
            source = Path(part.path)
            if source.absolute() != target.absolute():
                _link_part(source, target, artifact)
            problem = _file_problem(target, part.sha256)
            if problem is not None:
                raise StorageError(artifact, f"part {number + 1}: {problem}")
            listed.append({"file": target.name, "rows": part.rows, "sha256": part.sha256})
        record = {
            "format": _DATASET_FORMAT,
            "kind": parts[0].kind,
            "schema_version": parts[0].schema_version,
            "rows": sum(part.rows for part in parts),
            "parts": listed,
        }
        payload = json.dumps(record, indent=1).encode()
        digest = publish_file(manifest, lambda temporary: temporary.write_bytes(payload), artifact=artifact)
        kind, version, rows = parts[0].kind, parts[0].schema_version, int(record["rows"])
        return ArtifactRef(artifact, kind, str(directory.absolute()), version, digest, rows)


def _part_file(number: int) -> str:
    return f"part-{number:05d}.parquet"


def _link_part(source: Path, target: Path, artifact: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        return  # checked against the part's digest by the caller
    try:
        os.link(source, target)
    except OSError:
        try:
            shutil.copyfile(source, target)
        except OSError as exc:
            raise StorageError(artifact, f"cannot link or copy part {source} to {target}: {exc}") from exc
