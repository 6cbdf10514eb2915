"""The build_index stage with an approximate index: trained index, manifest and recall metric."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pytest
from prefect.logging import disable_run_logger

import tasks.build_index as stage_module
from storage import ArtifactStore, read_artifact, read_index
from tasks.results import RunContext
from tests.conftest import RecordingProgress
from xattr.neighbours.index import IndexParams, build_index, measure_recall, nearest_neighbours


def _embeddings(tmp_path: Path, vectors: np.ndarray) -> object:
    ids = [f"doc-{i}" for i in range(len(vectors))]
    table = pa.table(
        {
            "doc_id": pa.array(ids, pa.string()),
            "embedding": pa.FixedSizeListArray.from_arrays(
                pa.array(vectors.reshape(-1), pa.float32()), vectors.shape[1]
            ),
        }
    )
    store = ArtifactStore(tmp_path / "artifacts", "run-0")
    return store.write(
        "embeddings", "encode_corpus", "embeddings", table, metadata={"model": "m", "layer": "2"}, dim=16
    )


def test_hnsw_stage_writes_index_neighbours_and_recall(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stage_module, "StageProgress", RecordingProgress)
    rng = np.random.default_rng(3)
    vectors = (rng.standard_normal((8, 16)) * 4)[rng.integers(0, 8, 600)] + rng.standard_normal((600, 16))
    vectors = vectors.astype(np.float32)
    embeddings = _embeddings(tmp_path, vectors)
    params = IndexParams(hnsw_m=8, ef_search=16, seed=0)
    with disable_run_logger():
        result = stage_module.build_index_stage.fn(
            embeddings, "hnsw", 5, RunContext(tmp_path / "artifacts", "run-1"), params=params, recall_queries=200
        )
    index, manifest = read_index(result.refs["index"])
    assert isinstance(index, faiss.IndexHNSWFlat) and index.hnsw.efSearch == 16
    assert manifest["xattr_index_type"] == "hnsw"
    assert manifest["index_params"]["hnsw_m"] == 8
    expected = measure_recall(build_index(vectors, "hnsw", params), vectors, k=10, queries=200, seed=0)
    assert result.metrics["recall_at_10"] == manifest["recall_at_10"] == expected
    assert 0.9 < expected <= 1.0
    assert result.params["index_type"] == "hnsw" and result.params["index.ef_search"] == "16"
    assert RecordingProgress.calls[-1] == (600, 600)

    table = read_artifact(result.refs["neighbours"]).to_pandas()
    _, ids = nearest_neighbours(index, vectors, 5)
    first = table[table.doc_id == "doc-0"].sort_values("rank")
    assert first.neighbour_id.tolist() == [f"doc-{i}" for i in ids[0]]
    assert len(table) == 600 * 5


def test_stage_searches_the_candidates_methods_need_and_reads_them_back(tmp_path: Path) -> None:
    """The neighbours table holds max(neighbours, candidates) per text; read back it is the search itself."""
    from tasks.build_index import neighbour_candidates

    vectors = np.random.default_rng(5).standard_normal((50, 16)).astype(np.float32)
    embeddings = _embeddings(tmp_path, vectors)
    with disable_run_logger():
        result = stage_module.build_index_stage.fn(
            embeddings, "flat_l2", 3, RunContext(tmp_path / "artifacts", "run-1"), candidates=12
        )
    assert result.params["searched_neighbours"] == "12" and result.metrics["neighbour_rows"] == 50 * 12
    squared, ids = neighbour_candidates(result.refs["index"], 50)
    expected_d, expected_i = nearest_neighbours(build_index(vectors), vectors, 12)
    np.testing.assert_array_equal(ids, expected_i)
    np.testing.assert_array_equal(squared, expected_d)
    # one shard's rows only, in order
    squared, ids = neighbour_candidates(result.refs["index"], 50, range(20, 35))
    np.testing.assert_array_equal(ids, expected_i[20:35])
    np.testing.assert_array_equal(squared, expected_d[20:35])


def test_sharded_embeddings_give_a_neighbours_part_per_shard_and_a_shard_reads_its_own(tmp_path: Path) -> None:
    """Embeddings in parts (20, 20, 10 texts): one neighbours part each; a shard's candidates never open the others."""
    from tasks.build_index import neighbour_candidates

    vectors = np.random.default_rng(6).standard_normal((50, 16)).astype(np.float32)
    ids = [f"doc-{i}" for i in range(50)]
    store = ArtifactStore(tmp_path / "artifacts", "run-0")
    parts = []
    for number, (a, b) in enumerate([(0, 20), (20, 40), (40, 50)]):
        table = pa.table(
            {
                "doc_id": pa.array(ids[a:b], pa.string()),
                "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors[a:b].reshape(-1), pa.float32()), 16),
            }
        )
        meta = {"model": "m", "layer": "2"}
        parts.append(
            store.write("embeddings", "encode_corpus", "embeddings", table, metadata=meta, dim=16, part=number)
        )
    embeddings = store.write_dataset("encode_corpus", "embeddings", parts)
    with disable_run_logger():
        result = stage_module.build_index_stage.fn(
            embeddings, "flat_l2", 3, RunContext(tmp_path / "artifacts", "run-1"), candidates=12
        )
    directory = Path(result.refs["neighbours"].path)
    assert sorted(p.name for p in directory.iterdir()) == [
        "_manifest.json",
        "part-00000.parquet",
        "part-00001.parquet",
        "part-00002.parquet",
    ]
    expected_d, expected_i = nearest_neighbours(build_index(vectors), vectors, 12)
    squared, found = neighbour_candidates(result.refs["index"], 50)
    np.testing.assert_array_equal(found, expected_i)
    np.testing.assert_array_equal(squared, expected_d)
    # Break the first and last parts: the middle shard's candidates are still read (from its part only).
    for name in ("part-00000.parquet", "part-00002.parquet"):
        (directory / name).chmod(0o644)
        (directory / name).write_bytes(b"broken")
    squared, found = neighbour_candidates(result.refs["index"], 50, range(20, 40))
    np.testing.assert_array_equal(found, expected_i[20:40])
    np.testing.assert_array_equal(squared, expected_d[20:40])
    with pytest.raises(Exception, match="sha256 mismatch"):
        neighbour_candidates(result.refs["index"], 50, range(35, 45))
