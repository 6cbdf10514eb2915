"""The pieces of the fine-tuning recipe that :func:`xattr.training.trainer.train_model` is made of.

AdamW with the classification head and the pooler at a higher learning rate than the encoder (10x
by default: with one rate, a multi-label head with many rare labels collapses to "no label",
METHOD-NOTES), no weight decay on biases and LayerNorm weights, a linear warm-up then a linear
decay, output biases that start at the training rows' priors, a seeded hold-out split, seeded
random state restored afterwards, and an atomic save that never overwrites a model.

Regression trains on the standardised target; :func:`fold_target_standardisation` then folds the
de-standardisation into the output layer (``W' = sd * W``, ``b' = sd * b + mean``), so the saved
model outputs the target itself and explainers need no bookkeeping.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging as transformers_logging

from xattr.ldav.vectors import LdavVectors, save_ldav_vectors

__all__ = [
    "class_log_priors",
    "classification_metrics",
    "fold_target_standardisation",
    "frequency_log_odds",
    "holdout_split",
    "init_head_bias",
    "multi_hot",
    "multi_label_metrics",
    "output_layer",
    "parameter_groups",
    "quiet_transformers",
    "refuse_existing",
    "regression_metrics",
    "save_atomically",
    "seeded",
    "warmup_linear_decay",
]


@contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch, numpy and random inside the block and restore the caller's states after it.

    Args:
        seed: The seed.
        device: The training device (its CUDA generator is forked too).
    """
    python_state = random.getstate()
    numpy_state = np.random.get_state()
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' progress bars and load report inside the block, then restore them.

    The load report only says that a new head was initialised, which is expected when fine-tuning.
    """
    verbosity = transformers_logging.get_verbosity()
    bars = transformers_logging.is_progress_bar_enabled()
    transformers_logging.set_verbosity_error()
    if bars:
        transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        transformers_logging.set_verbosity(verbosity)
        if bars:
            transformers_logging.enable_progress_bar()


def output_layer(model: PreTrainedModel) -> nn.Linear:
    """The final linear layer of a sequence-classification head.

    Args:
        model: A ``*ForSequenceClassification`` model.

    Returns:
        The last ``nn.Linear`` outside the base model whose ``out_features`` equals
        ``model.config.num_labels`` (``classifier`` for BERT, ``classifier.out_proj`` for RoBERTa).

    Raises:
        ValueError: If the model has no such layer.
    """
    prefix = model.base_model_prefix
    found: nn.Linear | None = None
    for name, module in model.named_modules():
        in_base = bool(prefix) and (name == prefix or name.startswith(prefix + "."))
        if not in_base and isinstance(module, nn.Linear) and module.out_features == model.config.num_labels:
            found = module
    if found is None:
        raise ValueError(
            f"{type(model).__name__} has no linear output layer with "
            f"{model.config.num_labels} outputs outside its base model"
        )
    return found


def fold_target_standardisation(model: PreTrainedModel, mean: float, sd: float) -> None:
    """Fold ``y = sd * z + mean`` into a regression model's output layer, in place.

    Afterwards ``model`` outputs ``sd * z + mean`` where it used to output ``z``
    (``W' = sd * W``, ``b' = sd * b + mean``). The arithmetic is done in float64 and cast back.

    Args:
        model: A ``*ForSequenceClassification`` model with ``num_labels == 1``.
        mean: Training mean of the target.
        sd: Training standard deviation of the target, > 0.

    Raises:
        ValueError: If ``sd`` is not finite and positive, ``mean`` is not finite, or the model has
            no suitable output layer.
    """
    if not (math.isfinite(sd) and sd > 0):
        raise ValueError(f"sd must be finite and > 0, got {sd!r}")
    if not math.isfinite(mean):
        raise ValueError(f"mean must be finite, got {mean!r}")
    layer = output_layer(model)
    with torch.no_grad():
        weight = layer.weight.double() * sd
        layer.weight.copy_(weight.to(layer.weight.dtype))
        if layer.bias is None:
            layer.bias = nn.Parameter(
                torch.full((layer.out_features,), mean, dtype=layer.weight.dtype, device=layer.weight.device)
            )
        else:
            bias = layer.bias.double() * sd + mean
            layer.bias.copy_(bias.to(layer.bias.dtype))


def class_log_priors(labels: np.ndarray, num_labels: int) -> np.ndarray:
    """Centred log class priors of single-label training rows, with add-one smoothing.

    Args:
        labels: ``(rows,)`` class indices.
        num_labels: Classes.

    Returns:
        ``(num_labels,)`` ``log p_j - mean_j log p_j`` with ``p_j = (count_j + 1) / (rows + num_labels)``.
    """
    counts = np.bincount(np.asarray(labels).astype(np.int64), minlength=num_labels) + 1.0
    log_prior = np.log(counts / counts.sum())
    return log_prior - log_prior.mean()


def frequency_log_odds(targets: np.ndarray) -> np.ndarray:
    """Per label, the log-odds ``log(f / (1 - f))`` of its training frequency.

    ``f = (k + 0.5) / (n + 1)`` for a label present in ``k`` of ``n`` rows: the mean of the
    Jeffreys ``Beta(1/2, 1/2)`` posterior, which keeps ``f`` inside ``(0, 1)`` for a label that is
    never or always present while shrinking a rare label's frequency less than add-one smoothing.

    Args:
        targets: ``(rows, labels)`` 0/1 matrix.

    Returns:
        ``(labels,)`` log-odds.
    """
    rate = (targets.sum(axis=0) + 0.5) / (len(targets) + 1.0)
    return np.log(rate / (1 - rate))


def init_head_bias(model: PreTrainedModel, task: str, targets: np.ndarray, num_labels: int) -> None:
    """Start the output bias at the training rows' priors, in place.

    Single-label classification: :func:`class_log_priors`; multi-label: :func:`frequency_log_odds`
    (without it, many rare labels collapse to "no label", METHOD-NOTES, WebNLG); regression: 0
    (the target is standardised).

    Args:
        model: A ``*ForSequenceClassification`` model.
        task: ``classification``, ``pair_classification``, ``multi_label`` or ``regression``.
        targets: Class indices ``(rows,)``, a 0/1 matrix ``(rows, labels)`` (multi-label) or values.
        num_labels: Outputs of the head.
    """
    head = output_layer(model)
    if head.bias is None:
        return
    if task == "regression":
        start = np.zeros(num_labels)
    elif task == "multi_label":
        start = frequency_log_odds(targets)
    else:
        start = class_log_priors(targets, num_labels)
    with torch.no_grad():
        head.bias.copy_(torch.tensor(start, dtype=head.bias.dtype))


def parameter_groups(
    model: PreTrainedModel,
    *,
    learning_rate: float,
    head_learning_rate: float,
    weight_decay: float,
    embedding_learning_rate: float | None = None,
) -> list[dict[str, Any]]:
    """AdamW parameter groups: encoder or head (the head and the pooler), with or without decay.

    Args:
        model: A ``*ForSequenceClassification`` model.
        learning_rate: Learning rate of the encoder.
        head_learning_rate: Learning rate of the head and the pooler.
        weight_decay: Weight decay, not applied to biases and LayerNorm weights.
        embedding_learning_rate: Learning rate of the word-embedding matrix alone (its own last
            group, with decay); ``None`` leaves it in the encoder's group.

    Returns:
        Up to four groups, ordered (encoder, head) x (decay, no decay), then the word embeddings'.
    """
    prefix = model.base_model_prefix
    words = model.get_input_embeddings().weight if embedding_learning_rate is not None else None
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad or parameter is words:
            continue
        in_base = bool(prefix) and name.startswith(prefix + ".")
        is_head = not in_base or ".pooler." in f".{name}"
        no_decay = name.endswith(".bias") or "LayerNorm" in name or "layer_norm" in name
        groups.setdefault((is_head, no_decay), []).append(parameter)
    out = [
        {
            "params": params,
            "lr": head_learning_rate if is_head else learning_rate,
            "weight_decay": 0.0 if no_decay else weight_decay,
        }
        for (is_head, no_decay), params in sorted(groups.items())
    ]
    if words is not None and words.requires_grad:
        out.append({"params": [words], "lr": embedding_learning_rate, "weight_decay": weight_decay})
    return out


def warmup_linear_decay(total_steps: int, warmup_fraction: float) -> Callable[[int], float]:
    """Learning-rate factor per step (for ``LambdaLR``): linear warm-up, then linear decay to 0.

    Args:
        total_steps: Planned optimiser steps.
        warmup_fraction: Share of ``total_steps`` warmed up, in ``[0, 1)``.
    """
    warmup = int(warmup_fraction * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return factor


def holdout_split(n: int, fraction: float, seed: int | np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Seeded ``(train, validation)`` row positions, both sorted; one training row always remains.

    Args:
        n: Rows.
        fraction: Share held out, in ``[0, 1)``; any positive share holds out at least one row.
        seed: A seed, or the generator to draw the permutation from (``train_model`` passes its
            own, which then shuffles the epochs).

    Raises:
        ValueError: No rows, or ``fraction`` outside ``[0, 1)``.
    """
    if n < 1:
        raise ValueError("nothing to split: no rows")
    if not 0 <= fraction < 1:
        raise ValueError(f"the hold-out fraction must be in [0, 1), got {fraction!r}")
    n_val = round(n * fraction)
    if fraction > 0:
        n_val = max(n_val, 1)
    n_val = min(n_val, n - 1)
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def multi_hot(label_sets: Sequence[Sequence[int]], num_labels: int) -> np.ndarray:
    """``(rows, num_labels)`` float32 0/1 matrix of the label sets.

    Raises:
        ValueError: A label outside ``0..num_labels-1`` (the row is named).
    """
    out = np.zeros((len(label_sets), num_labels), dtype=np.float32)
    for i, labels in enumerate(label_sets):
        for label in labels:
            if not 0 <= int(label) < num_labels:
                raise ValueError(f"label_sets[{i}] holds {label!r}, outside 0..{num_labels - 1}")
            out[i, int(label)] = 1.0
    return out


def classification_metrics(predicted: np.ndarray, gold: np.ndarray, num_labels: int) -> dict[str, float]:
    """Accuracy, macro-F1 (the mean over all ``num_labels`` classes of per-class F1; 0 for a class
    never predicted nor present), and the majority-class baseline on the same rows:
    ``majority_class`` (the most common gold class; the lowest index on a tie) and
    ``majority_accuracy`` (the accuracy of always predicting it)."""
    predicted = np.asarray(predicted, dtype=np.int64)
    gold = np.asarray(gold, dtype=np.int64)
    f1s = []
    for j in range(num_labels):
        tp = float(((predicted == j) & (gold == j)).sum())
        fp = float(((predicted == j) & (gold != j)).sum())
        fn = float(((predicted != j) & (gold == j)).sum())
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn > 0 else 0.0)
    counts = np.bincount(gold, minlength=num_labels)
    majority = int(np.argmax(counts))  # argmax takes the first maximum: the lowest index on a tie
    return {
        "accuracy": float((predicted == gold).mean()),
        "macro_f1": float(np.mean(f1s)),
        "majority_class": float(majority),
        "majority_accuracy": float(counts[majority] / max(gold.size, 1)),
    }


def multi_label_metrics(predicted: np.ndarray, gold: np.ndarray) -> dict[str, float]:
    """Micro- and macro-F1 of ``(rows, labels)`` 0/1 matrices (0 where nothing is predicted or true)."""
    predicted = np.asarray(predicted, dtype=bool)
    gold = np.asarray(gold, dtype=bool)
    tp = (predicted & gold).sum(axis=0).astype(float)
    fp = (predicted & ~gold).sum(axis=0).astype(float)
    fn = (~predicted & gold).sum(axis=0).astype(float)
    denominator = 2 * tp + fp + fn
    per_label = np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0)
    micro_denominator = 2 * tp.sum() + fp.sum() + fn.sum()
    micro = 2 * tp.sum() / micro_denominator if micro_denominator > 0 else 0.0
    return {"micro_f1": float(micro), "macro_f1": float(per_label.mean())}


def regression_metrics(predicted: np.ndarray, target: np.ndarray, *, log_target: bool) -> dict[str, float]:
    """R^2 and RMSE on the model's scale; with ``log_target`` also ``mape_price``.

    Args:
        predicted: ``(rows,)`` model outputs (the log of the value with ``log_target``).
        target: ``(rows,)`` targets on the same scale.
        log_target: Add ``mape_price``: the mean absolute percentage error of ``exp(predicted)``
            against ``exp(target)`` (the price), as a fraction.
    """
    residual = target - predicted
    total = float(((target - target.mean()) ** 2).sum())
    metrics = {
        "r2": 1.0 - float((residual**2).sum()) / total if total > 0 else math.nan,
        "rmse": float(np.sqrt((residual**2).mean())),
    }
    if log_target:
        value = np.exp(target)
        metrics["mape_price"] = float((np.abs(np.exp(predicted) - value) / value).mean())
    return metrics


def refuse_existing(output_dir: Path) -> None:
    """Raise unless ``output_dir`` is free: a model is never overwritten.

    Raises:
        FileExistsError: ``output_dir`` exists (or is a dangling link).
    """
    if output_dir.exists() or output_dir.is_symlink():
        raise FileExistsError(f"output directory {str(output_dir)!r} already exists; models are never overwritten")


def save_atomically(
    output_dir: Path,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    *,
    vectors: LdavVectors | None = None,
    texts: Mapping[str, str] | None = None,
) -> None:
    """Save model, tokenizer, LDAV vectors and text files into a temporary sibling, then rename it.

    Readers see either no directory or a complete one.

    Args:
        output_dir: The model directory; must not exist. Its parent is created.
        model: The model to save (safetensors).
        tokenizer: Its tokenizer.
        vectors: LDAV class vectors saved next to the model.
        texts: Further files by name (e.g. the training report).

    Raises:
        FileExistsError: ``output_dir`` exists, or appeared while saving.
    """
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.tmp-", dir=output_dir.parent))
    try:
        staging.chmod(0o755)  # mkdtemp makes it private; the saved model is an ordinary directory
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        if vectors is not None:
            save_ldav_vectors(staging, vectors)
        for name, text in (texts or {}).items():
            (staging / name).write_text(text)
        for path in staging.iterdir():  # some writers create private (0600) files
            if path.is_file():
                path.chmod(0o644)
        refuse_existing(output_dir)
        os.rename(staging, output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
