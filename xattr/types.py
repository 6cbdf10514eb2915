"""Type aliases shared across the library."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

#: How a model's output is read: one of the supported task types.
TaskName = Literal["classification", "pair_classification", "multi_label", "regression", "question_answering"]

#: How removed tokens are replaced when measuring faithfulness.
ReplacementPolicy = Literal["mask", "pad", "unk", "delete", "baseline"]

#: How a token's embedding-dimension vector becomes one score.
Reduction = Literal["sum_of_squares", "sum"]

#: ``progress(step, total_steps, loss)`` after every optimiser step of fine-tuning (``step`` from 1).
TrainingProgress = Callable[[int, int, float], None]
