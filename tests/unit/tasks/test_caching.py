from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from storage import ArtifactRef
from tasks.caching import canonical, code_version, content_fingerprint, stage_cache_key
from tasks.results import RunContext
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
