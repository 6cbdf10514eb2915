"""Fine-tuning: one trainer (:func:`train_model`) for every task type, and its recipe's pieces.

``from xattr.training import train_model, TrainConfig, TrainingRows`` is all a caller needs; the
recipe (:mod:`xattr.training.recipe`) and the corpus readers (:mod:`xattr.training.data`) are
public for callers that assemble their own rows.
"""

from __future__ import annotations

from xattr.training.data import LabelledCorpus, class_count, labelled_corpus, rows_of
from xattr.training.recipe import (
    class_log_priors,
    classification_metrics,
    fold_target_standardisation,
    frequency_log_odds,
    holdout_split,
    init_head_bias,
    multi_hot,
    multi_label_metrics,
    output_layer,
    parameter_groups,
    quiet_transformers,
    refuse_existing,
    regression_metrics,
    save_atomically,
    seeded,
    warmup_linear_decay,
)
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
    "LabelledCorpus",
    "LdavConfig",
    "TrainConfig",
    "TrainResult",
    "TrainingRows",
    "class_count",
    "class_log_priors",
    "classification_metrics",
    "fold_target_standardisation",
    "frequency_log_odds",
    "holdout_split",
    "init_head_bias",
    "labelled_corpus",
    "load_train_result",
    "multi_hot",
    "multi_label_metrics",
    "output_layer",
    "parameter_groups",
    "quiet_transformers",
    "refuse_existing",
    "regression_metrics",
    "rows_of",
    "save_atomically",
    "seeded",
    "train_model",
    "warmup_linear_decay",
]
