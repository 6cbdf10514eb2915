"""``xattr.reporting.predictions``: class names and the predictions rows per task, against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from xattr.reporting.predictions import class_names, predictions_table


def test_class_names_prefer_real_model_names_then_corpus_names_then_ids() -> None:
    assert class_names({0: "World", 1: "Sports"}, 2) == ({0: "World", 1: "Sports"}, "model")
    assert class_names({0: "LABEL_0", 1: "LABEL_1"}, 2, {1: "pos"}) == ({0: "0", 1: "pos"}, "corpus")
    assert class_names({0: "LABEL_0", 1: "LABEL_1"}, 3) == ({0: "0", 1: "1", 2: "2"}, "ids")
    assert class_names({}, 2) == ({0: "0", 1: "1"}, "ids")
    # LABEL_1 at index 0 is a name someone chose, not the default.
    assert class_names({0: "LABEL_1", 1: "LABEL_0"}, 2)[1] == "model"


def test_multi_label_rows_use_a_sigmoid_per_label_and_the_labels_above_one_half() -> None:
    logits = np.array([[2.0, -1.0, 0.5], [-3.0, -0.1, -2.0]])
    table = predictions_table(
        ["a", "b"], logits, task="multi_label", names={0: "x", 1: "y", 2: "z"}, label_sets=[[0, 2], None]
    ).to_pylist()
    assert table[0]["probabilities"] == pytest.approx([1 / (1 + math.exp(-v)) for v in logits[0]], abs=1e-15)
    assert table[0]["predicted_ids"] == [0, 2] and table[0]["predicted_labels"] == ["x", "z"]
    assert table[1]["predicted_ids"] == [] and table[1]["gold_ids"] is None
    assert table[0]["gold_labels"] == ["x", "z"] and "predicted_id" not in table[0]


def test_regression_rows_give_the_value_on_the_label_scale() -> None:
    logits = np.array([[math.log(20.0)], [math.log(5.0)]])
    rows = predictions_table(
        ["a", "b"], logits, task="regression", names={}, labels=[21.0, float("nan")], output_transform="log"
    ).to_pylist()
    assert rows[0]["predicted_value"] == pytest.approx(20.0, rel=1e-12) and rows[0]["gold_value"] == 21.0
    assert rows[1]["gold_value"] is None and "probabilities" not in rows[0]


def test_rows_and_outputs_must_match() -> None:
    with pytest.raises(ValueError, match="2 documents but 1 rows"):
        predictions_table(["a", "b"], np.zeros((1, 2)), task="classification", names={0: "0", 1: "1"})
