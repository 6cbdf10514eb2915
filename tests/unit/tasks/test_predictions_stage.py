"""The encode stage's ``predictions`` artifact against direct per-text model calls, and the stages that read it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from prefect.logging import disable_run_logger
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import tasks.attribute
import tasks.encode_corpus
from storage import read_artifact
from tasks.attribute import attribute_stage
from tasks.encode_corpus import encode_corpus_stage
from tasks.load_corpus import load_corpus_stage
from tasks.results import RunContext
from tests.conftest import RecordingProgress, save_tiny_model
from xattr.data.corpus import CorpusColumns
from xattr.models.loading import ModelSpec

TEXTS = ["the movie was great", "bad acting and a boring plot", "not fun", "very good film", "awful plot", "boring"]


@pytest.fixture(autouse=True)
def quiet_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tasks.encode_corpus, "StageProgress", RecordingProgress)
    monkeypatch.setattr(tasks.attribute, "StageProgress", RecordingProgress)


@pytest.fixture(scope="module")
def named_classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(
        tmp_path_factory.mktemp("named"),
        num_labels=2,
        seed=3,
        id2label={0: "negative", 1: "positive"},
        label2id={"negative": 0, "positive": 1},
    )


def _direct_logits(model_dir: Path, texts: list[str]) -> np.ndarray:
    """One text at a time (no padding), straight through transformers, in float64."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    with torch.no_grad():
        return np.stack([model(**tokenizer(t, return_tensors="pt")).logits[0].double().numpy() for t in texts])


def _corpus(tmp_path: Path, labels: list[object], model_dir: Path) -> tuple[object, RunContext, ModelSpec]:
    path = tmp_path / "corpus.csv"
    pd.DataFrame({"id": [f"d{i}" for i in range(len(TEXTS))], "text": TEXTS, "label": labels}).to_csv(path, index=False)
    context = RunContext(tmp_path / "artifacts", "run")
    spec = ModelSpec(str(model_dir))
    columns = CorpusColumns(text="text", id="id", label="label")
    corpus = load_corpus_stage.fn(path, columns, spec, "error", "error", context).refs["corpus"]
    return corpus, context, spec


def test_predictions_equal_a_float64_softmax_of_direct_model_logits(tmp_path: Path, named_classifier: Path) -> None:
    gold = ["negative", "positive", "positive", "negative", "negative", "positive"]
    with disable_run_logger():
        corpus, context, spec = _corpus(tmp_path, gold, named_classifier)
        encoded = encode_corpus_stage.fn(corpus, spec, -1, 4, context)
    assert read_artifact(corpus).column("label_name").to_pylist() == gold  # the class name, not 0.0 / 1.0
    frame = read_artifact(encoded.refs["predictions"]).to_pandas()
    logits = _direct_logits(named_classifier, TEXTS)
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    assert frame["doc_id"].tolist() == [f"d{i}" for i in range(len(TEXTS))]
    # Batched and padded vs one text at a time: float32 sums differ in the last bits only.
    np.testing.assert_allclose(np.stack(frame["logits"]), logits, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.stack(frame["probabilities"]), expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(frame["predicted_id"], expected.argmax(axis=1))
    assert frame["predicted_label"].tolist() == [["negative", "positive"][j] for j in expected.argmax(axis=1)]
    np.testing.assert_allclose(frame["predicted_probability"], expected.max(axis=1), rtol=1e-5)
    assert frame["gold_label"].tolist() == gold and frame["gold_id"].tolist() == [int(g == "positive") for g in gold]


def test_default_label_names_fall_back_to_ids_and_attribute_explains_the_stored_prediction(
    tmp_path: Path, tiny_classifier_dir: Path
) -> None:
    labels = [i % 2 for i in range(len(TEXTS))]
    with disable_run_logger():
        corpus, context, spec = _corpus(tmp_path, labels, tiny_classifier_dir)
        predictions = encode_corpus_stage.fn(corpus, spec, -1, 8, context).refs["predictions"]
        attributed = attribute_stage.fn(
            corpus, spec, "simple_grad", "simple_grad", {}, "predicted", 8, context, predictions=predictions
        )
        with pytest.raises(ValueError, match="attribute-simple_grad: the explained outputs depend on the model"):
            attribute_stage.fn(corpus, spec, "simple_grad", "simple_grad", {}, "predicted", 8, context)
    frame = read_artifact(predictions).to_pandas()
    assert frame["gold_label"].tolist() == [str(v) for v in labels]  # LABEL_0/LABEL_1 name nothing
    assert read_artifact(corpus).column("label_name").to_pylist() == [str(v) for v in labels]
    predicted = _direct_logits(tiny_classifier_dir, TEXTS).argmax(axis=1)
    assert frame["predicted_label"].tolist() == [str(j) for j in predicted]
    targets = read_artifact(attributed.refs["attributions"]).to_pandas().groupby("doc_id")["target"].first()
    assert [int(targets[f"d{i}"]) for i in range(len(TEXTS))] == predicted.tolist()
