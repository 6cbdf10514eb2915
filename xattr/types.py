"""Types shared across the library: aliases and the token-attribution result.

This module is the bottom layer of ``xattr``: it imports no other ``xattr`` module, so methods,
metrics and reporting can all name these types without importing each other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

#: How a model's output is read: one of the supported task types.
TaskName = Literal["classification", "pair_classification", "multi_label", "regression", "question_answering"]

#: How removed tokens are replaced when measuring faithfulness.
ReplacementPolicy = Literal["mask", "pad", "unk", "delete", "baseline"]

#: How a token's embedding-dimension vector becomes one score.
Reduction = Literal["sum_of_squares", "sum"]


@dataclass(frozen=True)
class TokenAttribution:
    """Scores of one text for one explained output.

    Attributes:
        position: The text's position in the corpus.
        target: The explained output index.
        scores: ``(n_tokens,)`` float64 scores, special tokens included.
    """

    position: int
    target: int
    scores: np.ndarray


#: ``progress(step, total_steps, loss)`` after every optimiser step of fine-tuning (``step`` from 1).
TrainingProgress = Callable[[int, int, float], None]
