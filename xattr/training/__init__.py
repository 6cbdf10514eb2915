"""Fine-tuning: one trainer (:func:`train_model`) for every task type.

``from xattr.training import train_model, TrainConfig, TrainingRows`` is all a caller needs. The
recipe's pieces (parameter groups, bias starts, schedule, hold-out split, atomic save, metrics) are
public in :mod:`xattr.training.recipe`, the corpus readers in :mod:`xattr.training.data`.
"""

from __future__ import annotations

from xattr.training.trainer import (
    TRAINING_REPORT,
    EpochRecord,
    LdavConfig,
    TrainConfig,
    TrainingRows,
    TrainResult,
    load_train_result,
    train_model,
)

__all__ = [
    "TRAINING_REPORT",
    "EpochRecord",
    "LdavConfig",
    "TrainConfig",
    "TrainResult",
    "TrainingRows",
    "load_train_result",
    "train_model",
]
