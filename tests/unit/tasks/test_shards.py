from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest

from storage import ArtifactRef, ArtifactStore, artifact_metadata, read_artifact
from tasks.caching import stage_cache_key
from tasks.results import RunContext, Shard
from tasks.shards import plan_shards, shard_dataset_stage


def _corpus(tmp_path: Path, texts: list[str], run: str = "run") -> ArtifactRef:
    table = pa.table({"doc_id": [f"d{i}" for i in range(len(texts))], "text": texts, "label": [1.0] * len(texts)})
    return ArtifactStore(tmp_path, run).write("corpus", "load_corpus", "corpus", table)


def test_shards_are_contiguous_and_keyed_by_their_own_rows(tmp_path: Path) -> None:
    texts = ["a", "b", "c", "d", "e", "f", "g"]
    shards = plan_shards(_corpus(tmp_path, texts), 3)
    assert [(s.number, s.start, s.stop) for s in shards] == [(0, 0, 3), (1, 3, 6), (2, 6, 7)]
    assert [s.name for s in shards] == ["shard-00000", "shard-00001", "shard-00002"]
    edited = plan_shards(_corpus(tmp_path, [*texts[:4], "changed", *texts[5:]], "run2"), 3)
    assert [a.content_sha256 == b.content_sha256 for a, b in zip(shards, edited, strict=True)] == [True, False, True]
    (whole,) = plan_shards(_corpus(tmp_path, texts, "run3"), 100)
    assert (whole.start, whole.stop) == (0, 7)
    with pytest.raises(ValueError, match="shard_size must be a positive number of texts, got 0"):
        plan_shards(_corpus(tmp_path, texts, "run4"), 0)


def test_shard_key_ignores_corpus_and_position_but_not_content_or_settings() -> None:
    ctx = SimpleNamespace(task=SimpleNamespace(name="attribute_shard"))
    sha = "a" * 64

    def key(shard: Shard, corpus_sha: str = "1", **params: object) -> str:
        corpus = ArtifactRef("load_corpus/corpus", "corpus", "/x.parquet", 1, corpus_sha * 64, 7)
        context = RunContext(Path("/r"), "run")
        return stage_cache_key(ctx, {"corpus": corpus, "shard": shard, "context": context, "params": params})

    base = key(Shard(0, 0, 3, sha), lam=1.0)
    assert base == key(Shard(4, 12, 15, sha), "2", lam=1.0)
    assert base != key(Shard(0, 0, 3, "b" * 64), lam=1.0)
    assert base != key(Shard(0, 0, 3, sha), lam=2.0)
    assert base.startswith("attribute_shard-")


def test_dataset_lists_the_shards_parts_in_order_without_rewriting_them(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path, "run")
    vectors = np.arange(10, dtype=np.float32).reshape(5, 2)
    parts = []
    for number, rows in enumerate((slice(0, 3), slice(3, 5))):
        table = pa.table(
            {
                "doc_id": [f"d{i}" for i in range(5)][rows],
                "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors[rows].reshape(-1)), 2),
            }
        )
        parts.append(
            store.write("embeddings", "encode_corpus", "embeddings", table, metadata={"layer": "2"}, part=number, dim=2)
        )
    before = [Path(p.path).stat().st_mtime_ns for p in parts]
    result = shard_dataset_stage.fn("encode_corpus", [{"embeddings": p} for p in parts], RunContext(tmp_path, "run"))
    listed = result.refs["embeddings"]
    assert result.stage == "encode_corpus" and listed.rows == 5
    table = read_artifact(listed)
    assert table.column("doc_id").to_pylist() == [f"d{i}" for i in range(5)]
    np.testing.assert_array_equal(np.asarray(table.column("embedding").to_pylist(), dtype=np.float32), vectors)
    assert artifact_metadata(listed) == {"layer": "2"}
    # The parts are the dataset: no merged file beside them, nothing rewritten.
    assert sorted(p.name for p in (tmp_path / "run" / "encode_corpus").iterdir()) == ["embeddings"]
    assert [Path(p.path).stat().st_mtime_ns for p in parts] == before
    with pytest.raises(ValueError, match="mix artifact kinds: corpus, embeddings"):
        shard_dataset_stage.fn(
            "encode_corpus", [{"x": parts[0]}, {"x": _corpus(tmp_path, ["a"], "other")}], RunContext(tmp_path, "run")
        )
