from __future__ import annotations

import math

import numpy as np
import pytest

from xattr.models.targets import resolve_targets

LOGITS = np.array([[0.1, 2.0, -1.0], [3.0, -2.0, 0.5], [-1.0, -0.5, -3.0]])


def test_predicted_class_for_single_label_tasks() -> None:
    assert resolve_targets("classification", LOGITS) == [[1], [0], [1]]
    assert resolve_targets("pair_classification", LOGITS) == [[1], [0], [1]]


def test_each_predicted_label_for_multi_label_and_the_top_one_when_none() -> None:
    assert resolve_targets("multi_label", LOGITS) == [[0, 1], [0, 2], [1]]


def test_regression_explains_its_single_output() -> None:
    assert resolve_targets("regression", np.array([[1.5], [2.0]])) == [[0], [0]]


def test_given_labels() -> None:
    assert resolve_targets("classification", LOGITS, policy="label", labels=[2.0, 2.0, 0.0]) == [[2], [2], [0]]
    assert resolve_targets("multi_label", LOGITS, policy="label", label_sets=[[2], [0, 1], [1]]) == [[2], [0, 1], [1]]


def test_bad_labels_name_the_row() -> None:
    with pytest.raises(ValueError, match="row 1: label is missing"):
        resolve_targets("classification", LOGITS, policy="label", labels=[1.0, math.nan, 0.0])
    with pytest.raises(ValueError, match="row 2: label 7 is outside the model's 3 outputs"):
        resolve_targets("classification", LOGITS, policy="label", labels=[1.0, 1.0, 7.0])
    with pytest.raises(ValueError, match="needs a label column"):
        resolve_targets("classification", LOGITS, policy="label")
