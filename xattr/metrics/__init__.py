"""Faithfulness metrics: plain functions over model outputs and attributions."""

from __future__ import annotations

from xattr.metrics.gold import UndefinedMetricError, auc_against_gold, pearson_against_gold, per_text
from xattr.metrics.perturbation import DEFAULT_FRACTIONS, MetricValue, removal_curves
from xattr.metrics.precision_at_k import (
    PrecisionAtK,
    corpus_precision_at_k,
    gold_token_mask,
    precision_at_k,
)
from xattr.metrics.uncertainty import Estimate, PairedComparison, bootstrap_mean, paired_difference

__all__ = [
    "DEFAULT_FRACTIONS",
    "Estimate",
    "MetricValue",
    "PairedComparison",
    "PrecisionAtK",
    "UndefinedMetricError",
    "auc_against_gold",
    "bootstrap_mean",
    "corpus_precision_at_k",
    "gold_token_mask",
    "paired_difference",
    "pearson_against_gold",
    "per_text",
    "precision_at_k",
    "removal_curves",
]
