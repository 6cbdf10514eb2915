"""Multi-label fine-tuning: multi-hot targets, frequency log-odds bias, micro-F1, a tiny end-to-end run."""

from __future__ import annotations

import math

import numpy as np
import pytest

from xattr.models.loading import ModelSpec
from xattr.training.finetune import FineTuneConfig
from xattr.training.multilabel import fine_tune_multi_label, frequency_log_odds, micro_f1, multi_hot


def test_multi_hot_and_bad_label() -> None:
    assert multi_hot([[0, 2], [], [1]], 3).tolist() == [[1, 0, 1], [0, 0, 0], [0, 1, 0]]
    with pytest.raises(ValueError, match=r"label_sets\[1\] holds 3, outside 0..2"):
        multi_hot([[0], [3]], 3)


def test_frequency_log_odds_by_hand() -> None:
    targets = np.array([[1, 0], [1, 0], [0, 0]], dtype=np.float32)
    # label 0: (2 + 1) / (3 + 2) = 0.6; label 1: 1 / 5 = 0.2
    assert frequency_log_odds(targets) == pytest.approx([math.log(0.6 / 0.4), math.log(0.2 / 0.8)])


def test_micro_f1_by_hand() -> None:
    logits = np.array([[1.0, -1.0, 2.0], [-1.0, 1.0, -1.0]])
    targets = np.array([[1, 1, 0], [0, 1, 0]], dtype=np.float32)
    # predicted {0, 2}, {1}; true {0, 1}, {1}: tp = 2, predicted 3, true 3 -> 4 / 6
    assert micro_f1(logits, targets) == pytest.approx(4 / 6)
    assert micro_f1(-np.ones((1, 2)), np.zeros((1, 2))) == 0.0


def test_tiny_multi_label_run_saves_a_multi_label_model(tiny_classifier_dir, tmp_path) -> None:
    texts = ["good film", "bad plot", "good plot", "bad film"] * 4
    labels = [[0], [1, 2], [0, 2], [1]] * 4
    steps: list[tuple[int, int, float]] = []
    result = fine_tune_multi_label(
        tiny_classifier_dir,
        texts,
        labels,
        tmp_path / "ml",
        num_labels=3,
        config=FineTuneConfig(epochs=1, batch_size=4, max_length=16, validation_fraction=0.25),
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
        fine_tune_multi_label(tiny_classifier_dir, texts, labels, tmp_path / "ml", num_labels=3)
