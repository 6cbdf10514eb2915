from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from storage import ArtifactRef
from tasks.caching import StageCache, canonical, code_version, content_fingerprint, stage_cache_key
from tasks.results import RunContext, StageResult
from tasks.tracking import flatten
from xattr.models.loading import ModelSpec

CTX = SimpleNamespace(task=SimpleNamespace(name="attribute"))


def _ref(sha: str, path: str = "/a/x.parquet") -> ArtifactRef:
    return ArtifactRef("attribute/x", "token_attributions", path, 1, sha * 64, 3)


def test_key_depends_on_artifact_content_not_path_or_run() -> None:
    a = stage_cache_key(CTX, {"corpus": _ref("a", "/run1/x.parquet"), "context": RunContext(Path("/r"), "run-1")})
    b = stage_cache_key(CTX, {"corpus": _ref("a", "/run2/x.parquet"), "context": RunContext(Path("/q"), "run-2")})
    c = stage_cache_key(CTX, {"corpus": _ref("b", "/run1/x.parquet"), "context": RunContext(Path("/r"), "run-1")})
    assert a == b != c
    assert a.startswith("attribute-")


def test_key_depends_on_settings_and_task_name() -> None:
    base = stage_cache_key(CTX, {"params": {"reduction": "sum"}, "batch_size": 32})
    assert base != stage_cache_key(CTX, {"params": {"reduction": "sum_of_squares"}, "batch_size": 32})
    assert base != stage_cache_key(
        SimpleNamespace(task=SimpleNamespace(name="evaluate")), {"params": {"reduction": "sum"}, "batch_size": 32}
    )
    assert base == stage_cache_key(CTX, {"batch_size": 32, "params": {"reduction": "sum"}})


def test_file_and_model_directory_keys_follow_content(tmp_path: Path) -> None:
    corpus = tmp_path / "c.csv"
    corpus.write_text("text\na\n")
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    first = canonical({"path": corpus, "model": ModelSpec(str(model))})
    (model / "config.json").write_text('{"num_labels": 2}')
    assert canonical({"path": corpus, "model": ModelSpec(str(model))}) != first
    moved = tmp_path / "elsewhere.csv"
    moved.write_text("text\na\n")
    assert content_fingerprint(moved) == content_fingerprint(corpus)
    assert canonical(ModelSpec("org/hub-model"))["source"] == "org/hub-model"


def test_code_version_is_a_stable_digest() -> None:
    assert code_version() == code_version()
    assert len(code_version()) == 64


def test_flatten_nested_config() -> None:
    assert flatten({"a": {"b": 1, "c": [1, 2]}, "d": "x"}) == {"a.b": "1", "a.c": "[1, 2]", "d": "x"}


def _stage_result(tmp_path: Path) -> StageResult:
    import pyarrow as pa

    from storage import ArtifactStore

    store = ArtifactStore(tmp_path / "artifacts", "run-1")
    table = pa.table({"doc_id": ["a"], "text": ["good film"]})
    ref = store.write("corpus", "load_corpus", "corpus", table)
    image = tmp_path / "plot.png"
    image.write_bytes(b"png bytes")
    return StageResult(
        "load_corpus",
        {"corpus": ref},
        {"rows": 1.0, "nan": float("nan")},
        {"a": "b"},
        0.5,
        ("n",),
        {"plot": str(image)},
    )


def test_stage_cache_round_trips_results_as_json_and_refuses_bad_entries(tmp_path: Path) -> None:
    import json as json_module

    said: list[str] = []
    cache = StageCache(tmp_path / "stage-cache", said.append)
    result = _stage_result(tmp_path)
    key = "load_corpus-" + "0" * 64
    assert cache.load(key) is None and said == []  # no entry: a plain miss
    cache.save(key, result)
    entry = json_module.loads(cache.path(key).read_text())  # plain JSON data
    assert (
        entry["format"] == "xattr-stage-cache"
        and entry["result"]["refs"]["corpus"]["sha256"] == result.refs["corpus"].sha256
    )
    loaded = cache.load(key)
    assert loaded is not None and loaded.refs == result.refs and loaded.files == result.files
    assert loaded.metrics["rows"] == 1.0 and math.isnan(loaded.metrics["nan"]) and loaded.notes == ("n",)

    other = "load_corpus-" + "1" * 64
    cache.path(other).write_text(cache.path(key).read_text())  # an entry copied under another key
    assert cache.load(other) is None and "records key" in said[-1]
    cache.path(key).write_bytes(b"\x80\x04\x95 not json")
    assert cache.load(key) is None and "is not a valid cache entry" in said[-1] and "recomputing" in said[-1]

    cache.save(key, result)
    Path(result.files["plot"]).write_bytes(b"other bytes")
    assert cache.load(key) is None and "is stale: sha256 of" in said[-1] and "plot.png" in said[-1]
    Path(result.files["plot"]).write_bytes(b"png bytes")
    Path(result.refs["corpus"].path).unlink()
    assert cache.load(key) is None and "does not exist" in said[-1]


def test_stage_results_from_records_check_every_field() -> None:
    good = StageResult("s", {}, {"m": 1.0}).to_record()
    assert StageResult.from_record(good) == StageResult("s", {}, {"m": 1.0})
    for broken in (
        {**good, "stage": 1},
        {**good, "metrics": {"m": "1"}},
        {**good, "extra": 1},
        [],
        {**good, "refs": {"a": {}}},
    ):
        with pytest.raises(ValueError):
            StageResult.from_record(broken)  # type: ignore[arg-type]
