from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt
import pytest

from storage import ArtifactRef, StorageError, read_index, write_index

DIM = 8


@pytest.fixture
def vectors() -> npt.NDArray[np.float32]:
    return np.random.default_rng(7).standard_normal((20, DIM)).astype(np.float32)


@pytest.fixture
def index(vectors: npt.NDArray[np.float32]) -> faiss.IndexFlatL2:
    flat = faiss.IndexFlatL2(DIM)
    flat.add(vectors)
    return flat


MANIFEST = {"model": "minilm", "source_sha256": "ab" * 32, "metric": "l2"}


def _entries(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


def test_round_trip_search_results_identical(
    tmp_path: Path, index: faiss.IndexFlatL2, vectors: npt.NDArray[np.float32]
) -> None:
    queries = (vectors[:5] + 0.01).astype(np.float32)
    distances_before, ids_before = index.search(queries, 4)
    directory = tmp_path / "run" / "index" / "faiss"
    ref = write_index(index, directory, name="index/faiss", manifest=MANIFEST)

    loaded, manifest = read_index(ref)
    distances_after, ids_after = loaded.search(queries, 4)
    assert type(loaded) is faiss.IndexFlatL2
    np.testing.assert_array_equal(ids_after, ids_before)
    np.testing.assert_array_equal(distances_after, distances_before)
    np.testing.assert_array_equal(loaded.reconstruct_n(0, 20), vectors)
    assert _entries(directory) == ["index.faiss", "manifest.json"]


def test_ref_and_manifest_contents(tmp_path: Path, index: faiss.IndexFlatL2) -> None:
    ref = write_index(index, tmp_path / "faiss", name="index/faiss", manifest=MANIFEST)
    digest = hashlib.sha256((tmp_path / "faiss" / "index.faiss").read_bytes()).hexdigest()
    assert ref == ArtifactRef(
        name="index/faiss",
        kind="faiss_index",
        path=str(tmp_path / "faiss"),
        schema_version=1,
        sha256=digest,
        rows=20,
    )
    expected = {
        **MANIFEST,
        "ntotal": 20,
        "dim": DIM,
        "index_type": "IndexFlatL2",
        "sha256": digest,
        "schema_version": 1,
    }
    assert json.loads((tmp_path / "faiss" / "manifest.json").read_text("utf-8")) == expected
    assert read_index(ref)[1] == expected
    assert MANIFEST == {"model": "minilm", "source_sha256": "ab" * 32, "metric": "l2"}


def test_base_class_index_reads_back_as_subclass(tmp_path: Path, vectors: npt.NDArray[np.float32]) -> None:
    index = faiss.index_factory(DIM, "Flat", faiss.METRIC_INNER_PRODUCT)
    index.add(vectors)
    ref = write_index(index, tmp_path / "ip", name="ip", manifest={})
    loaded, manifest = read_index(ref)
    assert manifest["index_type"] == "IndexFlat"
    assert type(loaded) is faiss.IndexFlatIP
    np.testing.assert_array_equal(loaded.search(vectors[:2], 3)[1], index.search(vectors[:2], 3)[1])


def test_overwrite_refused_and_files_unchanged(tmp_path: Path, index: faiss.IndexFlatL2) -> None:
    directory = tmp_path / "faiss"
    ref = write_index(index, directory, name="faiss", manifest=MANIFEST)
    before = {name: (directory / name).read_bytes() for name in _entries(directory)}
    other = faiss.IndexFlatL2(DIM)
    with pytest.raises(StorageError) as info:
        write_index(other, directory, name="faiss", manifest={})
    assert info.value.artifact == "faiss"
    assert info.value.problem == f"{directory / 'index.faiss'} already exists; artifacts are immutable"
    assert {name: (directory / name).read_bytes() for name in _entries(directory)} == before
    assert read_index(ref)[0].ntotal == 20


def test_existing_manifest_alone_refuses_the_write(tmp_path: Path, index: faiss.IndexFlatL2) -> None:
    directory = tmp_path / "faiss"
    directory.mkdir()
    (directory / "manifest.json").write_text("{}")
    with pytest.raises(StorageError, match="manifest.json already exists; artifacts are immutable"):
        write_index(index, directory, name="faiss", manifest={})
    assert _entries(directory) == ["manifest.json"]


def test_tampered_index_detected(tmp_path: Path, index: faiss.IndexFlatL2) -> None:
    ref = write_index(index, tmp_path / "faiss", name="faiss", manifest={})
    index_file = tmp_path / "faiss" / "index.faiss"
    data = bytearray(index_file.read_bytes())
    data[-1] ^= 0xFF
    index_file.write_bytes(bytes(data))
    with pytest.raises(StorageError) as info:
        read_index(ref)
    assert info.value.artifact == "faiss"
    assert info.value.problem.startswith(f"sha256 mismatch for {index_file}: recorded {ref.sha256}")


def test_tampered_manifest_detected(tmp_path: Path, index: faiss.IndexFlatL2) -> None:
    ref = write_index(index, tmp_path / "faiss", name="faiss", manifest={})
    manifest_file = tmp_path / "faiss" / "manifest.json"
    manifest = json.loads(manifest_file.read_text("utf-8"))

    manifest_file.write_text(json.dumps({**manifest, "ntotal": 21}))
    with pytest.raises(StorageError) as info:
        read_index(ref)
    assert info.value.problem == "index holds 20 vectors, manifest records 21, reference records 20"

    manifest_file.write_text(json.dumps({**manifest, "dim": 9, "index_type": "IndexIVFFlat"}))
    with pytest.raises(StorageError) as info:
        read_index(ref)
    assert info.value.problem == (
        "index dimension is 8, manifest records 9; index type is IndexFlatL2, manifest records IndexIVFFlat"
    )

    manifest_file.write_text(json.dumps({**manifest, "sha256": "0" * 64}))
    with pytest.raises(StorageError, match="manifest sha256 '0{64}' differs from the reference's"):
        read_index(ref)

    manifest_file.write_text(json.dumps({**manifest, "schema_version": 2}))
    with pytest.raises(StorageError, match="manifest has schema version 2"):
        read_index(ref)

    manifest_file.write_text("[1, 2")
    with pytest.raises(StorageError, match=f"cannot read manifest {manifest_file}"):
        read_index(ref)

    manifest_file.unlink()
    with pytest.raises(StorageError, match=f"manifest {manifest_file} does not exist"):
        read_index(ref)


def test_reference_mismatches(tmp_path: Path, index: faiss.IndexFlatL2) -> None:
    ref = write_index(index, tmp_path / "faiss", name="faiss", manifest={})
    with pytest.raises(StorageError, match="kind 'corpus' is not 'faiss_index'"):
        read_index(dataclasses.replace(ref, kind="corpus"))
    with pytest.raises(StorageError, match="reference has schema version 3"):
        read_index(dataclasses.replace(ref, schema_version=3))
    with pytest.raises(StorageError, match="differs from the reference's " + "1" * 64):
        read_index(dataclasses.replace(ref, sha256="1" * 64))
    with pytest.raises(StorageError, match="reference records 4"):
        read_index(dataclasses.replace(ref, rows=4))


def test_manifest_validation_writes_nothing(tmp_path: Path, index: faiss.IndexFlatL2) -> None:
    directory = tmp_path / "faiss"
    with pytest.raises(StorageError, match=r"manifest uses reserved key\(s\): ntotal, sha256"):
        write_index(index, directory, name="faiss", manifest={"sha256": "x", "ntotal": 1})
    with pytest.raises(StorageError, match="manifest is not JSON-serialisable"):
        write_index(index, directory, name="faiss", manifest={"ids": {1, 2}})
    with pytest.raises(StorageError, match="expected a faiss.Index, got ndarray"):
        write_index(np.zeros((2, 2)), directory, name="faiss", manifest={})  # type: ignore[arg-type]
    assert not directory.exists()


def test_interrupted_index_write_leaves_nothing(
    tmp_path: Path, index: faiss.IndexFlatL2, monkeypatch: pytest.MonkeyPatch
) -> None:
    def partial_then_interrupt(index: faiss.Index, path: str) -> None:
        Path(path).write_bytes(b"IxF2 half an index")
        raise KeyboardInterrupt

    monkeypatch.setattr(faiss, "write_index", partial_then_interrupt)
    directory = tmp_path / "faiss"
    with pytest.raises(KeyboardInterrupt):
        write_index(index, directory, name="faiss", manifest={})
    assert _entries(directory) == []


def test_faiss_error_is_wrapped(tmp_path: Path, index: faiss.IndexFlatL2, monkeypatch: pytest.MonkeyPatch) -> None:
    error = RuntimeError("Error in faiss::write_index")

    def failing(index: faiss.Index, path: str) -> None:
        raise error

    monkeypatch.setattr(faiss, "write_index", failing)
    with pytest.raises(StorageError) as info:
        write_index(index, tmp_path / "faiss", name="faiss", manifest={})
    assert info.value.problem == "faiss cannot write the index: Error in faiss::write_index"
    assert info.value.__cause__ is error
    assert _entries(tmp_path / "faiss") == []


def test_failed_manifest_write_removes_the_index(
    tmp_path: Path, index: faiss.IndexFlatL2, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing_write_text(self: Path, *args: Any, **kwargs: Any) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", failing_write_text)
    directory = tmp_path / "faiss"
    with pytest.raises(StorageError, match="No space left on device"):
        write_index(index, directory, name="faiss", manifest={})
    assert _entries(directory) == []
