"""The fine-tune stage: one content key (base-model files, rows, settings) decides reuse or retraining."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from prefect.logging import disable_run_logger

import tasks.fine_tune as stage_module
from storage import ArtifactStore
from tasks.fine_tune import CorpusFile, fine_tune_stage, fine_tune_summary
from tests.conftest import RecordingProgress, save_tiny_model
from xattr.data.corpus import CorpusColumns
from xattr.training.trainer import TRAINING_REPORT, TrainConfig, load_train_result

TEXTS = ["good fun movie", "bad boring plot", "great acting", "awful film", "very good", "really bad"] * 3
CONFIG = TrainConfig(epochs=1, batch_size=8, max_length=16, patience=None, validation_fraction=0.25)


@pytest.fixture(autouse=True)
def no_server(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(stage_module, "StageProgress", RecordingProgress)
    with disable_run_logger():
        yield


def _corpus(path: Path, labels: list[str]) -> CorpusFile:
    pd.DataFrame({"id": [f"d{i}" for i in range(len(TEXTS))], "text": TEXTS, "label": labels}).to_csv(path, index=False)
    return CorpusFile(path, CorpusColumns(text="text", label="label", id="id"))


def _run(rows, base: Path, models: Path, config: TrainConfig = CONFIG, **kwargs):
    return fine_tune_stage.fn(rows, base, config, str(models), name="tiny", **kwargs)


def test_same_content_is_reused_and_a_change_of_rows_settings_or_base_model_retrains(tmp_path: Path) -> None:
    base = save_tiny_model(tmp_path / "base", num_labels=2)
    models = tmp_path / "models"
    labels = ["pos", "neg"] * 9
    rows = _corpus(tmp_path / "reviews.csv", labels)
    RecordingProgress.calls.clear()
    first = _run(rows, base, models)
    assert RecordingProgress.calls[-1] == (2, 2)  # 14 training rows, batches of 8, one epoch: 2 optimiser steps
    model_dir = Path(first.params["model_path"])
    assert model_dir.parent == models and model_dir.name == f"tiny-{first.params['key']}"
    assert first.metrics["reused"] == 0.0 and first.metrics["train_rows"] == 14 and first.stage == "fine_tune"
    assert (model_dir / TRAINING_REPORT).is_file() and first.files["training_report"] == str(
        model_dir / TRAINING_REPORT
    )
    assert load_train_result(model_dir).id2label == {0: "neg", 1: "pos"}
    again = _run(_corpus(tmp_path / "copy.csv", labels), base, models)  # another file, the same bytes
    assert again.metrics["reused"] == 1.0 and again.params["model_path"] == str(model_dir)
    assert fine_tune_summary(again)["metrics"] == fine_tune_summary(first)["metrics"]

    changed_rows = _run(_corpus(tmp_path / "changed.csv", ["neg"] + labels[1:]), base, models)
    changed_settings = _run(rows, base, models, dataclasses.replace(CONFIG, seed=1))
    config = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps({**config, "xattr_note": "edited"}))
    changed_base = _run(rows, base, models)
    keys = {r.params["key"] for r in (first, changed_rows, changed_settings, changed_base)}
    assert len(keys) == 4
    assert all(r.metrics["reused"] == 0.0 for r in (changed_rows, changed_settings, changed_base))
    assert len(list(models.iterdir())) == 4


def test_artifact_rows_and_a_named_output_directory(tmp_path: Path) -> None:
    base = save_tiny_model(tmp_path / "base", num_labels=1)
    frame = pd.DataFrame(
        {
            "doc_id": [f"d{i}" for i in range(len(TEXTS))],
            "text": TEXTS,
            "text_pair": None,
            "label": [float(10 + i) for i in range(len(TEXTS))],
            "label_set": None,
            "group": None,
        }
    )
    ref = ArtifactStore(tmp_path / "artifacts", "run-0").write(
        "corpus", "prepare", "train", pa.Table.from_pandas(frame, preserve_index=False)
    )
    config = dataclasses.replace(CONFIG, log_target=True)
    with pytest.raises(ValueError, match="need a task"):
        _run(ref, base, tmp_path / "models", config)
    result = _run(ref, base, tmp_path / "models", config, task="regression", stage="train_price_model")
    summary = fine_tune_summary(result)
    assert result.stage == "train_price_model" and summary["train_rows"] == 14 and summary["validation_rows"] == 4
    assert {"r2", "rmse", "mape_price", "loss", "train_loss"} == set(summary["metrics"])
    out = tmp_path / "named"
    named = fine_tune_stage.fn(ref, base, config, task="regression", output_dir=str(out))
    assert named.params["model_path"] == str(out) and named.metrics["reused"] == 0.0
    with pytest.raises(FileExistsError, match="never overwritten"):
        fine_tune_stage.fn(ref, base, config, task="regression", output_dir=str(out))
    assert stage_module._cache_key(None, {"output_dir": str(out)}) is None
