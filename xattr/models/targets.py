"""Which output each explanation explains."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

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
    none passes 0.5) or each given label; regression explains output 0; extractive question
    answering explains the predicted span, as one :func:`span_target` per text.

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
    if task == "question_answering":
        if policy == "label":
            raise ValueError(
                "question answering explains the predicted answer span; target policy 'label' is not supported "
                "(gold answer spans are used by Precision@k, not as targets)"
            )
        return [[span_target(start, end, k // 2)] for start, end in predicted_spans(logits)]
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


def predicted_spans(logits: np.ndarray) -> list[tuple[int, int]]:
    """Predicted answer span ``(start, end)`` token positions of an extractive QA model, per text.

    The start is the argmax of the start logits; the end is the argmax of the end logits at
    positions ``>= start``, so the span is never empty or reversed.

    Args:
        logits: ``(n, 2 * max_length)`` outputs of :func:`xattr.models.forward.output_logits`.
    """
    width = logits.shape[1] // 2
    spans = []
    for row in logits:
        start = int(np.argmax(row[:width]))
        end = start + int(np.argmax(row[width + start :]))
        spans.append((start, end))
    return spans


def span_target(start: int, end: int, max_length: int) -> int:
    """One target index for an answer span: ``start * max_length + end``.

    A question-answering text is explained once, for its span: the explanation of a span is the
    explanation of the start logit plus the explanation of the end logit, each computed with the
    same method (Mask-LRP Section 5.1 attributes "the start and end answer indices");
    :func:`span_output_indices` gives the two output indices that the runner explains and sums.
    """
    if not 0 <= start <= end < max_length:
        raise ValueError(f"answer span ({start}, {end}) is not inside 0..{max_length - 1} with start <= end")
    return start * max_length + end


def decode_span_target(target: int, max_length: int) -> tuple[int, int]:
    """``(start, end)`` token positions of a target made by :func:`span_target`."""
    return int(target) // max_length, int(target) % max_length


def span_output_indices(targets: Any, max_length: int) -> tuple[Any, Any]:
    """Output indices (into ``output_logits``) of the start and the end logit of span targets.

    Args:
        targets: Span targets (an int tensor or array of any shape).
        max_length: The model's ``max_length``.

    Returns:
        ``(start outputs, end outputs)``: ``start`` and ``max_length + end``, same type and shape.
    """
    return targets // max_length, max_length + targets % max_length
