from __future__ import annotations

import dataclasses
import hashlib
import os
import pickle
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import storage
import storage._files
from storage import (
    DATASET_MANIFEST,
    ArtifactRef,
    ArtifactStore,
    StorageError,
    artifact_metadata,
    artifact_problem,
    file_sha256,
    read_artifact,
    read_artifact_path,
    schema_for,
    write_artifact,
)

# Every value is exactly representable in its column type, so round trips compare with ==.
ROWS: dict[str, list[dict[str, Any]]] = {
    "corpus": [
        {
            "doc_id": "d0",
            "text": "a fine film",
            "text_pair": None,
            "label": 1.0,
            "label_set": [0, 2],
            "group": "train",
            "gold_spans": [{"segment": 0, "start": 2, "end": 6}],
            "gold_word_scores": [0.0, 0.5, 1.0],
            "gold_unlocated": 1,
            "label_name": "positive",
        },
        {
            "doc_id": "d1",
            "text": "dull",
            "text_pair": "is it?",
            "label": None,
            "label_set": None,
            "group": None,
            "gold_spans": None,
            "gold_word_scores": None,
            "gold_unlocated": None,
            "label_name": None,
        },
        {
            "doc_id": "d2",
            "text": "",
            "text_pair": "",
            "label": -0.25,
            "label_set": [],
            "group": "test",
            "gold_spans": [],
            "gold_word_scores": [],
            "gold_unlocated": 0,
            "label_name": None,
        },
    ],
    "embeddings": [
        {"doc_id": "d0", "embedding": [0.5, -1.25, 3.0]},
        {"doc_id": "d1", "embedding": [0.0, 2.0, -0.125]},
    ],
    "neighbours": [
        {"doc_id": "d0", "rank": 0, "neighbour_id": "d1", "distance": 0.75, "position": 0, "neighbour_position": 1},
        {"doc_id": "d0", "rank": 1, "neighbour_id": "d2", "distance": 1.5, "position": 0, "neighbour_position": 2},
    ],
    "head_statistics": [
        {
            "layer": 0,
            "head": 3,
            "kind": "relation",
            "key": "nsubj",
            "frequency": 0.625,
            "baseline": 0.125,
            "count": 2**40,
        },
        {
            "layer": 5,
            "head": 11,
            "kind": "position",
            "key": "+1",
            "frequency": 0.9,
            "baseline": None,
            "count": 7,
        },
    ],
    "token_attributions": [
        {
            "doc_id": "d0",
            "method": "saliency",
            "target": 1,
            "token_index": 0,
            "token": "[CLS]",
            "word_index": -1,
            "char_start": 0,
            "char_end": 0,
            "score": 0.0,
        },
        {
            "doc_id": "d0",
            "method": "saliency",
            "target": 1,
            "token_index": 1,
            "token": "fine",
            "word_index": 0,
            "char_start": 2,
            "char_end": 6,
            "score": -0.375,
        },
    ],
    "evaluation": [
        {
            "method": "ig",
            "doc_id": None,
            "metric": "aopc",
            "fraction": None,
            "value": 0.3,
            "replacement": "mask",
        },
        {
            "method": "ig",
            "doc_id": "d0",
            "metric": "comprehensiveness",
            "fraction": 0.1,
            "value": -0.05,
            "replacement": "pad",
        },
    ],
    "tokens": [
        {
            "doc_id": "d0",
            "length": 3,
            "truncated": False,
            "input_ids": [101, 2023, 102],
            "token_type_ids": [0, 0, 0],
            "char_start": [0, 0, 0],
            "char_end": [0, 4, 0],
            "segments": [-1, 0, -1],
            "word_index": [-1, 0, -1],
            "special": [True, False, True],
        },
    ],
}
PARAMS: dict[str, dict[str, Any]] = {"embeddings": {"dim": 3}}


def _table(kind: str) -> pa.Table:
    return pa.Table.from_pylist(ROWS[kind], schema=schema_for(kind, **PARAMS.get(kind, {})))


def _entries(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


@pytest.mark.parametrize("kind", sorted(ROWS))
def test_round_trip_every_kind(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "run" / "stage" / f"{kind}.parquet"
    ref = write_artifact(path, kind, _table(kind), name=f"stage/{kind}", **PARAMS.get(kind, {}))

    assert ref == ArtifactRef(
        name=f"stage/{kind}",
        kind=kind,
        path=str(path),
        schema_version=1,
        sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
        rows=len(ROWS[kind]),
    )
    table = read_artifact(ref)
    assert table.to_pylist() == ROWS[kind]
    assert table.schema.equals(schema_for(kind, **PARAMS.get(kind, {})), check_metadata=True)
    assert read_artifact_path(path, kind).to_pylist() == ROWS[kind]
    assert _entries(path.parent) == [f"{kind}.parquet"]


def test_round_trip_empty_table(tmp_path: Path) -> None:
    ref = write_artifact(tmp_path / "e.parquet", "neighbours", schema_for("neighbours").empty_table(), name="e")
    assert ref.rows == 0
    assert read_artifact(ref).num_rows == 0


def test_relative_path_is_recorded_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    ref = write_artifact(Path("sub") / "c.parquet", "corpus", _table("corpus"), name="c")
    assert ref.path == str(tmp_path / "sub" / "c.parquet")


def test_metadata_is_stored_prefixed_and_returned_stripped(tmp_path: Path) -> None:
    path = tmp_path / "c.parquet"
    metadata = {"model": "minilm", "xattr.kind": "not-a-kind"}
    ref = write_artifact(path, "corpus", _table("corpus"), name="c", metadata=metadata)

    assert artifact_metadata(ref) == metadata
    assert pq.read_schema(path).metadata == {
        b"xattr.kind": b"corpus",
        b"xattr.schema_version": b"1",
        b"xattr.meta.model": b"minilm",
        b"xattr.meta.xattr.kind": b"not-a-kind",
    }
    assert read_artifact(ref).schema.metadata[b"xattr.meta.model"] == b"minilm"
    assert artifact_metadata(write_artifact(tmp_path / "d.parquet", "corpus", _table("corpus"), name="d")) == {}


def test_metadata_must_map_strings_to_strings(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="metadata must map strings to strings; got 'n': 3"):
        bad: Any = {"n": 3}
        write_artifact(tmp_path / "c.parquet", "corpus", _table("corpus"), name="c", metadata=bad)
    assert _entries(tmp_path) == []


def test_write_casts_compatible_types(tmp_path: Path) -> None:
    table = pa.table(
        {
            "score": pa.array([0.5], pa.float64()),
            "doc_id": ["d"],
            "method": ["m"],
            "target": pa.array([1], pa.int64()),
            "token_index": pa.array([2], pa.int64()),
            "token": ["t"],
            "word_index": pa.array([-1], pa.int64()),
            "char_start": pa.array([0], pa.int64()),
            "char_end": pa.array([1], pa.int64()),
        }
    )
    ref = write_artifact(tmp_path / "t.parquet", "token_attributions", table, name="t")
    result = read_artifact(ref)
    assert result.schema.equals(schema_for("token_attributions"), check_metadata=True)
    assert result.to_pylist() == [
        {
            "doc_id": "d",
            "method": "m",
            "target": 1,
            "token_index": 2,
            "token": "t",
            "word_index": -1,
            "char_start": 0,
            "char_end": 1,
            "score": 0.5,
        }
    ]


def test_write_refuses_missing_column_and_writes_nothing(tmp_path: Path) -> None:
    table = _table("token_attributions").drop_columns(["char_end"])
    with pytest.raises(StorageError) as info:
        write_artifact(tmp_path / "t.parquet", "token_attributions", table, name="attr/t")
    assert info.value.artifact == "attr/t"
    assert info.value.problem == "missing column(s): 'char_end'"
    assert _entries(tmp_path) == []


def test_write_refuses_extra_and_uncastable_columns(tmp_path: Path) -> None:
    table = _table("neighbours").append_column("score", pa.array([1, 2]))
    with pytest.raises(StorageError, match=r"unexpected column\(s\): 'score'"):
        write_artifact(tmp_path / "n.parquet", "neighbours", table, name="n")
    table = _table("neighbours").set_column(1, "rank", pa.array(["first", "second"]))
    with pytest.raises(StorageError, match="column 'rank': cannot cast string to int32"):
        write_artifact(tmp_path / "n.parquet", "neighbours", table, name="n")
    assert _entries(tmp_path) == []


def test_write_refuses_unknown_kind_and_missing_dim_naming_the_artifact(tmp_path: Path) -> None:
    with pytest.raises(StorageError) as info:
        write_artifact(tmp_path / "x.parquet", "vectors", _table("corpus"), name="enc/x")
    assert info.value.artifact == "enc/x"
    assert info.value.problem.startswith("unknown artifact kind; valid kinds: corpus,")
    with pytest.raises(StorageError) as info:
        write_artifact(tmp_path / "x.parquet", "embeddings", _table("embeddings"), name="enc/x")
    assert str(info.value) == "artifact 'enc/x': the embeddings schema requires the parameter dim"
    assert _entries(tmp_path) == []


def test_overwrite_is_refused_and_original_bytes_kept(tmp_path: Path) -> None:
    path = tmp_path / "c.parquet"
    ref = write_artifact(path, "corpus", _table("corpus"), name="c")
    original = path.read_bytes()
    other = _table("corpus").slice(0, 1)
    with pytest.raises(StorageError) as info:
        write_artifact(path, "corpus", other, name="c")
    assert info.value.problem == f"{path} already exists; artifacts are immutable"
    assert path.read_bytes() == original
    assert read_artifact(ref).to_pylist() == ROWS["corpus"]
    assert _entries(tmp_path) == ["c.parquet"]


def test_target_appearing_during_write_is_not_overwritten(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.parquet"
    real_write_table = pq.write_table

    def concurrent_writer_wins(table: pa.Table, where: Any, **kwargs: Any) -> None:
        path.write_bytes(b"the other writer's file")
        real_write_table(table, where, **kwargs)

    monkeypatch.setattr(pq, "write_table", concurrent_writer_wins)
    with pytest.raises(StorageError) as info:
        write_artifact(path, "corpus", _table("corpus"), name="c")
    assert info.value.problem == f"{path} already exists; artifacts are immutable"
    assert isinstance(info.value.__cause__, FileExistsError)
    assert path.read_bytes() == b"the other writer's file"
    assert _entries(tmp_path) == ["c.parquet"]


def _partial_then(exception: BaseException) -> Any:
    def write_table(table: pa.Table, where: Any, **kwargs: Any) -> None:
        where.write(b"PAR1 half a file")
        raise exception

    return write_table


@pytest.mark.parametrize("exception", [KeyboardInterrupt(), SystemExit(3)])
def test_interrupted_write_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exception: BaseException
) -> None:
    monkeypatch.setattr(pq, "write_table", _partial_then(exception))
    directory = tmp_path / "stage"
    with pytest.raises(type(exception)):
        write_artifact(directory / "c.parquet", "corpus", _table("corpus"), name="c")
    assert _entries(directory) == []


@pytest.mark.parametrize("exception", [OSError(28, "No space left on device"), pa.ArrowInvalid("broken")])
def test_failed_write_is_wrapped_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exception: Exception
) -> None:
    monkeypatch.setattr(pq, "write_table", _partial_then(exception))
    with pytest.raises(StorageError) as info:
        write_artifact(tmp_path / "c.parquet", "corpus", _table("corpus"), name="c")
    assert info.value.artifact == "c"
    assert info.value.__cause__ is exception
    assert _entries(tmp_path) == []


def test_interrupt_during_fsync_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(descriptor: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(storage._files.os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_artifact(tmp_path / "c.parquet", "corpus", _table("corpus"), name="c")
    assert _entries(tmp_path) == []


def test_temporary_file_is_hidden_in_the_target_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []
    real_write_table = pq.write_table

    def spy(table: pa.Table, where: Any, **kwargs: Any) -> None:
        seen.append(_entries(tmp_path))
        real_write_table(table, where, **kwargs)

    monkeypatch.setattr(pq, "write_table", spy)
    write_artifact(tmp_path / "c.parquet", "corpus", _table("corpus"), name="c")
    [[temporary]] = seen
    assert temporary.startswith(".c.parquet.")
    assert temporary.endswith(".tmp")
    assert _entries(tmp_path) == ["c.parquet"]


def test_hash_mismatch_after_tampering(tmp_path: Path) -> None:
    path = tmp_path / "n.parquet"
    ref = write_artifact(path, "neighbours", _table("neighbours"), name="nn/n")
    rows = [dict(row, distance=9.0) for row in ROWS["neighbours"]]
    forged = tmp_path / "forged.parquet"
    write_artifact(forged, "neighbours", pa.Table.from_pylist(rows), name="f")
    os.replace(forged, path)

    with pytest.raises(StorageError) as info:
        read_artifact(ref)
    assert info.value.artifact == "nn/n"
    assert info.value.problem.startswith(f"sha256 mismatch for {path}: recorded {ref.sha256}")
    # Without the check the (valid, well-formed) forged content is what comes back.
    assert read_artifact(ref, verify_hash=False).to_pylist() == rows


def test_corrupted_file_without_hash_check_is_a_storage_error(tmp_path: Path) -> None:
    path = tmp_path / "n.parquet"
    ref = write_artifact(path, "neighbours", _table("neighbours"), name="n")
    path.write_bytes(b"not parquet at all")
    with pytest.raises(StorageError, match="sha256 mismatch"):
        read_artifact(ref)
    with pytest.raises(StorageError, match=f"cannot read Parquet file {path}"):
        read_artifact(ref, verify_hash=False)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "n.parquet"
    ref = write_artifact(path, "neighbours", _table("neighbours"), name="n")
    path.unlink()
    for verify_hash in (True, False):
        with pytest.raises(StorageError) as info:
            read_artifact(ref, verify_hash=verify_hash)
        assert str(info.value) == f"artifact 'n': file {path} does not exist"
    with pytest.raises(StorageError, match="does not exist"):
        artifact_metadata(ref)
    with pytest.raises(StorageError) as info:
        read_artifact_path(path, "neighbours")
    assert info.value.artifact == str(path)


def test_reference_kind_and_version_mismatch(tmp_path: Path) -> None:
    ref = write_artifact(tmp_path / "n.parquet", "neighbours", _table("neighbours"), name="n")
    with pytest.raises(StorageError, match="kind mismatch: file holds 'neighbours', expected 'corpus'"):
        read_artifact(dataclasses.replace(ref, kind="corpus"))
    with pytest.raises(StorageError, match="kind 'faiss_index' is not a table artifact kind"):
        read_artifact(dataclasses.replace(ref, kind="faiss_index"))
    with pytest.raises(StorageError) as info:
        read_artifact(dataclasses.replace(ref, schema_version=2))
    assert info.value.problem == ("reference has schema version 2, but kind 'neighbours' is at version 1")
    with pytest.raises(StorageError) as info:
        read_artifact(dataclasses.replace(ref, rows=5))
    assert info.value.problem == "row count mismatch: reference records 5, file has 2"


def _hand_written(path: Path, table: pa.Table) -> ArtifactRef:
    pq.write_table(table, path)
    return ArtifactRef(
        name="hand",
        kind="neighbours",
        path=str(path),
        schema_version=1,
        sha256=file_sha256(path),
        rows=table.num_rows,
    )


def test_drift_extra_column_rejected_on_read(tmp_path: Path) -> None:
    table = _table("neighbours").append_column("note", pa.array(["x", "y"]))
    assert table.schema.metadata == schema_for("neighbours").metadata
    ref = _hand_written(tmp_path / "n.parquet", table)
    with pytest.raises(StorageError) as info:
        read_artifact(ref)
    assert str(info.value) == "artifact 'hand': schema drift: unexpected column(s): 'note'"
    with pytest.raises(StorageError, match=r"unexpected column\(s\): 'note'"):
        read_artifact_path(ref.path, "neighbours")


def test_drift_wrong_type_rejected_on_read(tmp_path: Path) -> None:
    table = _table("neighbours")
    table = table.set_column(3, pa.field("distance", pa.float64(), nullable=False), table.column(3).cast(pa.float64()))
    ref = _hand_written(tmp_path / "n.parquet", table)
    with pytest.raises(StorageError) as info:
        read_artifact(ref)
    assert info.value.problem == ("schema drift: column 'distance': expected float not null, found double not null")


def test_wrong_version_metadata_rejected_on_read(tmp_path: Path) -> None:
    table = _table("neighbours")
    table = table.replace_schema_metadata({b"xattr.kind": b"neighbours", b"xattr.schema_version": b"2"})
    ref = _hand_written(tmp_path / "n.parquet", table)
    with pytest.raises(StorageError) as info:
        read_artifact(ref)
    assert info.value.problem == ("schema version '2' is not the supported version 1 of kind 'neighbours'")
    with pytest.raises(StorageError, match="schema version '2' is not the supported version 1"):
        artifact_metadata(ref)


def test_file_without_kind_metadata_rejected(tmp_path: Path) -> None:
    ref = _hand_written(tmp_path / "n.parquet", _table("neighbours").replace_schema_metadata(None))
    with pytest.raises(StorageError, match="missing 'xattr.kind' metadata; not an xattr artifact"):
        read_artifact(ref)


def test_read_artifact_path_accepts_any_embedding_dim(tmp_path: Path) -> None:
    rows = [{"doc_id": "a", "embedding": [1.0, 2.0, 3.0, 4.0, 5.0]}]
    path = tmp_path / "e.parquet"
    write_artifact(path, "embeddings", pa.Table.from_pylist(rows), name="e", dim=5)
    table = read_artifact_path(str(path), "embeddings")
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), 5)
    assert table.to_pylist() == rows


def test_read_artifact_path_rejects_unknown_and_other_kinds(tmp_path: Path) -> None:
    path = tmp_path / "e.parquet"
    write_artifact(path, "embeddings", _table("embeddings"), name="e", dim=3)
    with pytest.raises(StorageError) as info:
        read_artifact_path(path, "nope")
    assert info.value.artifact == str(path)
    assert info.value.problem.startswith("unknown artifact kind 'nope'; valid kinds:")
    with pytest.raises(StorageError, match="kind mismatch: file holds 'embeddings', expected 'corpus'"):
        read_artifact_path(path, "corpus")


def test_file_sha256_streams_exact_digest(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    data = bytes(range(256)) * 9000  # > 1 MiB, several chunks
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()
    assert file_sha256(str(path)) == hashlib.sha256(data).hexdigest()
    with pytest.raises(StorageError) as info:
        file_sha256(tmp_path / "missing")
    assert info.value.artifact == str(tmp_path / "missing")


def test_ref_dict_and_pickle_round_trip(tmp_path: Path) -> None:
    ref = write_artifact(tmp_path / "c.parquet", "corpus", _table("corpus"), name="c")
    as_dict = ref.to_dict()
    assert as_dict == {
        "name": "c",
        "kind": "corpus",
        "path": str(tmp_path / "c.parquet"),
        "schema_version": 1,
        "sha256": ref.sha256,
        "rows": 3,
    }
    assert ArtifactRef.from_dict(as_dict) == ref
    assert pickle.loads(pickle.dumps(ref)) == ref
    with pytest.raises(dataclasses.FrozenInstanceError):
        ref.rows = 4  # type: ignore[misc]


def test_ref_from_dict_and_fields_are_validated() -> None:
    good = {
        "name": "c",
        "kind": "corpus",
        "path": "/x.parquet",
        "schema_version": 1,
        "sha256": "0" * 64,
        "rows": 3,
    }
    with pytest.raises(StorageError, match=r"reference lacks field\(s\): rows, sha256"):
        ArtifactRef.from_dict({k: v for k, v in good.items() if k not in ("rows", "sha256")})
    with pytest.raises(StorageError, match=r"reference has unknown field\(s\): extra"):
        ArtifactRef.from_dict({**good, "extra": 1})
    with pytest.raises(StorageError, match="'rows' must be a non-negative integer"):
        ArtifactRef.from_dict({**good, "rows": "3"})
    with pytest.raises(StorageError, match="'schema_version' must be a non-negative integer"):
        ArtifactRef.from_dict({**good, "schema_version": True})
    with pytest.raises(StorageError, match="'sha256' must be 64 lowercase hex digits"):
        ArtifactRef.from_dict({**good, "sha256": "ABC"})
    with pytest.raises(StorageError, match="'path' must be a string"):
        ArtifactRef.from_dict({**good, "path": Path("/x.parquet")})


def test_store_layout_and_write(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "artifacts", "run-1")
    assert store.run_dir == tmp_path / "artifacts" / "run-1"
    assert store.path_for("encode", "embeddings") == store.run_dir / "encode" / "embeddings.parquet"
    assert store.path_for("index", "faiss", suffix="") == store.run_dir / "index" / "faiss"
    assert repr(store) == f"ArtifactStore(root={str(tmp_path / 'artifacts')!r}, run_id='run-1')"

    ref = store.write("embeddings", "encode", "embeddings", _table("embeddings"), metadata={"m": "x"}, dim=3)
    assert ref.name == "encode/embeddings"
    assert ref.path == str(store.path_for("encode", "embeddings"))
    assert read_artifact(ref).to_pylist() == ROWS["embeddings"]
    assert artifact_metadata(ref) == {"m": "x"}
    with pytest.raises(StorageError, match="already exists; artifacts are immutable"):
        store.write("embeddings", "encode", "embeddings", _table("embeddings"), dim=3)


@pytest.mark.parametrize("unsafe", ["", "a/b", "..", ".", "../x", ".hidden", "a\\b", "a\0b", "/abs"])
def test_store_refuses_unsafe_components(tmp_path: Path, unsafe: str) -> None:
    store = ArtifactStore(tmp_path, "run")
    with pytest.raises(StorageError, match="unsafe stage"):
        store.path_for(unsafe, "name")
    with pytest.raises(StorageError, match="unsafe name"):
        store.path_for("stage", unsafe)
    with pytest.raises(StorageError, match="unsafe name"):
        store.write("corpus", "stage", unsafe, _table("corpus"))
    with pytest.raises(StorageError, match="unsafe run id"):
        ArtifactStore(tmp_path, unsafe)
    assert _entries(tmp_path) == []


def test_store_refuses_unsafe_suffix(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="unsafe suffix '/../x'"):
        ArtifactStore(tmp_path, "run").path_for("stage", "name", suffix="/../x")


def test_package_exports() -> None:
    assert sorted(storage.__all__) == sorted(
        [
            "StorageError",
            "ArtifactRef",
            "ArtifactStore",
            "write_artifact",
            "read_artifact",
            "read_artifact_path",
            "artifact_metadata",
            "file_sha256",
            "schema_for",
            "embedding_matrix",
            "KINDS",
            "SCHEMA_VERSIONS",
            "write_index",
            "read_index_manifest",
            "read_index",
            "artifact_problem",
            "UnsafePathError",
            "inside",
            "path_component",
            "TrackingStoreError",
            "WorkdirError",
            "writable_directory",
            "dataset_parts",
            "DATASET_MANIFEST",
        ]
    )
    for name in storage.__all__:
        assert getattr(storage, name) is not None


def _neighbour_rows(start: int, stop: int) -> pa.Table:
    rows = [
        {
            "doc_id": f"d{i}",
            "rank": 0,
            "neighbour_id": f"d{i + 1}",
            "distance": float(i),
            "position": i,
            "neighbour_position": i + 1,
        }
        for i in range(start, stop)
    ]
    return pa.Table.from_pylist(rows, schema=schema_for("neighbours"))


def test_dataset_lists_parts_without_rewriting_and_reads_row_ranges(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path, "run")
    bounds = [(0, 3), (3, 3), (3, 7), (7, 8)]
    parts = [
        store.write("neighbours", "stage", "pairs", _neighbour_rows(a, b), metadata={"m": "x"}, part=number)
        for number, (a, b) in enumerate(bounds)
    ]
    part_bytes = [Path(p.path).read_bytes() for p in parts]
    ref = store.write_dataset("stage", "pairs", parts)
    directory = tmp_path / "run" / "stage" / "pairs"
    assert ref.path == str(directory) and ref.rows == 8
    # The parts are the files the shards wrote, untouched; no merged copy beside them.
    assert _entries(directory) == [DATASET_MANIFEST] + [f"part-{i:05d}.parquet" for i in range(4)]
    assert [Path(p.path).read_bytes() for p in parts] == part_bytes
    assert _entries(tmp_path / "run" / "stage") == ["pairs"]
    whole = _neighbour_rows(0, 8).to_pylist()
    assert read_artifact(ref).to_pylist() == whole
    # pyarrow reads the directory as one dataset (the manifest is skipped).
    assert pq.read_table(directory).to_pylist() == whole
    for rows in (range(0, 0), range(2, 5), range(3, 7), range(6, 8), range(0, 8), range(7, 8)):
        assert read_artifact(ref, rows=rows).to_pylist() == whole[rows.start : rows.stop]
    assert read_artifact(ref, rows=range(2, 5), columns=["doc_id"]).column_names == ["doc_id"]
    with pytest.raises(StorageError, match="outside the artifact's 8 rows"):
        read_artifact(ref, rows=range(5, 9))
    assert artifact_metadata(ref) == {"m": "x"}
    assert artifact_problem(ref) is None
    with pytest.raises(StorageError, match="already exists"):
        store.write_dataset("stage", "pairs", parts)
    # A shard run again (its Dask worker died after it finished) writes the same part: kept as it is;
    # a part with other rows is refused.
    again = store.write("neighbours", "stage", "pairs", _neighbour_rows(3, 7), metadata={"m": "x"}, part=2)
    assert again == parts[2] and Path(again.path).read_bytes() == part_bytes[2]
    with pytest.raises(StorageError, match="already exists; artifacts are immutable"):
        store.write("neighbours", "stage", "pairs", _neighbour_rows(3, 6), metadata={"m": "x"}, part=2)
    assert Path(parts[2].path).read_bytes() == part_bytes[2]
    assert [p.name for p in Path(ref.path).iterdir() if p.name.startswith(".")] == []


def test_dataset_links_parts_of_an_earlier_run_and_detects_a_changed_part(tmp_path: Path) -> None:
    earlier = ArtifactStore(tmp_path, "earlier")
    reused = earlier.write("neighbours", "stage", "pairs", _neighbour_rows(0, 2), part=0)
    store = ArtifactStore(tmp_path, "run")
    fresh = store.write("neighbours", "stage", "pairs", _neighbour_rows(2, 5), part=1)
    ref = store.write_dataset("stage", "pairs", [reused, fresh])
    linked = tmp_path / "run" / "stage" / "pairs" / "part-00000.parquet"
    assert os.path.samefile(linked, reused.path)  # a hard link: no bytes copied
    shutil.rmtree(tmp_path / "earlier")  # pruning the earlier run keeps this run's dataset whole
    assert read_artifact(ref).to_pylist() == _neighbour_rows(0, 5).to_pylist()
    os.chmod(linked, 0o644)
    pq.write_table(_neighbour_rows(0, 3), linked)
    assert "differs from the recorded one" in artifact_problem(ref)
    with pytest.raises(StorageError, match="sha256 mismatch"):
        read_artifact(ref)


def test_dataset_refuses_mixed_kinds_and_a_tampered_manifest(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path, "run")
    pairs = store.write("neighbours", "stage", "x", _neighbour_rows(0, 1), part=0)
    corpus = store.write("corpus", "stage", "x", _table("corpus"), part=1)
    with pytest.raises(StorageError, match="mix artifact kinds: corpus, neighbours"):
        store.write_dataset("stage", "x", [pairs, corpus])
    ref = store.write_dataset("stage", "y", [pairs])
    manifest = Path(ref.path) / DATASET_MANIFEST
    os.chmod(manifest, 0o644)
    manifest.write_text(manifest.read_text().replace('"rows": 1', '"rows": 2'))
    assert "differs from the recorded one" in artifact_problem(ref)
    with pytest.raises(StorageError, match="sha256 mismatch"):
        read_artifact(ref)


def test_string_columns_read_as_dictionaries_hold_the_same_values(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path, "run")
    parts = [
        store.write("neighbours", "stage", "pairs", _neighbour_rows(a, b), part=number)
        for number, (a, b) in enumerate([(0, 3), (3, 3), (3, 7)])
    ]
    ref = store.write_dataset("stage", "pairs", parts)
    for source in (ref, parts[2]):
        plain = read_artifact(source)
        coded = read_artifact(source, dictionary=["doc_id", "neighbour_id"])
        assert pa.types.is_dictionary(coded.schema.field("doc_id").type)
        assert coded.schema.field("distance").type == plain.schema.field("distance").type
        assert coded.column("doc_id").cast(pa.string()).to_pylist() == plain.column("doc_id").to_pylist()
        assert coded.cast(plain.schema).equals(plain)
    assert read_artifact(ref, rows=range(2, 5), dictionary=["doc_id"]).column("doc_id").to_pylist() == [
        "d2",
        "d3",
        "d4",
    ]
    # The schema check still runs on the stored types: a file of another kind's schema is refused.
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"doc_id": ["a"]}), bad)
    with pytest.raises(StorageError):
        read_artifact(
            dataclasses.replace(parts[0], path=str(bad), sha256=hashlib.sha256(bad.read_bytes()).hexdigest(), rows=1),
            dictionary=["doc_id"],
        )
