"""What a stage returns: artifact references and a summary, never tables or tensors."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from storage import ArtifactRef, StorageError


@dataclass(frozen=True)
class RunContext:
    """Where this flow run writes. Excluded from cache keys: it names the run, not the inputs.

    Attributes:
        artifacts_root: Root of all run-scoped artifact directories.
        run_id: This flow run's id; artifacts go to ``artifacts_root/run_id/stage/``.
    """

    artifacts_root: Path
    run_id: str


@dataclass(frozen=True)
class Shard:
    """Corpus positions ``start <= i < stop`` and a digest of their content.

    A stage given a shard computes only those positions and is cached by the shard's content,
    not the whole corpus (see ``tasks.caching.stage_cache_key``); without one it covers the corpus.

    Attributes:
        number: The shard's number, from 0.
        start: First corpus position.
        stop: One past the last corpus position.
        content_sha256: SHA-256 of the shard's doc ids, texts, text pairs and labels.
    """

    number: int
    start: int
    stop: int
    content_sha256: str

    @property
    def name(self) -> str:
        return f"shard-{self.number:05d}"

    @property
    def positions(self) -> range:
        return range(self.start, self.stop)


def stage_suffix(shard: Shard | None) -> str:
    """``"-shard-00003"`` for a shard, ``""`` for the whole corpus: appended to stage and artifact names."""
    return f"-{shard.name}" if shard is not None else ""


@dataclass(frozen=True)
class StageResult:
    """The outcome of one stage.

    Attributes:
        stage: Stage name as shown in Prefect and MLflow (e.g. ``"attribute-simple_grad"``).
        refs: The artifacts written, by short name.
        metrics: Numbers worth tracking (rows, seconds, faithfulness).
        params: The stage's resolved settings, flattened to strings.
        seconds: Wall time of the computation (when it ran, not when served from cache).
        notes: Human-readable lines (warnings, handling applied) for the run summary.
        files: Other files the stage wrote (images), by short name: logged to the stage's MLflow run.
    """

    stage: str
    refs: dict[str, ArtifactRef]
    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    notes: tuple[str, ...] = ()
    files: dict[str, str] = field(default_factory=dict)

    def to_record(self) -> dict[str, Any]:
        """The result as plain JSON data (what the stage cache stores; nothing in it is ever executed)."""
        return {
            "stage": self.stage,
            "refs": {name: ref.to_dict() for name, ref in self.refs.items()},
            "metrics": {name: float(value) for name, value in self.metrics.items()},
            "params": {name: str(value) for name, value in self.params.items()},
            "seconds": float(self.seconds),
            "notes": list(self.notes),
            "files": dict(self.files),
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> StageResult:
        """Rebuild a result from :meth:`to_record`'s data, checking every field's type.

        Raises:
            ValueError: A field is missing, unknown or of the wrong type (the message names it).
        """
        if not isinstance(record, Mapping):
            raise ValueError(f"expected an object, got {type(record).__name__}")
        expected = {"stage", "refs", "metrics", "params", "seconds", "notes", "files"}
        if set(record) != expected:
            raise ValueError(f"fields {sorted(map(str, record))} are not {sorted(expected)}")

        def table(name: str, check: Any) -> dict[str, Any]:
            value = record[name]
            if not isinstance(value, dict) or not all(isinstance(k, str) and check(v) for k, v in value.items()):
                raise ValueError(f"field {name!r} has the wrong type")
            return value

        def number(value: Any) -> bool:
            return isinstance(value, int | float) and not isinstance(value, bool)

        if not isinstance(record["stage"], str) or not number(record["seconds"]):
            raise ValueError("field 'stage' or 'seconds' has the wrong type")
        notes = record["notes"]
        if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
            raise ValueError("field 'notes' has the wrong type")
        try:
            refs = {name: ArtifactRef.from_dict(r) for name, r in table("refs", lambda v: isinstance(v, dict)).items()}
        except StorageError as exc:
            raise ValueError(str(exc)) from None
        metrics = table("metrics", number)
        return cls(
            stage=record["stage"],
            refs=refs,
            metrics={k: float(v) for k, v in metrics.items()},
            params=table("params", lambda v: isinstance(v, str)),
            seconds=float(record["seconds"]) if math.isfinite(record["seconds"]) else 0.0,
            notes=tuple(notes),
            files=table("files", lambda v: isinstance(v, str)),
        )

    def missing_artifacts(self) -> list[str]:
        """Paths of referenced artifacts that no longer exist (a stale cache entry)."""
        return [ref.path for ref in self.refs.values() if not Path(ref.path).exists()] + [
            path for path in self.files.values() if not Path(path).exists()
        ]
