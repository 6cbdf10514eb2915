"""train_model: early stopping keeps the best epoch, pairs and multi-label train, metrics equal sklearn, the
device comes from pick_device, a held-out fraction equals the same rows given, the training report."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch.nn import functional as F

from tests.conftest import save_tiny_model
from xattr.models.encoding import encode_texts
from xattr.models.forward import predict_logits
from xattr.models.loading import load_model
from xattr.training.recipe import classification_metrics, holdout_split, multi_label_metrics
from xattr.training.trainer import TrainConfig, TrainingRows, load_train_result, train_model

TEXTS = ["good fun movie", "bad boring plot", "great acting", "awful film", "very good", "really bad"] * 4
LABELS = [0, 1, 0, 1, 0, 1] * 4


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("base"), num_labels=2)


def test_early_stopping_stops_and_keeps_the_best_epoch(base: Path, tmp_path: Path) -> None:
    # min_delta is larger than any possible improvement: only epoch 1 ever counts as best
    config = TrainConfig(epochs=6, batch_size=8, max_length=16, patience=2, min_delta=100.0, learning_rate=1e-3)
    validation = TrainingRows(TEXTS[:6], labels=LABELS[:6])
    result = train_model(
        base,
        TrainingRows(TEXTS, labels=LABELS),
        tmp_path / "m",
        task="classification",
        num_labels=2,
        validation=validation,
        config=config,
    )
    assert (result.epochs_run, result.best_epoch, result.stopped_early) == (3, 1, True)
    assert len(result.history) == 3
    loaded = load_model(tmp_path / "m", device="cpu")
    logits = predict_logits(loaded, encode_texts(loaded.tokenizer, validation.texts, max_length=16))
    loss = F.cross_entropy(torch.tensor(logits), torch.tensor(validation.labels)).item()
    assert loss == pytest.approx(result.history[0].validation["loss"], abs=1e-5)
    assert result.metrics == result.history[0].validation


def test_without_patience_every_epoch_runs(base: Path, tmp_path: Path) -> None:
    config = TrainConfig(epochs=2, batch_size=8, max_length=16, patience=None)
    result = train_model(
        base, TrainingRows(TEXTS, labels=LABELS), tmp_path / "m", task="classification", num_labels=2, config=config
    )
    assert (result.epochs_run, result.best_epoch, result.stopped_early, result.metrics) == (2, 2, False, {})


def test_pair_and_multi_label_models_are_saved_with_their_task(tmp_path: Path) -> None:
    base3 = save_tiny_model(tmp_path / "base3", num_labels=3)
    config = TrainConfig(epochs=1, batch_size=8, max_length=24, patience=None)
    pairs = TrainingRows(TEXTS, pairs=list(reversed(TEXTS)), labels=LABELS)
    result = train_model(
        base3, pairs, tmp_path / "pair", task="pair_classification", num_labels=2, validation=pairs, config=config
    )
    assert load_model(result.output_dir, device="cpu").task == "pair_classification"
    sets = [[0, 2] if y == 0 else [1] for y in LABELS]
    multi = TrainingRows(TEXTS, label_sets=sets)
    result = train_model(
        base3,
        multi,
        tmp_path / "multi",
        task="multi_label",
        num_labels=3,
        validation=multi,
        config=config,
        id2label={0: "a", 1: "b", 2: "c"},
    )
    loaded = load_model(result.output_dir, device="cpu")
    assert loaded.task == "multi_label" and loaded.id2label == {0: "a", 1: "b", 2: "c"}
    assert set(result.metrics) == {"loss", "micro_f1", "macro_f1"}


def test_bad_rows_are_named(base: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="training row 2: class 5.0 is not an index in 0..1"):
        train_model(base, TrainingRows(["a", "b"], labels=[0, 5]), tmp_path / "x", task="classification", num_labels=2)
    with pytest.raises(ValueError, match="pair_classification needs a second text"):
        train_model(
            base, TrainingRows(["a", "b"], labels=[0, 1]), tmp_path / "x", task="pair_classification", num_labels=2
        )
    (tmp_path / "exists").mkdir()
    with pytest.raises(FileExistsError, match="never overwritten"):
        train_model(
            base, TrainingRows(["a", "b"], labels=[0, 1]), tmp_path / "exists", task="classification", num_labels=2
        )


def test_metrics_equal_sklearn() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    gold, predicted = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
    ours = classification_metrics(predicted, gold, 4)
    assert ours["accuracy"] == pytest.approx(metrics.accuracy_score(gold, predicted), abs=1e-12)
    assert ours["macro_f1"] == pytest.approx(metrics.f1_score(gold, predicted, average="macro"), abs=1e-12)
    dummy = pytest.importorskip("sklearn.dummy").DummyClassifier(strategy="most_frequent").fit(gold[:, None], gold)
    assert ours["majority_class"] == float(dummy.predict(gold[:1, None])[0])
    assert ours["majority_accuracy"] == pytest.approx(dummy.score(gold[:, None], gold), abs=1e-12)
    gold_m, predicted_m = rng.random((50, 5)) > 0.6, rng.random((50, 5)) > 0.5
    ours_m = multi_label_metrics(predicted_m, gold_m)
    assert ours_m["micro_f1"] == pytest.approx(metrics.f1_score(gold_m, predicted_m, average="micro"), abs=1e-12)
    assert ours_m["macro_f1"] == pytest.approx(metrics.f1_score(gold_m, predicted_m, average="macro"), abs=1e-12)


def test_majority_class_by_hand() -> None:
    # gold 2, 2, 0, 0, 1: classes 0 and 2 tie at 2 of 5; the lower index is the majority class.
    ours = classification_metrics(np.array([2, 2, 2, 2, 2]), np.array([2, 2, 0, 0, 1]), 3)
    assert ours["majority_class"] == 0.0 and ours["majority_accuracy"] == pytest.approx(0.4)
    assert ours["accuracy"] == pytest.approx(0.4)


def test_holdout_split_is_seeded_and_disjoint() -> None:
    train, validation = holdout_split(100, 0.2, seed=3)
    assert len(validation) == 20 and not set(train) & set(validation) and len(train) + len(validation) == 100
    assert np.array_equal(validation, holdout_split(100, 0.2, seed=3)[1])


def test_train_model_picks_the_device_with_pick_device(base: Path, tmp_path: Path, monkeypatch) -> None:
    import xattr.training.trainer as trainer_module

    asked: list[str | None] = []

    def spy(requested: str | None = None) -> torch.device:
        asked.append(requested)
        return torch.device("cpu")

    monkeypatch.setattr(trainer_module, "pick_device", spy)
    config = TrainConfig(epochs=1, batch_size=8, max_length=16, patience=None, device="auto")
    train_model(
        base, TrainingRows(TEXTS, labels=LABELS), tmp_path / "m", task="classification", num_labels=2, config=config
    )
    assert asked == ["auto"]


def test_validation_fraction_equals_the_same_rows_given(base: Path, tmp_path: Path) -> None:
    rows = TrainingRows(TEXTS, labels=LABELS)
    config = TrainConfig(epochs=2, batch_size=8, max_length=16, patience=None, seed=4)
    held = train_model(
        base,
        rows,
        tmp_path / "held",
        task="classification",
        num_labels=2,
        config=dataclasses.replace(config, validation_fraction=0.25, split_seed=7),
    )
    train_idx, val_idx = holdout_split(len(rows), 0.25, seed=7)
    given = train_model(
        base,
        rows.subset(train_idx),
        tmp_path / "given",
        task="classification",
        num_labels=2,
        validation=rows.subset(val_idx),
        config=config,
    )
    assert (held.train_rows, held.validation_rows) == (18, 6) and held.metrics == given.metrics
    first, second = (
        load_file(tmp_path / "held" / "model.safetensors"),
        load_file(tmp_path / "given" / "model.safetensors"),
    )
    assert all(torch.equal(first[k], second[k]) for k in first)
    with pytest.raises(ValueError, match="not both"):
        train_model(
            base,
            rows,
            tmp_path / "both",
            task="classification",
            num_labels=2,
            validation=rows,
            config=dataclasses.replace(config, validation_fraction=0.25),
        )


def test_training_report_round_trips_and_question_answering_is_refused(base: Path, tmp_path: Path) -> None:
    config = TrainConfig(epochs=2, batch_size=8, max_length=16, patience=None, validation_fraction=0.25)
    result = train_model(
        base,
        TrainingRows(TEXTS, labels=LABELS),
        tmp_path / "m",
        task="classification",
        num_labels=2,
        id2label={0: "pos", 1: "neg"},
        config=config,
    )
    assert load_train_result(tmp_path / "m") == result
    assert result.num_labels == 2 and result.id2label == {0: "pos", 1: "neg"}
    assert result.train_loss == result.history[result.best_epoch - 1].train_loss
    with pytest.raises(ValueError, match="does not train question-answering"):
        train_model(base, TrainingRows(TEXTS, labels=LABELS), tmp_path / "qa", task="question_answering", num_labels=2)
