"""A model's predictions over a corpus as one table: outputs, probabilities, predicted and gold labels.

:func:`predictions_table` turns the outputs of one forward pass (``(n, num_outputs)`` logits, or
the regression value) into the rows of the ``predictions`` artifact; :func:`class_names` says
what each class is called: the model's ``id2label`` when it holds real names, else the names
the corpus gave, else the class index as text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import pyarrow as pa

from xattr.metrics.mape import to_quantity

__all__ = ["NameSource", "class_names", "predictions_table", "probabilities"]

#: Where :func:`class_names` took the names from.
NameSource = Literal["model", "corpus", "ids"]

_DEFAULT_NAME = re.compile(r"LABEL_(\d+)")


def class_names(
    id2label: Mapping[int, str], num_labels: int, corpus_names: Mapping[int, str] | None = None
) -> tuple[dict[int, str], NameSource]:
    """The name of each of the model's ``num_labels`` classes, and where the names came from.

    A config whose names are all Hugging Face's defaults (``LABEL_<index>``) names nothing; then
    the corpus' string labels (``corpus_names``, by class index) are used, and without those the
    index as text (``"0"``, ``"1"``, ...). A class the chosen source does not name gets its index.

    Args:
        id2label: The model config's ``id2label``.
        num_labels: The model's classes (or labels).
        corpus_names: Class names the corpus file gave, by class index.

    Returns:
        ``({index: name}, source)`` with ``source`` ``"model"``, ``"corpus"`` or ``"ids"``.
    """
    real = {
        int(k): str(v)
        for k, v in id2label.items()
        if not (m := _DEFAULT_NAME.fullmatch(str(v))) or int(m.group(1)) != int(k)
    }
    source: NameSource
    if real:
        names, source = dict(id2label), "model"
    elif corpus_names:
        names, source = dict(corpus_names), "corpus"
    else:
        names, source = {}, "ids"
    return {i: str(names.get(i, i)) for i in range(num_labels)}, source


def probabilities(logits: np.ndarray, task: str) -> np.ndarray | None:
    """Float64 softmax over the classes (classification), sigmoid per label (multi-label), else ``None``.

    Args:
        logits: ``(n, num_outputs)`` model outputs.
        task: The model's task.
    """
    z = np.asarray(logits, dtype=np.float64)
    if task == "classification":
        shifted = np.exp(z - z.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)  # type: ignore[no-any-return]
    if task == "multi_label":
        return 1.0 / (1.0 + np.exp(-z))  # type: ignore[no-any-return]
    return None


def _is_missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def predictions_table(
    doc_ids: Sequence[str],
    logits: np.ndarray,
    *,
    task: str,
    names: Mapping[int, str],
    labels: Sequence[float | None] | None = None,
    label_sets: Sequence[Sequence[int] | None] | None = None,
    output_transform: str = "identity",
) -> pa.Table:
    """The ``predictions`` rows of one corpus (columns as ``storage.schemas`` lists them).

    Classification: probabilities, the argmax class (the target ``predicted`` explains), its
    name and probability, and the gold class and name. Multi-label: per-label probabilities,
    the labels above 0.5 and the gold set, with names. Regression: the predicted value on the
    label's scale (``exp`` of a log-output model) and the gold value. Question answering: the
    outputs only (start then end logits).

    Args:
        doc_ids: The documents, in the order of ``logits``' rows.
        logits: ``(n, num_outputs)`` float outputs of one forward pass.
        task: The model's task.
        names: Class names by index (:func:`class_names`).
        labels: Gold class index or regression value per document (``None``/NaN: none).
        label_sets: Gold label indices per document (multi-label).
        output_transform: The regression output's transform (``"log"`` or ``"identity"``).

    Raises:
        ValueError: ``doc_ids`` and ``logits`` differ in length.
    """
    z = np.asarray(logits, dtype=np.float64)
    n = len(doc_ids)
    if z.shape[0] != n:
        raise ValueError(f"{n} documents but {z.shape[0]} rows of model outputs")
    columns: dict[str, pa.Array] = {
        "doc_id": pa.array(list(doc_ids), pa.string()),
        "logits": pa.array(list(z), pa.list_(pa.float64())),
    }
    gold_labels = list(labels) if labels is not None else [None] * n
    probs = probabilities(z, task)
    if probs is not None:
        columns["probabilities"] = pa.array(list(probs), pa.list_(pa.float64()))
    if task == "classification":
        predicted = np.argmax(z, axis=1)
        columns["predicted_id"] = pa.array(predicted, pa.int32())
        columns["predicted_label"] = pa.array([names[int(j)] for j in predicted], pa.string())
        columns["predicted_probability"] = pa.array(probs[np.arange(n), predicted] if n else [], pa.float64())
        gold = [None if _is_missing(v) else int(v) for v in gold_labels]  # type: ignore[arg-type]
        columns["gold_id"] = pa.array(gold, pa.int32())
        columns["gold_label"] = pa.array([None if g is None else names.get(g, str(g)) for g in gold], pa.string())
    elif task == "multi_label":
        on = [[int(j) for j in np.flatnonzero(row > 0.0)] for row in z]
        columns["predicted_ids"] = pa.array(on, pa.list_(pa.int32()))
        columns["predicted_labels"] = pa.array([[names[j] for j in row] for row in on], pa.list_(pa.string()))
        given = label_sets if label_sets is not None else [None] * n
        gold_sets = [None if s is None else [int(j) for j in s] for s in given]
        columns["gold_ids"] = pa.array(gold_sets, pa.list_(pa.int32()))
        columns["gold_labels"] = pa.array(
            [None if s is None else [names.get(j, str(j)) for j in s] for s in gold_sets], pa.list_(pa.string())
        )
    elif task == "regression":
        columns["predicted_value"] = pa.array(to_quantity(z[:, 0], output_transform) if n else [], pa.float64())
        values = [None if _is_missing(v) else float(v) for v in gold_labels]  # type: ignore[arg-type]
        columns["gold_value"] = pa.array(values, pa.float64())
    return pa.table(columns)
