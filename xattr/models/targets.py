"""Which output each explanation explains."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from xattr.types import TaskName

TargetPolicy = Literal["predicted", "label"]


def resolve_targets(
    task: TaskName,
    logits: np.ndarray,
    *,
    policy: TargetPolicy = "predicted",
    labels: Sequence[float | None] | None = None,
    label_sets: Sequence[Sequence[int] | None] | None = None,
) -> list[list[int]]:
    """Output indices to explain for each text.

    Classification explains the predicted class (``policy="predicted"``) or the given label;
    multi-label explains each predicted label (each with its own backward pass; the top one when
    none passes 0.5) or each given label; regression explains output 0.

    Args:
        task: The task type.
        logits: ``(n, num_outputs)`` model outputs.
        policy: ``"predicted"`` or ``"label"``.
        labels: Per text, the class index (single-label tasks) when ``policy="label"``.
        label_sets: Per text, the label indices (multi-label) when ``policy="label"``.

    Returns:
        Per text, the list of output indices to explain.

    Raises:
        ValueError: ``policy="label"`` without labels, or a label outside the model's outputs.
    """
    n, k = logits.shape
    if task == "regression":
        return [[0] for _ in range(n)]
    if policy == "predicted":
        if task == "multi_label":
            chosen = []
            for row in logits:
                on = [int(j) for j in np.flatnonzero(row > 0.0)]
                chosen.append(on or [int(np.argmax(row))])
            return chosen
        return [[int(j)] for j in np.argmax(logits, axis=1)]
    if task == "multi_label":
        if label_sets is None:
            raise ValueError("target policy 'label' needs label sets for a multi-label task")
        out = []
        for i, labs in enumerate(label_sets):
            if labs is None or len(labs) == 0:
                raise ValueError(f"row {i}: no labels to explain under target policy 'label'")
            out.append(_checked(list(labs), k, i))
        return out
    if labels is None:
        raise ValueError("target policy 'label' needs a label column")
    out = []
    for i, lab in enumerate(labels):
        if lab is None or (isinstance(lab, float) and np.isnan(lab)):
            raise ValueError(f"row {i}: label is missing under target policy 'label'")
        out.append(_checked([int(lab)], k, i))
    return out


def _checked(indices: list[int], k: int, row: int) -> list[int]:
    for j in indices:
        if not 0 <= j < k:
            raise ValueError(f"row {row}: label {j} is outside the model's {k} outputs")
    return indices
