"""Curves of a metric against the removal (or mask) fraction, one line per method, as a PNG."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never a display
import matplotlib.pyplot as plt  # noqa: E402

#: Curves of a benchmark drawn as PNGs: (metric key prefix, title, y label, x label).
CURVES: tuple[tuple[str, str, str, str], ...] = (
    ("comprehensiveness_curve", "AOPC comprehensiveness vs k", "p - p_k", "share of tokens removed (%)"),
    ("log_odds_curve", "log-odds vs k (Mask-LRP Eq. 13, LDAV Eq. 7)", "log(p_k / p)", "share of tokens removed (%)"),
    ("degradation_curve", "degradation score vs k (LDAV Eq. 6)", "share of predictions kept", "share removed (%)"),
    ("mape_curve", "MAPE vs p (LAFA 5.3)", "MAPE", "share of tokens masked (%)"),
)


def curve_points(metrics: Mapping[str, float], prefix: str) -> list[tuple[float, float]]:
    """The ``(fraction, value)`` points of the curve ``prefix`` among tracking keys ``prefix@<percent>``, sorted."""
    points = []
    for key, value in metrics.items():
        name, _, step = key.partition("@")
        if name == prefix and step:
            points.append((int(step) / 100.0, float(value)))
    return sorted(points)


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


def plot_metric_curves(metrics: Mapping[str, Mapping[str, float]], directory: Path) -> dict[str, Path]:
    """One PNG per :data:`CURVES` entry that some method has points of, named ``<prefix>.png`` in ``directory``.

    Args:
        metrics: Per method, its tracking keys (curve points as ``prefix@<percent>``).
        directory: Where the PNGs go (it must exist).

    Returns:
        The PNG paths by curve prefix.
    """
    figures: dict[str, Path] = {}
    for prefix, title, ylabel, xlabel in CURVES:
        curves = {key: curve_points(values, prefix) for key, values in metrics.items()}
        curves = {key: points for key, points in curves.items() if points}
        if curves:
            figures[prefix] = plot_curves(
                curves, directory / f"{prefix}.png", title=title, ylabel=ylabel, xlabel=xlabel
            )
    return figures
