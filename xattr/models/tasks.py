"""Task types: how a model's output is read and which output is explained."""

from __future__ import annotations

from typing import Any

from xattr.types import TaskName

TASKS: tuple[TaskName, ...] = (
    "classification",
    "pair_classification",
    "multi_label",
    "regression",
    "question_answering",
)


def infer_task(config: Any, requested: str | None = None) -> TaskName:
    """Decide the task type of a sequence-classification model.

    The explicit request wins when it is consistent with the model; otherwise the model's
    ``xattr_task`` or ``problem_type`` config key decides, then ``num_labels`` (1 means regression).

    Args:
        config: A Hugging Face ``PretrainedConfig``.
        requested: A task name from :data:`TASKS`, or ``None`` to infer it.

    Returns:
        The task name.

    Raises:
        ValueError: Unknown task name, or one that contradicts the model (regression with
            several outputs, classification with one).
    """
    num_labels = int(getattr(config, "num_labels", 0) or 0)
    if requested == "question_answering" or (requested is None and is_question_answering(config)):
        # Extractive QA: start and end logits per token (see xattr.models.targets for the targets).
        return "question_answering"
    if requested is not None:
        if requested not in TASKS:
            raise ValueError(f"unknown task {requested!r}; valid tasks: {', '.join(TASKS)}")
        if requested == "regression" and num_labels != 1:
            raise ValueError(f"task 'regression' needs a model with one output, this one has {num_labels}")
        if requested != "regression" and num_labels < 2:
            raise ValueError(f"task {requested!r} needs a model with at least two outputs, this one has {num_labels}")
        return requested  # type: ignore[return-value]
    declared = getattr(config, "xattr_task", None)
    if declared in TASKS:
        return declared  # type: ignore[no-any-return]
    problem_type = getattr(config, "problem_type", None)
    if problem_type == "regression" or num_labels == 1:
        return "regression"
    if problem_type == "multi_label_classification":
        return "multi_label"
    return "classification"


def is_question_answering(config: Any) -> bool:
    """Whether the config declares an extractive question-answering head (``*ForQuestionAnswering``)."""
    architectures = getattr(config, "architectures", None) or []
    return getattr(config, "xattr_task", None) == "question_answering" or any(
        str(a).endswith("ForQuestionAnswering") for a in architectures
    )
