"""Which metric applies to which task, and the decision rule used by label-based metrics."""

from __future__ import annotations

import numpy as np

#: Metric family -> the task types it is defined for.
APPLIES_TO: dict[str, frozenset[str]] = {
    "aopc": frozenset({"classification", "pair_classification", "multi_label", "regression", "question_answering"}),
    "log_odds": frozenset({"classification", "pair_classification", "multi_label", "regression", "question_answering"}),
    "degradation": frozenset({"classification", "pair_classification", "multi_label", "regression"}),
    "switching_point": frozenset({"classification", "pair_classification", "multi_label"}),
    "mape": frozenset({"regression"}),
    "gold_auc": frozenset({"classification", "pair_classification", "multi_label", "regression"}),
    "gold_pearson": frozenset({"classification", "pair_classification", "multi_label", "regression"}),
    # Mask-LRP Sec. 5.1: top-20 tokens against the answer span of extractive QA.
    "precision_at_20": frozenset({"question_answering"}),
}


class MetricNotApplicableError(ValueError):
    """A metric was asked for a task it is not defined for (e.g. switching point on a regressor)."""


def require_task(metric: str, task: str) -> None:
    """Raise :class:`MetricNotApplicableError` unless ``metric`` is defined for ``task``.

    Raises:
        MetricNotApplicableError: Unknown metric, or the task is not one it applies to.
    """
    if metric not in APPLIES_TO:
        raise MetricNotApplicableError(f"unknown metric {metric!r}; known: {', '.join(sorted(APPLIES_TO))}")
    if task not in APPLIES_TO[metric]:
        raise MetricNotApplicableError(
            f"metric {metric!r} does not apply to a {task} model; "
            f"it applies to: {', '.join(sorted(APPLIES_TO[metric]))}"
        )


def decision(outputs: np.ndarray, target: int, task: str) -> int:
    """The model's discrete decision for one text, as the label metrics compare it.

    Single-label (and pair) classification: the arg-max class. Multi-label: whether the explained
    label ``target`` is predicted (logit > 0, i.e. sigmoid > 0.5), as 1 or 0.

    Args:
        outputs: ``(n_outputs,)`` logits of one text.
        target: The explained output.
        task: The model's task.

    Raises:
        MetricNotApplicableError: For regression (no discrete decision).
    """
    if task == "regression":
        raise MetricNotApplicableError("a regression model has no predicted class")
    if task == "multi_label":
        return int(outputs[target] > 0.0)
    return int(np.argmax(outputs))
