"""Curve points from tracking keys, and one PNG per curve some method has."""

from __future__ import annotations

from pathlib import Path

from xattr.reporting.curves import curve_points, plot_metric_curves


def test_curve_points_parse_percent_steps_and_sort() -> None:
    metrics = {
        "mape_curve@50": 0.25,
        "mape_curve@10": 0.5,
        "mape_curve": 9.0,  # no step: not a point
        "mape_curve_x@20": 9.0,
        "aopc": 1.0,
    }
    assert curve_points(metrics, "mape_curve") == [(0.1, 0.5), (0.5, 0.25)]
    assert curve_points(metrics, "log_odds_curve") == []


def test_plot_metric_curves_draws_only_curves_with_points(tmp_path: Path) -> None:
    metrics = {
        "simple_grad": {"comprehensiveness_curve@20": 0.1, "comprehensiveness_curve@50": 0.2, "aopc": 0.15},
        "random": {"comprehensiveness_curve@20": 0.0, "mape_curve@10": 0.3},
    }
    figures = plot_metric_curves(metrics, tmp_path)
    assert figures == {
        "comprehensiveness_curve": tmp_path / "comprehensiveness_curve.png",
        "mape_curve": tmp_path / "mape_curve.png",
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == ["comprehensiveness_curve.png", "mape_curve.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in figures.values())
    assert plot_metric_curves({"m": {"aopc": 1.0}}, tmp_path / "none") == {}
