"""The stage cache holds data, never code: planted pickles are not loaded, bad entries recompute.

Audit cases (issue "Hardening"): a crafted file in ``stage-cache/`` ran code on the next run; a
corrupted artifact failed every later run; a failed stage left a pickled exception behind.
"""

from __future__ import annotations

import base64
import json
import logging
import pickle
from pathlib import Path

import pandas as pd
import pytest
from prefect.testing.utilities import prefect_test_harness

from flows.explain_corpus import explain_corpus
from flows.settings import ExplainSettings
from xattr.data.corpus import CorpusError

pytestmark = pytest.mark.integration

TEXTS = ["the movie was great", "bad acting", "not fun", "very good film", "awful plot", "love this movie"]


class _Planted:
    """Unpickling this creates ``marker``: the proof that a cache file was executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _prefect_record(payload: object) -> bytes:
    """A result record exactly as Prefect writes one (its JSON, the result cloudpickled in base64)."""
    import cloudpickle

    return json.dumps(
        {
            "metadata": {
                "storage_key": "planted",
                "expiration": None,
                "serializer": {"type": "pickle", "picklelib": "cloudpickle", "picklelib_version": None},
                "prefect_version": "3.8.8",
                "storage_block_id": None,
            },
            "result": base64.b64encode(cloudpickle.dumps(payload)).decode(),
        }
    ).encode()


@pytest.fixture(scope="module")
def harness():
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def warnings_seen():
    """Messages logged at WARNING or above by Prefect run loggers during the test."""
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.WARNING:
                seen.append(record.getMessage())

    handler = Keep()
    logger = logging.getLogger("prefect")
    logger.addHandler(handler)
    yield seen
    logger.removeHandler(handler)


def _settings(tmp_path: Path, model: Path, corpus: Path | None = None) -> ExplainSettings:
    if corpus is None:
        corpus = tmp_path / "reviews.csv"
        pd.DataFrame({"text": TEXTS, "label": [i % 2 for i in range(len(TEXTS))]}).to_csv(corpus, index=False)
    return ExplainSettings.model_validate(
        {
            "workdir": str(tmp_path / "work"),
            "corpus": {"path": str(corpus), "label_column": "label"},
            "model": {"path": str(model)},
            "attribution": {"methods": [{"name": "simple_grad"}]},
            "evaluation": {"max_texts": 4},
        }
    )


def _cache_files(workdir: Path) -> list[Path]:
    return [p for p in (workdir / "stage-cache").rglob("*") if p.is_file()]


def test_planted_pickle_in_the_stage_cache_is_never_loaded_and_the_run_recomputes(
    harness, tmp_path: Path, tiny_classifier_dir: Path, warnings_seen: list[str]
) -> None:
    settings = _settings(tmp_path, tiny_classifier_dir)
    first = explain_corpus(settings)
    planted = _cache_files(settings.workdir)
    assert planted, "the first run left no cache entries"
    markers = []
    for number, path in enumerate(planted):
        marker = tmp_path / f"executed-{number}"
        markers.append(marker)
        # Half the entries as Prefect result records, half as raw pickles: neither may run.
        path.write_bytes(_prefect_record(_Planted(marker)) if number % 2 else pickle.dumps(_Planted(marker)))

    second = explain_corpus(settings)

    assert not any(m.exists() for m in markers), "a planted cache file was executed"
    assert second["cache_hits"] == 0
    assert second["metrics"] == first["metrics"]
    refused = [w for w in warnings_seen if "is not a valid cache entry" in w and "recomputing" in w]
    assert len(refused) == len(planted), warnings_seen
    third = explain_corpus(settings)  # the recomputed entries replaced the planted ones
    assert third["cache_hits"] == len(third["stages"])
    assert third["metrics"] == first["metrics"]


def test_corrupted_artifact_heals_by_recomputing(
    harness, tmp_path: Path, tiny_classifier_dir: Path, warnings_seen: list[str]
) -> None:
    settings = _settings(tmp_path, tiny_classifier_dir)
    first = explain_corpus(settings)
    attributed = next(s for s in first["stages"] if s["stage"] == "attribute-simple_grad")
    path = Path(attributed["refs"]["attributions"]["path"])
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.chmod(0o644)
    path.write_bytes(bytes(data))

    second = explain_corpus(settings)

    recomputed = {s["stage"] for s in second["stages"] if not s["cached"]}
    assert "attribute-simple_grad" in recomputed
    assert {"load_corpus", "encode_corpus", "build_index"} <= {s["stage"] for s in second["stages"] if s["cached"]}
    assert second["metrics"] == first["metrics"]
    assert any("is stale: sha256 of" in w and str(path) in w for w in warnings_seen), warnings_seen
    assert explain_corpus(settings)["cache_hits"] == len(first["stages"])


def test_a_failed_stage_leaves_no_pickled_exception_in_the_cache(harness, tmp_path: Path, tiny_classifier_dir: Path):
    corpus = tmp_path / "dup.csv"
    pd.DataFrame({"id": ["a", "b", "a"], "text": ["x", "y", "z"], "label": [0, 1, 0]}).to_csv(corpus, index=False)
    settings = _settings(tmp_path, tiny_classifier_dir, corpus).model_copy()
    settings = settings.model_copy(update={"corpus": settings.corpus.model_copy(update={"id_column": "id"})})
    with pytest.raises(CorpusError):
        explain_corpus(settings)
    for path in _cache_files(settings.workdir):
        entry = json.loads(path.read_text())  # only JSON data, never a pickle
        assert entry["format"] == "xattr-stage-cache"


@pytest.mark.parametrize("bad", [0.5, 1.9, 7, -1])
def test_labels_that_are_not_classes_of_the_model_fail_at_load_naming_file_column_row_and_value(
    harness, tmp_path: Path, tiny_classifier_dir: Path, bad: float
) -> None:
    corpus = tmp_path / "labels.csv"
    pd.DataFrame({"text": TEXTS[:3], "label": [0, 1, bad]}).to_csv(corpus, index=False)
    settings = _settings(tmp_path, tiny_classifier_dir, corpus)
    settings = settings.model_copy(update={"attribution": settings.attribution.model_copy(update={"target": "label"})})
    with pytest.raises(CorpusError) as caught:
        explain_corpus(settings)
    shown = repr(float(bad)) if isinstance(bad, float) else repr(bad)
    assert str(caught.value).startswith(f"corpus file {str(corpus)!r}, column 'label', row 3: label ")
    assert shown in str(caught.value) and "is not a class of the model" in str(caught.value)
