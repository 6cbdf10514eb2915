"""Multi-label fine-tuning through the one trainer: multi-hot targets, frequency log-odds bias, micro-F1, a
tiny end-to-end run."""

from __future__ import annotations

import math

import numpy as np
import pytest

from xattr.models.loading import ModelSpec
from xattr.training.recipe import frequency_log_odds, multi_hot, multi_label_metrics
from xattr.training.trainer import TrainConfig, TrainingRows, train_model


def test_multi_hot_and_bad_label() -> None:
    assert multi_hot([[0, 2], [], [1]], 3).tolist() == [[1, 0, 1], [0, 0, 0], [0, 1, 0]]
    with pytest.raises(ValueError, match=r"label_sets\[1\] holds 3, outside 0..2"):
        multi_hot([[0], [3]], 3)


def test_frequency_log_odds_by_hand() -> None:
    targets = np.array([[1, 0], [1, 0], [0, 0]], dtype=np.float32)
    # The one bias start (Jeffreys): label 0: (2 + 0.5) / (3 + 1) = 0.625; label 1: 0.5 / 4 = 0.125.
    # (The removed fine_tune_multi_label used (k + 1) / (n + 2): 0.6 and 0.2.)
    assert frequency_log_odds(targets) == pytest.approx([math.log(0.625 / 0.375), math.log(0.125 / 0.875)])


def test_micro_f1_by_hand() -> None:
    logits = np.array([[1.0, -1.0, 2.0], [-1.0, 1.0, -1.0]])
    targets = np.array([[1, 1, 0], [0, 1, 0]], dtype=np.float32)
    # predicted {0, 2}, {1}; true {0, 1}, {1}: tp = 2, predicted 3, true 3 -> 4 / 6
    assert multi_label_metrics(logits > 0.0, targets > 0.5)["micro_f1"] == pytest.approx(4 / 6)
    assert multi_label_metrics(-np.ones((1, 2)) > 0.0, np.zeros((1, 2)) > 0.5)["micro_f1"] == 0.0


def test_tiny_multi_label_run_saves_a_multi_label_model(tiny_classifier_dir, tmp_path) -> None:
    texts = ["good film", "bad plot", "good plot", "bad film"] * 4
    labels = [[0], [1, 2], [0, 2], [1]] * 4
    rows = TrainingRows(texts, label_sets=labels)
    config = TrainConfig(epochs=1, batch_size=4, max_length=16, validation_fraction=0.25, patience=None)
    steps: list[tuple[int, int, float]] = []
    result = train_model(
        tiny_classifier_dir,
        rows,
        tmp_path / "ml",
        task="multi_label",
        num_labels=3,
        config=config,
        progress=lambda step, total, loss: steps.append((step, total, loss)),
    )
    # 12 train rows in batches of 4: three optimiser steps, each reported with its loss
    assert [(s, t) for s, t, _ in steps] == [(1, 3), (2, 3), (3, 3)]
    assert all(math.isfinite(loss) and loss > 0 for _, _, loss in steps)
    assert result.task == "multi_label" and result.train_rows == 12 and result.validation_rows == 4
    assert 0.0 <= result.metrics["micro_f1"] <= 1.0
    loaded = ModelSpec(str(tmp_path / "ml"), device="cpu").load()
    assert loaded.task == "multi_label" and loaded.num_outputs == 3
    with pytest.raises(FileExistsError):
        train_model(tiny_classifier_dir, rows, tmp_path / "ml", task="multi_label", num_labels=3)
