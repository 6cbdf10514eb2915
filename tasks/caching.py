"""Cross-run cache keys: upstream artifact hashes + stage settings + code version.

Prefect's default cache policy includes the run id (never reused across runs) and its
``INPUTS`` policy hashes a path's text, not the file's contents; this key hashes contents.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

import storage
import xattr
from storage import ArtifactRef
from tasks.results import RunContext, Shard
from xattr.models.loading import ModelSpec

_CODE_PACKAGES = (xattr, storage)


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """SHA-256 over the source of ``xattr``, ``storage`` and ``tasks``: any code change invalidates."""
    import tasks

    digest = hashlib.sha256()
    for package in (*_CODE_PACKAGES, tasks):
        root = Path(package.__file__).parent
        for path in sorted(root.rglob("*.py")):
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


@functools.lru_cache(maxsize=32)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    return storage.file_sha256(path)


def content_fingerprint(path: Path | str) -> str:
    """SHA-256 of a file's bytes, or of a directory's files (relative names and contents).

    Digests are memoised per (path, size, modification time) within a process.
    """
    target = Path(path)
    if target.is_file():
        stat = target.stat()
        return _file_digest(str(target.resolve()), stat.st_size, stat.st_mtime_ns)
    if target.is_dir():
        digest = hashlib.sha256()
        for child in sorted(p for p in target.rglob("*") if p.is_file()):
            digest.update(str(child.relative_to(target)).encode())
            digest.update(content_fingerprint(child).encode())
        return digest.hexdigest()
    return f"missing:{target}"


def canonical(value: Any) -> Any:
    """A JSON-able form of a task parameter in which only content matters."""
    if isinstance(value, ArtifactRef):
        return {"artifact": value.kind, "sha256": value.sha256}
    if isinstance(value, RunContext):
        return None
    if isinstance(value, ModelSpec):
        # A local model is identified by its files' contents, a hub model by its id.
        local = Path(value.source).expanduser()
        identity = content_fingerprint(local) if local.exists() else value.source
        return canonical({**dataclasses.asdict(value), "source": identity})
    if isinstance(value, BaseModel):
        return canonical(value.model_dump(mode="json"))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return canonical({f.name: getattr(value, f.name) for f in dataclasses.fields(value)})
    if isinstance(value, dict):
        return {str(k): canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, list | tuple):
        return [canonical(v) for v in value]
    if isinstance(value, Path):
        return {"path_content": content_fingerprint(value)}
    return value


def stage_cache_key(context: Any, parameters: dict[str, Any]) -> str:
    """Prefect ``cache_key_fn``: task name, code version and the canonical parameters.

    A stage run on a shard (a ``shard`` parameter that is not ``None``) is keyed by the shard's
    content in place of the whole corpus: the corpus reference and the shard's number and
    positions are left out, so a shard whose texts did not change is reused even when other
    shards changed (and a run killed mid-way resumes where it stopped). The whole corpus'
    ``predictions`` are left out too: they are the model's outputs on the texts, so the model and
    the shard's content key them (a method that filters neighbours by prediction also has the
    whole corpus' embeddings and index in its key). Everything else (model, method settings,
    neighbour index and embeddings when given) counts as for the whole corpus.
    """
    task_name = context.task.name
    params = dict(parameters)
    shard = params.get("shard")
    if isinstance(shard, Shard):
        params.pop("corpus", None)
        params.pop("predictions", None)
        params["shard"] = shard.content_sha256
    payload = json.dumps(
        {"task": task_name, "code": code_version(), "parameters": canonical(params)}, sort_keys=True, default=str
    )
    return f"{task_name}-{hashlib.sha256(payload.encode()).hexdigest()}"
