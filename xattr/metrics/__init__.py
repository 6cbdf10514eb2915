"""Faithfulness metrics: plain functions over model outputs and attributions."""

from __future__ import annotations

from xattr.metrics.perturbation import DEFAULT_FRACTIONS, MetricValue, removal_curves

__all__ = ["DEFAULT_FRACTIONS", "MetricValue", "removal_curves"]
