"""Curves of a metric against the removal (or mask) fraction, one line per method, as a PNG."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never a display
import matplotlib.pyplot as plt  # noqa: E402


def plot_curves(
    curves: Mapping[str, Sequence[tuple[float, float]]],
    path: Path,
    *,
    title: str,
    ylabel: str,
    xlabel: str = "share of tokens removed (%)",
) -> Path:
    """Draw ``{method: [(fraction, value), ...]}`` as lines and save a PNG at ``path``.

    Args:
        curves: Per method, its points; fractions in (0, 1] are drawn as percentages.
        path: The PNG to write (its directory must exist).
        title: Figure title.
        ylabel: Y-axis label.
        xlabel: X-axis label.

    Returns:
        ``path``.

    Raises:
        ValueError: ``curves`` is empty.
    """
    if not curves:
        raise ValueError("no curves to draw")
    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    try:
        for method, points in curves.items():
            ordered = sorted(points)
            axes.plot([100 * f for f, _ in ordered], [v for _, v in ordered], marker="o", markersize=3, label=method)
        axes.set_title(title)
        axes.set_xlabel(xlabel)
        axes.set_ylabel(ylabel)
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small")
        figure.tight_layout()
        figure.savefig(path, dpi=110)
    finally:
        plt.close(figure)
    return path
