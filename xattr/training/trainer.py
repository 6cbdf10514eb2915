"""Fine-tune an encoder for any xattr task: the one training loop of the library.

Every task type trains here: single-label classification, sentence pairs, multi-label
classification and regression (question answering is not trained: see :func:`train_model`). The
recipe's pieces are public in :mod:`xattr.training.recipe`: AdamW with the head and pooler at a
higher learning rate, linear warm-up and decay, gradient clipping, output biases started at the
training priors, seeded everything. Validation rows (given, or a seeded ``validation_fraction`` of
the training rows) are evaluated after every epoch; training stops when the validation task loss has
not improved by ``min_delta`` for ``patience`` epochs, and the best epoch's weights are saved,
atomically, with a training report (:data:`TRAINING_REPORT`, read back by :func:`load_train_result`).

With ``ldav.enabled`` (classification and pair classification), ``k`` class vectors ``z_j`` in the
input word-embedding space are trained jointly with the classifier under ``L = L1 + L2 - L3``
(LDAV paper, Section 3.1; :mod:`xattr.ldav.losses`) and saved next to the model
(:mod:`xattr.ldav.vectors`). Early stopping monitors ``L1`` alone: ``-L3`` has no lower bound, so the
full objective keeps falling while the vectors drift apart.

Example:
    >>> result = train_model(base_dir, TrainingRows(texts, labels=prices), "models/price",
    ...                      task="regression", num_labels=1,
    ...                      config=TrainConfig(log_target=True, validation_fraction=0.1))  # doctest: +SKIP
    >>> result.metrics["r2"]  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from xattr.device import pick_device
from xattr.ldav.losses import Distance, ldav_loss_terms, pooled_input_embeddings
from xattr.ldav.vectors import LdavVectors
from xattr.training.recipe import (
    classification_metrics,
    fold_target_standardisation,
    holdout_split,
    init_head_bias,
    multi_hot,
    multi_label_metrics,
    parameter_groups,
    quiet_transformers,
    refuse_existing,
    regression_metrics,
    save_atomically,
    seeded,
    warmup_linear_decay,
)
from xattr.types import TaskName, TrainingProgress

logger = logging.getLogger(__name__)

#: The training report saved in every model directory: :meth:`TrainResult.to_dict` as JSON.
TRAINING_REPORT = "xattr_training.json"

_PROBLEM_TYPES: dict[str, str] = {
    "classification": "single_label_classification",
    "pair_classification": "single_label_classification",
    "multi_label": "multi_label_classification",
    "regression": "regression",
}


@dataclass(frozen=True)
class LdavConfig:
    """LDAV training (LDAV paper Section 3.1, Appendix C).

    The paper gives no values for ``rho1`` and ``rho2`` ("we have tried different values"); the
    defaults weigh ``L2`` like the cross-entropy and keep ``L3`` small, because ``-L3`` is unbounded
    below. Its Adam learning rate was 1e-4 (Section 4.1), the default for the vectors here.

    Measured (bench/ldav_ag_news.py, MiniLM, 1,500 AG News texts, 1 epoch, loaded 2-core machine):
    with these defaults the class vectors stay close to their start (pairwise correlation
    0.93-0.97) and LDAV token scores had AOPC 0.022 against 0.052 for random scores; with
    ``rho2=1, learning_rate=1e-3`` the vectors decorrelate (-0.15..0.32, as in Figure 8), concept
    scores become plausible ("football match" -> Sports, "stock market" -> Business), but token
    AOPC stayed at 0.027. Accuracy and macro-F1 were unchanged in both (0.863 / 0.860). On a tiny
    random BERT trained from scratch, ``vector_class="predicted"`` kept the classifier at chance
    (the early predictions are one class, so ``L2`` pulls every text towards one vector) while
    ``"label"`` learned the task.

    Attributes:
        enabled: Train class vectors with the classifier.
        rho1: Weight of ``L2`` (text vector to its class's vector).
        rho2: Weight of ``L3`` (pairwise squared distance between class vectors, subtracted).
        distance: ``L2``'s distance: ``cosine`` (Appendix C's choice) or ``euclidean``.
        vector_class: ``predicted`` (the paper: the predicted class's vector) or ``label`` (gold).
        learning_rate: AdamW learning rate of the class vectors (no weight decay).
        layer: ``None`` (the paper): text and class vectors live in the input word-embedding space;
            a hidden layer ``l`` (1 = first encoder layer's output) pools that layer's token
            states instead (issue 18: fine-tuning barely moves the input embeddings).
    """

    enabled: bool = False
    rho1: float = 1.0
    rho2: float = 0.01
    distance: Distance = "cosine"
    vector_class: Literal["predicted", "label"] = "predicted"
    learning_rate: float = 1e-4
    layer: int | None = None

    def __post_init__(self) -> None:
        for name in ("rho1", "rho2"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"LdavConfig.{name} must be finite and >= 0, got {value!r}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(f"LdavConfig.learning_rate must be > 0, got {self.learning_rate!r}")
        if self.distance not in ("cosine", "euclidean"):
            raise ValueError(f"LdavConfig.distance must be cosine or euclidean, got {self.distance!r}")
        if self.vector_class not in ("predicted", "label"):
            raise ValueError(f"LdavConfig.vector_class must be predicted or label, got {self.vector_class!r}")
        if self.layer is not None and (
            isinstance(self.layer, bool) or not isinstance(self.layer, int) or self.layer < 1
        ):
            raise ValueError(f"LdavConfig.layer must be a hidden layer >= 1 or None, got {self.layer!r}")


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of :func:`train_model`.

    The optimiser defaults were measured on all-MiniLM-L6-v2 with 3,000 synthetic catalogue
    listings (``generate_catalogue(3000)``, ``log_target=True``, 2 epochs, ``max_length=48``): 170
    steps of ~0.51 s on two idle CPU cores, validation R^2 on log price 0.934 (seed 0) and 0.947
    (seed 1). A third epoch did not help (0.931); 2,000 listings gave 0.919 in 60 s.

    Attributes:
        epochs: Most passes over the training rows.
        batch_size: Rows per optimiser step.
        learning_rate: AdamW learning rate of the encoder.
        head_learning_rate: AdamW learning rate of the head and pooler (10x: METHOD-NOTES).
        embedding_learning_rate: AdamW learning rate of the word-embedding matrix (``None``: the
            encoder's); a larger one lets LDAV's input-space vectors move the embeddings (issue 18).
        weight_decay: AdamW weight decay (not on biases, LayerNorm weights or LDAV vectors).
        warmup_fraction: Fraction of the planned steps with a linear warm-up; then linear decay.
        max_length: Word pieces per input (special tokens included); longer inputs are truncated.
        seed: Seeds head initialisation, dropout, shuffling (and the hold-out split, see ``split_seed``).
        max_grad_norm: Clip the model's gradients to this global norm (``None``: no clipping).
        eval_batch_size: Rows per validation forward pass.
        patience: Stop after this many epochs without a validation-loss improvement
            (``None``: run every epoch).
        min_delta: An epoch improves only if its validation loss is below the best by more than this.
        log_target: Regression: train on ``log(target)`` (the model then outputs the log).
        validation_fraction: Hold this share of the training rows out as validation rows
            (:func:`xattr.training.recipe.holdout_split`; 0 holds out none); ``None``: validate on
            the ``validation`` rows given, if any.
        split_seed: Seed of that split; ``None``: the split is the first draw of the training
            generator (seeded with ``seed``), whose later draws shuffle the epochs.
        attn_implementation: ``sdpa``, ``eager`` or ``None`` (transformers' default).
        device: ``cuda``, ``cpu`` or ``None`` (CUDA when available; :func:`xattr.device.pick_device`).
        ldav: LDAV settings.
    """

    epochs: int = 3
    batch_size: int = 32
    learning_rate: float = 1e-4
    head_learning_rate: float = 1e-3
    embedding_learning_rate: float | None = None
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1
    max_length: int = 128
    seed: int = 0
    max_grad_norm: float | None = 1.0
    eval_batch_size: int = 128
    patience: int | None = 2
    min_delta: float = 0.0
    log_target: bool = False
    validation_fraction: float | None = None
    split_seed: int | None = None
    attn_implementation: str | None = None
    device: str | None = None
    ldav: LdavConfig = field(default_factory=LdavConfig)

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "max_length", "eval_batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"TrainConfig.{name} must be a positive integer, got {value!r}")
        if self.patience is not None and (not isinstance(self.patience, int) or self.patience < 1):
            raise ValueError(f"TrainConfig.patience must be a positive integer or None, got {self.patience!r}")
        for name in ("learning_rate", "head_learning_rate", "embedding_learning_rate"):
            value = getattr(self, name)
            if name == "embedding_learning_rate" and value is None:
                continue
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"TrainConfig.{name} must be finite and > 0, got {value!r}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"TrainConfig.weight_decay must be >= 0, got {self.weight_decay!r}")
        if not 0 <= self.warmup_fraction < 1:
            raise ValueError(f"TrainConfig.warmup_fraction must be in [0, 1), got {self.warmup_fraction!r}")
        if self.max_grad_norm is not None and not (math.isfinite(self.max_grad_norm) and self.max_grad_norm > 0):
            raise ValueError(f"TrainConfig.max_grad_norm must be > 0 or None, got {self.max_grad_norm!r}")
        if not (math.isfinite(self.min_delta) and self.min_delta >= 0):
            raise ValueError(f"TrainConfig.min_delta must be >= 0, got {self.min_delta!r}")
        if self.validation_fraction is not None and not 0 <= self.validation_fraction < 1:
            raise ValueError(
                f"TrainConfig.validation_fraction must be in [0, 1) or None, got {self.validation_fraction!r}"
            )


@dataclass(frozen=True)
class TrainingRows:
    """Texts and targets of one split.

    Attributes:
        texts: The (first) texts.
        pairs: Second texts of sentence pairs, or ``None``.
        labels: Class index (single-label) or value (regression) per row; ignored for multi-label.
        label_sets: Multi-label: class indices per row.
    """

    texts: Sequence[str]
    pairs: Sequence[str] | None = None
    labels: Sequence[float] | None = None
    label_sets: Sequence[Sequence[int]] | None = None

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, positions: Sequence[int] | np.ndarray) -> TrainingRows:
        """The rows at ``positions``, in that order."""

        def pick(values: Sequence[Any] | None) -> list[Any] | None:
            return None if values is None else [values[i] for i in positions]

        texts = [self.texts[i] for i in positions]
        return TrainingRows(texts, pick(self.pairs), pick(self.labels), pick(self.label_sets))


@dataclass(frozen=True)
class EpochRecord:
    """One epoch: mean training losses and validation metrics (empty without validation rows)."""

    epoch: int
    train_loss: float
    train_l2: float
    train_l3: float
    validation: dict[str, float]
    seconds: float


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train_model` saved.

    Attributes:
        output_dir: The saved model directory (with ``ldav_vectors.safetensors`` under LDAV).
        task: The task trained.
        train_rows: Rows trained on.
        validation_rows: Rows validated on.
        epochs_run: Epochs actually run.
        best_epoch: The epoch whose weights were saved (1-based; the last without validation).
        stopped_early: Whether early stopping ended training before ``epochs``.
        seconds: Wall time up to the save.
        metrics: The best epoch's validation metrics (``loss``, then per task: ``accuracy``,
            ``macro_f1``, ``majority_class`` and ``majority_accuracy``; ``micro_f1`` and ``macro_f1``;
            ``r2``, ``rmse`` and, with ``log_target``, ``mape_price``), empty without validation rows.
        history: Every epoch.
        num_labels: Outputs of the head.
        id2label: Class names saved in the model config (empty when none were given).
    """

    output_dir: Path
    task: TaskName
    train_rows: int
    validation_rows: int
    epochs_run: int
    best_epoch: int
    stopped_early: bool
    seconds: float
    metrics: dict[str, float]
    history: tuple[EpochRecord, ...]
    num_labels: int = 0
    id2label: dict[int, str] = field(default_factory=dict)

    @property
    def train_loss(self) -> float:
        """Mean training loss (``L1``) of the saved epoch."""
        return self.history[self.best_epoch - 1].train_loss if self.history else math.nan

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able form (the training report)."""
        data = asdict(self)
        data["output_dir"] = str(self.output_dir)
        data["id2label"] = {str(k): v for k, v in self.id2label.items()}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], output_dir: Path | None = None) -> TrainResult:
        """The result of a :meth:`to_dict` form (``output_dir`` overrides the recorded one)."""
        values = dict(data)
        values["output_dir"] = Path(output_dir if output_dir is not None else values["output_dir"])
        values["history"] = tuple(EpochRecord(**record) for record in values["history"])
        values["id2label"] = {int(k): str(v) for k, v in values.get("id2label", {}).items()}
        return cls(**values)


def load_train_result(model_dir: Path | str) -> TrainResult:
    """The :class:`TrainResult` saved with a model by :func:`train_model`.

    Raises:
        FileNotFoundError: The directory has no training report.
    """
    model_dir = Path(model_dir)
    return TrainResult.from_dict(json.loads((model_dir / TRAINING_REPORT).read_text()), model_dir)


def train_model(
    base_model_dir: Path | str,
    train: TrainingRows,
    output_dir: Path | str,
    *,
    task: TaskName,
    num_labels: int,
    validation: TrainingRows | None = None,
    id2label: dict[int, str] | None = None,
    config: TrainConfig = TrainConfig(),  # noqa: B008 (frozen)
    progress: TrainingProgress | None = None,
) -> TrainResult:
    """Fine-tune ``base_model_dir`` and save the best epoch atomically to ``output_dir``.

    Question answering is not trained here: its span heads need answer spans mapped to word
    pieces, and no corpus format or dataset adapter of xattr carries answers.

    Args:
        base_model_dir: Local Hugging Face encoder directory (safetensors) with its tokenizer.
        train: Training rows (with ``config.validation_fraction``, the validation rows are held out of them).
        output_dir: Where the model goes; must not exist. Its parent is created.
        task: ``classification``, ``pair_classification``, ``multi_label`` or ``regression``.
        num_labels: Classes (1 for regression).
        validation: Validation rows for per-epoch metrics and early stopping.
        id2label: Class names saved in the model config.
        config: Hyper-parameters.
        progress: Called after each optimiser step (``total_steps`` assumes no early stop).

    Returns:
        Where the model is, the history and the best epoch's validation metrics.

    Raises:
        FileExistsError: ``output_dir`` exists.
        FileNotFoundError: ``base_model_dir`` is not a directory.
        TypeError: A text is not a string (the row is named).
        ValueError: Rows do not fit the task (missing pairs or labels, label outside
            ``num_labels``, non-finite value; the first bad row is named), ``num_labels`` does not
            fit the task, LDAV asked for regression or multi-label, validation rows given together
            with ``validation_fraction``, or CUDA requested without CUDA.
    """
    base_model_dir, output_dir = Path(base_model_dir), Path(output_dir)
    if task == "question_answering":
        raise ValueError("train_model does not train question-answering (span) heads; bring a trained QA model")
    if task not in _PROBLEM_TYPES:
        raise ValueError(f"unknown task {task!r}; valid: {', '.join(_PROBLEM_TYPES)}")
    if not base_model_dir.is_dir():
        raise FileNotFoundError(f"base model directory {str(base_model_dir)!r} does not exist")
    refuse_existing(output_dir)
    _check_num_labels(task, num_labels)
    if config.ldav.enabled and task in ("regression", "multi_label"):
        raise ValueError(
            f"LDAV is defined for single-label classification (one vector per class, pulled towards texts of the "
            f"predicted class); task {task!r} cannot be trained with ldav.enabled"
        )
    if config.log_target and task != "regression":
        raise ValueError("log_target applies to regression only")
    if validation is not None and config.validation_fraction is not None:
        raise ValueError("give validation rows or TrainConfig.validation_fraction, not both")
    train_targets = _targets(train, task, num_labels, "training", config.log_target)
    val_targets = _targets(validation, task, num_labels, "validation", config.log_target) if validation else None
    start = time.perf_counter()
    device = pick_device(config.device)
    rng = np.random.default_rng(config.seed)
    if config.validation_fraction is not None:
        split_from = rng if config.split_seed is None else config.split_seed
        train_idx, val_idx = holdout_split(len(train), config.validation_fraction, split_from)
        if len(val_idx):
            validation, val_targets = train.subset(val_idx), train_targets[val_idx]
        train, train_targets = train.subset(train_idx), train_targets[train_idx]
    mean, sd = 0.0, 1.0
    if task == "regression":
        mean, sd = float(train_targets.mean()), float(train_targets.std())
        sd = sd if math.isfinite(sd) and sd > 0 else 1.0

    with seeded(config.seed, device), quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(base_model_dir, split_special_tokens=True)  # as load_model
        kwargs: dict[str, Any] = {
            "num_labels": num_labels,
            "problem_type": _PROBLEM_TYPES[task],
            "use_safetensors": True,
            # a base that already has a head of another size (a classifier re-trained for new classes) gets a new one
            "ignore_mismatched_sizes": True,
        }
        if id2label:
            kwargs["id2label"] = {int(k): str(v) for k, v in id2label.items()}
            kwargs["label2id"] = {str(v): int(k) for k, v in id2label.items()}
        if config.attn_implementation is not None:
            kwargs["attn_implementation"] = config.attn_implementation
        model = AutoModelForSequenceClassification.from_pretrained(base_model_dir, **kwargs).to(device)
        init_head_bias(model, task, train_targets, num_labels)
        session = _Session(model, tokenizer, task, num_labels, config, device, mean, sd)
        if config.ldav.enabled:
            session.init_class_vectors(train, train_targets)
        history, best_epoch, stopped = session.fit(train, train_targets, validation, val_targets, rng, progress)

    model.eval()
    if task == "regression":
        fold_target_standardisation(model, mean, sd)
        model.config.xattr_target_mean, model.config.xattr_target_sd = mean, sd
    model.config.xattr_task = task
    model.config.xattr_output_transform = "log" if config.log_target else "identity"
    vectors = session.class_vectors(id2label or {}, pair_product=task == "pair_classification")
    model.to("cpu")
    best = history[best_epoch - 1].validation if history else {}
    result = TrainResult(
        output_dir=output_dir,
        task=task,
        train_rows=len(train),
        validation_rows=len(validation) if validation else 0,
        epochs_run=len(history),
        best_epoch=best_epoch,
        stopped_early=stopped,
        seconds=time.perf_counter() - start,
        metrics=dict(best),
        history=tuple(history),
        num_labels=num_labels,
        id2label={int(k): str(v) for k, v in (id2label or {}).items()},
    )
    report = json.dumps(result.to_dict(), indent=2)
    with quiet_transformers():
        save_atomically(output_dir, model, tokenizer, vectors=vectors, texts={TRAINING_REPORT: report})
    logger.info("trained %s: %d epochs (best %d) in %.1f s: %s", task, len(history), best_epoch, result.seconds, best)
    return result


def _check_num_labels(task: str, num_labels: int) -> None:
    if isinstance(num_labels, bool) or not isinstance(num_labels, int):
        raise ValueError(f"num_labels must be an integer, got {num_labels!r}")
    if task == "regression" and num_labels != 1:
        raise ValueError(f"regression has one output; num_labels must be 1, got {num_labels}")
    if task == "multi_label" and num_labels < 1:
        raise ValueError(f"multi_label needs num_labels >= 1, got {num_labels}")
    if task in ("classification", "pair_classification") and num_labels < 2:
        raise ValueError(f"{task} needs num_labels >= 2, got {num_labels}")


def _targets(rows: TrainingRows, task: str, num_labels: int, split: str, log_target: bool) -> np.ndarray:
    """Validated targets: class indices, 0/1 label matrix (multi-label) or (log) values."""
    n = len(rows)
    if n == 0:
        raise ValueError(f"the {split} split has no rows")
    for i, text in enumerate(rows.texts):
        if not isinstance(text, str):
            raise TypeError(f"{split} row {i + 1}: text must be a string, got {type(text).__name__}")
        if not text.strip():
            raise ValueError(f"{split} row {i + 1}: text must be a non-empty string, got {text!r}")
    if task == "pair_classification":
        if rows.pairs is None or len(rows.pairs) != n:
            raise ValueError(f"{split} rows: pair_classification needs a second text (pair column) for every row")
        for i, text in enumerate(rows.pairs):
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"{split} row {i + 1}: pair text must be a non-empty string, got {text!r}")
    if task == "multi_label":
        if rows.label_sets is None or len(rows.label_sets) != n:
            raise ValueError(f"{split} rows: multi_label needs a label set for every row")
        try:
            return multi_hot(rows.label_sets, num_labels)
        except ValueError as exc:
            raise ValueError(f"{split} rows: {exc}") from None
    if rows.labels is None or len(rows.labels) != n:
        given = 0 if rows.labels is None else len(rows.labels)
        raise ValueError(f"{split} rows: {n} texts but {given} labels; a label is needed for every row")
    values = np.empty(n, dtype=np.float64)
    for i, value in enumerate(rows.labels):
        try:
            values[i] = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{split} row {i + 1}: label {value!r} is not a number") from None
    bad = np.flatnonzero(~np.isfinite(values))
    if len(bad):
        raise ValueError(f"{split} row {bad[0] + 1}: label {float(values[bad[0]])!r} is not finite")
    if task == "regression":
        if log_target:
            bad = np.flatnonzero(values <= 0)
            if len(bad):
                raise ValueError(
                    f"{split} row {bad[0] + 1}: log_target needs values > 0, got {float(values[bad[0]])!r}"
                )
            return np.log(values)
        return values
    bad = np.flatnonzero((values < 0) | (values >= num_labels) | (values != np.round(values)))
    if len(bad):
        raise ValueError(
            f"{split} row {bad[0] + 1}: class {float(values[bad[0]])!r} is not an index in 0..{num_labels - 1}"
        )
    return values.astype(np.int64)


@dataclass
class _Batch:
    inputs: dict[str, torch.Tensor]
    content: torch.Tensor  # (batch, seq) bool
    segments: torch.Tensor | None  # (batch, seq) long, -1 at specials


class _Session:
    """The model, optional class vectors and the loops over the data."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        task: str,
        num_labels: int,
        config: TrainConfig,
        device: torch.device,
        mean: float,
        sd: float,
    ) -> None:
        self.model, self.tokenizer, self.task, self.num_labels = model, tokenizer, task, num_labels
        self.config, self.device, self.mean, self.sd = config, device, mean, sd
        self.vectors: nn.Parameter | None = None

    def batch(self, rows: TrainingRows, index: Sequence[int]) -> _Batch:
        texts = [rows.texts[i] for i in index]
        pairs = (
            [rows.pairs[i] for i in index] if rows.pairs is not None and self.task == "pair_classification" else None
        )
        encoded = self.tokenizer(
            texts,
            pairs,
            padding=True,
            truncation=True,
            max_length=self.config.max_length,
            return_tensors="pt",
            return_special_tokens_mask=True,
        )
        special = encoded.pop("special_tokens_mask").bool()
        content = encoded["attention_mask"].bool() & ~special
        segments = None
        if pairs is not None:
            ids = [[-1 if s is None else s for s in encoded.sequence_ids(r)] for r in range(len(texts))]
            segments = torch.tensor(ids, dtype=torch.long).to(self.device)
        inputs = {k: v.to(self.device) for k, v in encoded.items()}
        return _Batch(inputs, content.to(self.device), segments)

    def pooled(self, batch: _Batch, embeddings: torch.Tensor) -> torch.Tensor:
        return pooled_input_embeddings(embeddings, batch.content, batch.segments)

    def ldav_space(self, batch: _Batch, embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits, token vectors)`` of one batch: the input word embeddings, or LDAV's hidden layer's states."""
        inputs = {k: v for k, v in batch.inputs.items() if k != "input_ids"}
        layer = self.config.ldav.layer
        out = self.model(inputs_embeds=embeddings, output_hidden_states=layer is not None, **inputs)
        if layer is None:
            return out.logits, embeddings
        if layer >= len(out.hidden_states):
            raise ValueError(f"LdavConfig.layer {layer}: the model has {len(out.hidden_states) - 1} hidden layers")
        return out.logits, out.hidden_states[layer]

    def init_class_vectors(self, rows: TrainingRows, targets: np.ndarray) -> None:
        """Start ``z_j`` at the mean text vector of the training rows of class ``j`` (the paper does not
        say how it initialises them; this starts them in the scale of the word embeddings, which the
        Euclidean score of Eq. 4 compares them with). A class without rows starts at the overall mean."""
        table = self.model.get_input_embeddings()
        hidden = int(table.weight.shape[1])
        sums = torch.zeros(self.num_labels, hidden, dtype=torch.float64, device=self.device)
        counts = torch.zeros(self.num_labels, dtype=torch.float64, device=self.device)
        labels = torch.as_tensor(targets, device=self.device)
        with torch.no_grad():
            for start in range(0, len(rows), self.config.eval_batch_size):
                index = list(range(start, min(start + self.config.eval_batch_size, len(rows))))
                batch = self.batch(rows, index)
                _, tokens = self.ldav_space(batch, table(batch.inputs["input_ids"]))
                pooled = self.pooled(batch, tokens).double()  # (batch, hidden)
                sums.index_add_(0, labels[index], pooled)
                counts.index_add_(0, labels[index], torch.ones(len(index), dtype=torch.float64, device=self.device))
        overall = sums.sum(0) / counts.sum()
        means = torch.where(counts.unsqueeze(1) > 0, sums / counts.clamp_min(1).unsqueeze(1), overall)
        self.vectors = nn.Parameter(means.to(table.weight.dtype))

    def class_vectors(self, id2label: dict[int, str], *, pair_product: bool) -> LdavVectors | None:
        if self.vectors is None:
            return None
        ldav = self.config.ldav
        return LdavVectors(
            vectors=self.vectors.detach().to("cpu", torch.float32).clone(),
            pair_product=pair_product,
            rho1=ldav.rho1,
            rho2=ldav.rho2,
            distance=ldav.distance,
            vector_class=ldav.vector_class,
            labels=tuple(id2label.get(j, str(j)) for j in range(self.num_labels)),
            layer=ldav.layer,
        )

    def optimizer(self) -> torch.optim.Optimizer:
        config = self.config
        params = parameter_groups(
            self.model,
            learning_rate=config.learning_rate,
            head_learning_rate=config.head_learning_rate,
            weight_decay=config.weight_decay,
            embedding_learning_rate=config.embedding_learning_rate,
        )
        if self.vectors is not None:
            params.append({"params": [self.vectors], "lr": config.ldav.learning_rate, "weight_decay": 0.0})
        return torch.optim.AdamW(params)

    def losses(self, batch: _Batch, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(L1, L2, L3)`` of one batch (L2 = L3 = 0 without LDAV); the model's mode is the caller's."""
        zero = torch.zeros((), device=self.device)
        if self.vectors is None:
            logits = self.model(**batch.inputs).logits  # (batch, num_labels)
            return self.task_loss(logits, targets), zero, zero
        embeddings = self.model.get_input_embeddings()(batch.inputs["input_ids"])  # (batch, seq, hidden)
        logits, tokens = self.ldav_space(batch, embeddings)
        ldav = self.config.ldav
        terms = ldav_loss_terms(
            logits,
            targets,
            self.pooled(batch, tokens),
            self.vectors,
            rho1=ldav.rho1,
            rho2=ldav.rho2,
            distance=ldav.distance,
            vector_class=ldav.vector_class,
        )
        return terms.l1, terms.l2, terms.l3

    def task_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.task == "regression":
            return F.mse_loss(logits[:, 0], targets)
        if self.task == "multi_label":
            return F.binary_cross_entropy_with_logits(logits, targets)
        return F.cross_entropy(logits, targets)

    def tensor_targets(self, targets: np.ndarray, index: Sequence[int]) -> torch.Tensor:
        picked = targets[np.asarray(index)]
        if self.task == "regression":
            return torch.tensor((picked - self.mean) / self.sd, dtype=torch.float32, device=self.device)
        if self.task == "multi_label":
            return torch.tensor(picked, dtype=torch.float32, device=self.device)
        return torch.tensor(picked, dtype=torch.long, device=self.device)

    def fit(
        self,
        train: TrainingRows,
        train_targets: np.ndarray,
        validation: TrainingRows | None,
        val_targets: np.ndarray | None,
        rng: np.random.Generator,
        progress: TrainingProgress | None,
    ) -> tuple[list[EpochRecord], int, bool]:
        config = self.config
        n = len(train)
        total = math.ceil(n / config.batch_size) * config.epochs
        optimizer = self.optimizer()
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_linear_decay(total, config.warmup_fraction))
        history: list[EpochRecord] = []
        best_loss, best_epoch, best_state, waited, step = math.inf, 0, None, 0, 0
        for epoch in range(1, config.epochs + 1):
            started = time.perf_counter()
            self.model.train()
            sums = np.zeros(3)
            order = rng.permutation(n)
            for start in range(0, n, config.batch_size):
                index = order[start : start + config.batch_size].tolist()
                l1, l2, l3 = self.losses(self.batch(train, index), self.tensor_targets(train_targets, index))
                loss = l1 + l2 - l3
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if config.max_grad_norm is not None:
                    # The model only: -L3's gradient on the vectors grows with their spread and
                    # would otherwise shrink every model gradient through the shared global norm.
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.max_grad_norm)
                optimizer.step()
                scheduler.step()
                step += 1
                sums += np.array([float(l1.detach()), float(l2.detach()), float(l3.detach())]) * len(index)
                if progress is not None:
                    progress(step, total, float(loss.detach()))
            metrics = (
                self.evaluate(validation, val_targets) if validation is not None and val_targets is not None else {}
            )
            means = sums / n
            history.append(
                EpochRecord(
                    epoch, float(means[0]), float(means[1]), float(means[2]), metrics, time.perf_counter() - started
                )
            )
            logger.info("epoch %d: train loss %.4f, validation %s", epoch, means[0], metrics)
            if not metrics:
                best_epoch = epoch
                continue
            if metrics["loss"] < best_loss - config.min_delta or best_state is None:
                best_loss, best_epoch, waited = metrics["loss"], epoch, 0
                best_state = self.snapshot()
            else:
                waited += 1
                if config.patience is not None and waited >= config.patience:
                    self.restore(best_state)
                    return history, best_epoch, epoch < config.epochs
        if best_state is not None and best_epoch != len(history):
            self.restore(best_state)
        return history, best_epoch, False

    def snapshot(self) -> dict[str, Any]:
        state = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
        vectors = None if self.vectors is None else self.vectors.detach().to("cpu", copy=True)
        return {"model": state, "vectors": vectors}

    def restore(self, snapshot: dict[str, Any]) -> None:
        self.model.load_state_dict(snapshot["model"])
        if self.vectors is not None and snapshot["vectors"] is not None:
            with torch.no_grad():
                self.vectors.copy_(snapshot["vectors"].to(self.vectors.device))

    @torch.no_grad()
    def evaluate(self, rows: TrainingRows, targets: np.ndarray) -> dict[str, float]:
        """Validation task loss (``L1``; standardised units for regression) and task metrics."""
        self.model.eval()
        outputs, loss_sum = [], 0.0
        for start in range(0, len(rows), self.config.eval_batch_size):
            index = list(range(start, min(start + self.config.eval_batch_size, len(rows))))
            batch = self.batch(rows, index)
            logits = self.model(**batch.inputs).logits
            loss_sum += float(self.task_loss(logits, self.tensor_targets(targets, index))) * len(index)
            outputs.append(logits.double().cpu().numpy())
        self.model.train()
        predictions = np.concatenate(outputs)
        metrics = {"loss": loss_sum / len(rows)}
        if self.task == "regression":
            predicted = predictions[:, 0] * self.sd + self.mean
            metrics.update(regression_metrics(predicted, targets, log_target=self.config.log_target))
        elif self.task == "multi_label":
            metrics.update(multi_label_metrics(predictions > 0.0, targets > 0.5))
        else:
            metrics.update(classification_metrics(predictions.argmax(axis=1), targets, self.num_labels))
        return metrics
