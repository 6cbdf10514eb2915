"""The stage cache: cross-run keys (upstream artifact hashes + stage settings + code version) and
its entries, stage results stored as JSON data.

Prefect's default cache policy includes the run id (never reused across runs) and its
``INPUTS`` policy hashes a path's text, not the file's contents; this key hashes contents.

Prefect's own result persistence is not used: it stores results with cloudpickle, and reads a
stored record with whatever serializer the record itself names, so anyone who can write the
cache directory could run code as the user. :func:`stage_task` declares stages with Prefect's
persistence off; :class:`StageCache` keeps one JSON file per key holding the
:class:`~tasks.results.StageResult` as plain data (artifact references, metrics, params) and
the SHA-256 of every other file it names. An entry that does not parse, or whose artifacts'
bytes are no longer the recorded ones, is a cache miss: the stage recomputes and the log says why.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from prefect import Task, task
from prefect.cache_policies import NO_CACHE
from prefect.utilities.callables import get_call_parameters
from pydantic import BaseModel

import storage
import xattr
from storage import ArtifactRef
from tasks.results import RunContext, Shard, StageResult
from xattr.models.loading import ModelSpec

#: ``(context, parameters) -> key or None``: the signature of Prefect's ``cache_key_fn``.
CacheKeyFn = Callable[[Any, dict[str, Any]], "str | None"]

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
    whole corpus' embeddings and index in its key), and so are its ``tokens`` (the model's
    tokenizer on the texts). Everything else (model, method settings,
    neighbour index and embeddings when given) counts as for the whole corpus.
    """
    task_name = context.task.name
    params = dict(parameters)
    shard = params.get("shard")
    if isinstance(shard, Shard):
        params.pop("corpus", None)
        params.pop("predictions", None)
        params.pop("tokens", None)
        params["shard"] = shard.content_sha256
    payload = json.dumps(
        {"task": task_name, "code": code_version(), "parameters": canonical(params)}, sort_keys=True, default=str
    )
    return f"{task_name}-{hashlib.sha256(payload.encode()).hexdigest()}"


_KEY_ATTRIBUTE = "__xattr_stage_key__"


def stage_task(
    name: str, *, key: CacheKeyFn | None = None, **options: Any
) -> Callable[[Callable[..., StageResult]], Task]:
    """Declare a stage: a Prefect task that Prefect never caches nor persists, keyed for :class:`StageCache`.

    Args:
        name: The task's name (part of the key).
        key: The cache key function (default :func:`stage_cache_key`); one returning ``None``
            means "never cached" for that call.
        options: More ``prefect.task`` options (``task_run_name``).
    """

    def declare(fn: Callable[..., StageResult]) -> Task:
        setattr(fn, _KEY_ATTRIBUTE, key or stage_cache_key)
        return task(name=name, persist_result=False, cache_policy=NO_CACHE, **options)(fn)

    return declare


def task_cache_key(stage: Task, kwargs: dict[str, Any]) -> str | None:
    """The cache key of calling ``stage`` with ``kwargs`` (defaults filled in as Prefect does).

    Raises:
        TypeError: ``stage`` was not declared with :func:`stage_task`.
    """
    key_fn = getattr(stage.fn, _KEY_ATTRIBUTE, None)
    if key_fn is None:
        raise TypeError(f"task {stage.name!r} is not a stage (declare it with tasks.caching.stage_task)")
    return key_fn(SimpleNamespace(task=stage), get_call_parameters(stage.fn, (), kwargs))


_FORMAT = "xattr-stage-cache"
_VERSION = 1
_MAX_ENTRY_BYTES = 16 << 20


class StageCache:
    """One JSON file per cache key under ``directory`` (``<workdir>/stage-cache``).

    Args:
        directory: Where the entries live.
        log: Called with one line whenever an entry is refused (or cannot be written).
    """

    def __init__(self, directory: Path, log: Callable[[str], None]) -> None:
        self.directory = Path(directory)
        self.log = log

    def path(self, key: str) -> Path:
        """The entry file of ``key``."""
        return storage.inside(self.directory, f"{key}.json", what="cache key")

    def load(self, key: str) -> StageResult | None:
        """The cached result of ``key``, or ``None`` (no entry, or one that is refused and logged).

        An entry is refused when it is not this format's JSON, names another key, or any
        artifact or file it names is missing or has other bytes than recorded.
        """
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            if path.stat().st_size > _MAX_ENTRY_BYTES:
                raise ValueError(f"larger than {_MAX_ENTRY_BYTES >> 20} MiB")
            entry = json.loads(path.read_bytes().decode("utf-8"))
            if not isinstance(entry, dict) or entry.get("format") != _FORMAT or entry.get("version") != _VERSION:
                raise ValueError(f"not an {_FORMAT} version {_VERSION} entry")
            if entry.get("key") != key:
                raise ValueError(f"it records key {entry.get('key')!r}")
            result = StageResult.from_record(entry.get("result"))
            hashes = entry.get("files_sha256")
            if not isinstance(hashes, dict) or set(hashes) != set(result.files):
                raise ValueError("its file digests do not match its files")
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            self.log(f"stage cache: entry {path} is not a valid cache entry ({exc}); recomputing")
            return None
        problems = [p for p in map(storage.artifact_problem, result.refs.values()) if p] + [
            problem for name, file in result.files.items() if (problem := _file_problem(Path(file), hashes[name]))
        ]
        if problems:
            self.log(f"stage cache: entry of {result.stage} is stale: {problems[0]}; recomputing")
            return None
        return result

    def save(self, key: str, result: StageResult) -> None:
        """Store ``result`` under ``key`` atomically (write aside, then rename over the old entry).

        The cache only saves time: a failure to write is logged and the run goes on.
        """
        path = self.path(key)
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
        try:
            hashes = {name: storage.file_sha256(file) for name, file in result.files.items()}
            text = json.dumps(
                {
                    "format": _FORMAT,
                    "version": _VERSION,
                    "key": key,
                    "result": result.to_record(),
                    "files_sha256": hashes,
                }
            )
            self.directory.mkdir(parents=True, exist_ok=True)
            with open(temporary, "x", encoding="utf-8") as sink:
                sink.write(text)
                sink.flush()
                os.fsync(sink.fileno())
            os.replace(temporary, path)
        except (OSError, storage.StorageError) as exc:
            self.log(f"stage cache: could not save the entry of {result.stage} ({exc}); it will recompute next time")
        finally:
            temporary.unlink(missing_ok=True)


def _file_problem(path: Path, sha256: str) -> str | None:
    if not path.is_file():
        return f"{path} does not exist"
    try:
        actual = storage.file_sha256(path)
    except storage.StorageError as exc:
        return exc.problem
    return None if actual == sha256 else f"sha256 of {path} differs from the recorded one"
