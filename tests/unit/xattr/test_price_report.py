"""The HTML price-driver report: self-contained, escaped, and readable in headless Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from xattr.reporting.price_drivers import ALL_CATEGORIES
from xattr.reporting.price_report import ExampleListing, PriceReportData, render_price_report, report_figures

CHROMIUM = Path("/usr/bin/chromium")


def _drivers() -> pd.DataFrame:
    rows = []
    rng = np.random.default_rng(0)
    for scope, categories in (("overall", [ALL_CATEGORIES]), ("category", ["laptops", "ink", "mice"])):
        for category in categories:
            for i, driver in enumerate(["apple", "i7", "ram: 16gb", "refurbished", "ink <b>", "pack: 2", "used"]):
                effect = (3 - i) * 40.0 + rng.normal(0, 5)
                rows.append(
                    {
                        "scope": scope,
                        "category": category,
                        "driver": driver,
                        "kind": "attribute" if ":" in driver else "word",
                        "texts": 20 + i,
                        "frequency": 0.1,
                        "mean_effect": effect,
                        "effect_ci_low": effect - 10,
                        "effect_ci_high": effect + 10,
                        "mean_relative_effect": effect / 400,
                        "mean_output_effect": effect / 400,
                        "mean_attribution": effect / 1000,
                        "attribution_ci_low": np.nan,
                        "attribution_ci_high": np.nan,
                        "mean_predicted_price": 400.0,
                    }
                )
    return pd.DataFrame(rows)


def _data() -> PriceReportData:
    rng = np.random.default_rng(1)
    actual = np.exp(rng.normal(4, 1, 200))
    return PriceReportData(
        title="Price drivers <test>",
        drivers=_drivers(),
        quality=[
            {"model": "explained", "r2": 0.61, "mape": 0.7, "rows": 200.0},
            {"model": "TF-IDF + ridge", "r2": 0.62, "mape": 0.65, "rows": 200.0},
        ],
        actual=actual,
        predicted=actual * np.exp(rng.normal(0, 0.4, 200)),
        price_rule="kept 200 of 203 prices; excluded 3",
        excluded_counts={"missing": 2, "outlier": 1},
        excluded_examples=pd.DataFrame(
            {"doc_id": ["x1"], "text": ["<script>alert(1)</script>"], "price_raw": ["0"], "reason": ["non_positive"]}
        ),
        examples=[
            ExampleListing("d1", "laptops", (("apple", 0.4), ("laptop", -0.1), ("i7", 0.3)), 1200.0, 1100.0),
            ExampleListing("d2", None, (("hp", 0.0), ("ink", -0.2)), 20.0, 25.5),
        ],
        baseline_terms=[("macbook", 1.2), ("ink", -0.9)],
        settings={"attribution method": "lafa", "effect": "mask"},
    )


def test_report_is_self_contained_and_escaped() -> None:
    page = render_price_report(_data())
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert not re.search(r"(src|href)=\"(https?:)?//", page)
    assert "http://" not in page and "https://" not in page
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 4  # positive, negative, heatmap, predicted vs actual
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "Price drivers &lt;test&gt;" in page and "ink &lt;b&gt;" in page
    for heading in ("Model quality", "Prices excluded", "Top drivers", "Drivers by category", "Predicted vs actual",
                    "Example listings", "Linear baseline"):  # fmt: skip
        assert f"<h2>{heading}" in page
    # Highlighted words: red for positive, blue for negative, shade relative to the listing's largest.
    assert 'style="background: rgba(214,39,40,0.85)" title="attribution +0.4000">apple</span>' in page
    assert 'style="background: rgba(31,119,180,0.21)" title="attribution -0.1000">laptop</span>' in page


def test_figures_are_skipped_when_there_is_nothing_to_draw() -> None:
    data = _data()
    only_overall = data.drivers[data.drivers["scope"] == "overall"]
    positive_only = only_overall[only_overall["mean_effect"] > 0]
    import dataclasses

    figures = report_figures(dataclasses.replace(data, drivers=positive_only, actual=np.zeros(0)))
    assert set(figures) == {"top_positive"}
    page = render_price_report(dataclasses.replace(data, drivers=positive_only, actual=np.zeros(0)))
    assert "No chart: not enough data for the category x driver heatmap" in page


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian chromium at /usr/bin/chromium")
def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    from matplotlib.image import imread

    report = tmp_path / "report.html"
    report.write_text(render_price_report(_data()))
    shot = tmp_path / "shot.png"
    command = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={shot}",
        "--window-size=1280,2400",
        report.as_uri(),
    ]
    subprocess.run(command, check=True, capture_output=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 10_000
    pixels = imread(shot)[..., :3]
    assert pixels.shape[:2] == (2400, 1280)
    # Not blank: the page's white/grey background plus text, bars and the heatmap vary a lot.
    assert float(pixels.std()) > 0.05
    # Red bars of the "raise price" chart are drawn: #c44e52 at alpha 0.85 over white.
    bar = 0.85 * np.array([0xC4, 0x4E, 0x52]) / 255 + 0.15
    red = (np.abs(pixels - bar) < 0.04).all(axis=-1)
    assert red.sum() > 500
    shutil.rmtree(tmp_path / "profile", ignore_errors=True)
