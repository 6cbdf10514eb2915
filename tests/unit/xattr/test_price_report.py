"""The HTML price-driver report: self-contained, escaped, and readable in headless Chromium."""

from __future__ import annotations

import dataclasses
import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.unit.xattr.test_price_drivers import driver_options
from xattr.reporting.baseline import ModelVerdict, fit_linear_baseline
from xattr.reporting.price_drivers import ALL_CATEGORIES, PriceDriverAnalysis
from xattr.reporting.price_report import (
    ExampleListing,
    PriceReportData,
    example_listings,
    excluded_summary,
    figure_pngs,
    heatmap_layout,
    price_drivers_markdown,
    price_report_data,
    render_price_report,
    report_figures,
)

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
    # Highlighted words: red for a positive masked effect, blue for negative, shade relative to the
    # listing's largest; the tooltip gives the effect in currency (the quantity the tables rank by).
    assert 'style="background: rgba(214,39,40,0.85)" title="masked effect +0.40 $">apple</span>' in page
    assert 'style="background: rgba(31,119,180,0.21)" title="masked effect -0.10 $">laptop</span>' in page
    assert "actual $1,200.00 · predicted $1,100.00 (-8%)" in page
    # Ranked by the masked effect; the method's attribution column is not shown (it could contradict).
    assert "<th>mean effect ($)</th>" in page and "<th>mean attribution</th>" not in page


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


def _listings() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "doc_id": [f"d{i}" for i in range(5)],
            "text": ["apple laptop", "dell laptop", "hp mouse", "logi mouse", "ink pack"],
            "label": [100.0] * 5,
            "group": ["x", "x", "y", "y", None],
        }
    )


def test_example_listings_show_each_words_effect_in_the_given_order() -> None:
    frame = _listings()
    predicted = np.array([101.0, 150.0, 120.0, 100.5, 300.0])
    effects = {"d0": {0: 5.0, 1: -2.5}, "d2": {1: 1.0}}
    first, second = example_listings(frame, predicted, (2, 0), effects)
    assert (first.doc_id, first.category, first.actual, first.predicted) == ("d2", "y", 100.0, 120.0)
    assert first.words[0][0] == "hp" and math.isnan(first.words[0][1]) and first.words[1] == ("mouse", 1.0)
    assert second == ExampleListing("d0", "x", (("apple", 5.0), ("laptop", -2.5)), 100.0, 101.0)
    page = render_price_report(dataclasses.replace(_data(), examples=[first]))
    assert 'title="not measured (truncated away)">hp</span>' in page


def _untrusted(**changes: object) -> PriceReportData:
    verdict = ModelVerdict(False, "The model is not better than the linear baseline: R^2 0.2 vs 0.3.")
    records = [
        {"term": "laptop", "weight": 2.0, "listings": 40, "typical_change": 0.5},
        {"term": "macbook", "weight": 1.0, "listings": 12, "typical_change": 0.25},
        {"term": "cable", "weight": -1.5, "listings": 30, "typical_change": -0.4},
    ]
    return dataclasses.replace(_data(), verdict=verdict, baseline_drivers=records, **changes)


def test_a_model_worse_than_the_baseline_gets_a_banner_and_the_baselines_drivers_first() -> None:
    page = render_price_report(_untrusted())
    banner, baseline, details = (page.index(x) for x in ('class="banner"', "Drivers to trust", "<details"))
    assert banner < baseline < details < page.index("<h2>Top drivers") < page.index("</details>")
    assert "Do not trust the model's drivers.</strong>" in page and "R^2 0.2 vs 0.3" in page
    trusted = page[baseline:details]
    # Raising terms largest first, lowering ones most negative first; typical change = expm1(log change).
    assert trusted.index("<td>laptop</td>") < trusted.index("<td>macbook</td>") < trusted.index("<td>cable</td>")
    assert f"{math.expm1(0.5) * 100:+.1f}%" in trusted and f"{math.expm1(-0.4) * 100:+.1f}%" in trusted
    # The model's example listings and heatmap are behind the banner too.
    assert page.index("<h2>Example listings") < page.index("</details>")
    forced = render_price_report(_untrusted(show_untrusted=True))
    assert 'class="banner"' in forced and "<details" not in forced and "--force" in forced
    ok = render_price_report(dataclasses.replace(_data(), verdict=ModelVerdict(True, "better: 0.6 vs 0.5")))
    assert 'class="verdict-ok"' in ok and "better: 0.6 vs 0.5" in ok and 'class="banner"' not in ok
    assert "<details" not in ok and "Drivers to trust" not in ok


def test_heatmap_states_its_minimum_count_and_the_categories_it_leaves_out() -> None:
    data = dataclasses.replace(
        _data(), category_sizes={"laptops": 90, "ink": 50, "mice": 40, "cables": 7}, min_texts=15, heatmap_categories=2
    )
    layout = heatmap_layout(data)
    # Categories by summed driver observations: every category has the same drivers, so ties keep
    # groupby's sorted order (ink, laptops, mice); "cables" has no driver row at all.
    assert layout.categories == ("ink", "laptops")
    assert layout.left_out == {
        "cables": "no driver in 15 or more of its 7 listings",
        "mice": "beyond the 2 categories with the most driver observations",
    }
    page = render_price_report(data)
    assert "A cell is shown when the driver occurs in at least 15 listings of the category" in page
    assert "Categories left out: cables (no driver in 15 or more of its 7 listings); mice (beyond the 2" in page
    # One category with drivers: no column can be drawn, so every category is listed as left out.
    lonely = data.drivers[data.drivers["category"].isin([ALL_CATEGORIES, "ink"])]
    alone = heatmap_layout(dataclasses.replace(data, drivers=lonely))
    assert alone.categories == () and alone.drivers == ()
    assert alone.left_out["ink"] == "its drivers reach the minimum count in no other shown category"
    assert set(alone.left_out) == {"cables", "ink", "laptops", "mice"}


def test_excluded_summary_counts_every_reason_and_keeps_three_examples_each() -> None:
    excluded = pd.DataFrame(
        {"doc_id": ["o1", "m1", "o2", "o3", "o4"], "reason": ["outlier", "missing", "outlier", "outlier", "outlier"]}
    )
    counts, examples = excluded_summary(excluded)
    assert counts == {"missing": 1, "non_numeric": 0, "non_positive": 0, "not_finite": 0, "outlier": 4}
    assert examples["doc_id"].tolist() == ["o1", "m1", "o2", "o3"]
    assert examples.index.tolist() == [0, 1, 2, 3]
    none_counts, none_examples = excluded_summary(excluded.iloc[:0])
    assert set(none_counts.values()) == {0} and none_examples.empty


def test_price_drivers_markdown() -> None:
    columns = ["scope", "driver", "kind", "texts", "mean_effect", "effect_ci_low", "effect_ci_high"]
    drivers = pd.DataFrame(
        [
            ("overall", "apple", "word", 3, 1234.5, 1200.0, 1300.0),
            ("overall", "the", "word", 9, 0.0, -1.0, 1.0),  # neither raises nor lowers
            ("overall", "used", "word", 2, -50.0, -60.0, -40.0),
            ("category", "ink", "word", 2, -99.0, -100.0, -98.0),  # not overall
        ],
        columns=columns,
    ).assign(mean_relative_effect=[0.5, 0.0, -0.25, -0.5])
    markdown = price_drivers_markdown(
        drivers,
        {"r2": 0.5, "mape": 0.125, "baseline_r2": 0.25, "baseline_mape": 0.25},
        run_id="run-1",
        catalogue="cat.csv",
        report="/r/report.html",
        price_rule="kept 5 of 6 prices",
        method="lafa",
        effect="mask",
        replacement="mask",
    )
    header = ["| driver | kind | listings | mean effect [95% CI] | relative |", "|---|---|---|---|---|"]
    assert markdown.split("\n") == [
        "# Price drivers `run-1`",
        "",
        "Catalogue: `cat.csv`; report: `/r/report.html`.",
        "",
        "Price rule: kept 5 of 6 prices",
        "",
        "| model (held-out listings) | R^2 (log price) | MAPE |",
        "|---|---|---|",
        "| explained model | 0.500 | 12.5% |",
        "| TF-IDF + ridge | 0.250 | 25.0% |",
        "",
        "Method `lafa`, effect `mask`, replacement `mask`; effects are mean changes of predicted price "
        "(95% bootstrap CI over listings).",
        "",
        "## Raise price",
        "",
        *header,
        "| apple | word | 3 | +1,234.50 [+1,200.00, +1,300.00] | +50.0% |",
        "",
        "## Lower price",
        "",
        *header,
        "| used | word | 2 | -50.00 [-60.00, -40.00] | -25.0% |",
        "",
    ]
    no_rule = price_drivers_markdown(
        drivers.iloc[:0],
        {"r2": 0.5, "mape": 0.125, "baseline_r2": 0.25, "baseline_mape": 0.25},
        run_id="r",
        catalogue="c",
        report="h",
        price_rule=None,
        method="m",
        effect="attribution",
        replacement="pad",
    )
    assert "Price rule: n/a" in no_rule and no_rule.count("| driver |") == 2


def test_price_report_data_from_an_analysis() -> None:
    frame = _listings()
    held_out = np.array([True, False, True, False, False])
    baseline = fit_linear_baseline(["apple laptop", "dell laptop", "logi mouse"], np.log([100.0, 90.0, 20.0]))
    analysis = PriceDriverAnalysis(
        drivers=_drivers(),
        occurrences=1234,
        outputs=np.log([101.0, 150.0, 120.0, 100.5, 300.0]),
        predicted_price=np.array([101.0, 150.0, 120.0, 100.5, 300.0]),
        held_out=held_out,
        word_scores={"d0": {0: 0.5}},
        texts_per_group={ALL_CATEGORIES: 5, "x": 2, "y": 2},
        model_quality={"r2": 0.5, "mape": 0.1, "rows": 2.0},
        baseline_quality={"r2": 0.25, "mape": 0.2, "rows": 2.0},
        baseline=baseline,
        verdict=ModelVerdict(True, "fine"),
        examples=(2, 0),
        example_effects={"d0": {0: 3.0}, "d2": {}},
    )
    options = driver_options(method="lafa", effect="attribution", replacement="unk", min_texts=3, examples=1, title="T")
    excluded = pd.DataFrame({"doc_id": ["z"], "text": ["t"], "price_raw": ["0"], "reason": ["non_positive"]})
    data = price_report_data(analysis, frame, excluded, options, price_rule="rule", model_name="m")
    assert data.title == "T" and data.top_k == 5 and data.price_rule == "rule"
    assert data.quality == [
        {"model": "explained model (m)", "r2": 0.5, "mape": 0.1, "rows": 2.0},
        {"model": f"TF-IDF + ridge, alpha 1 ({baseline.backend})", "r2": 0.25, "mape": 0.2, "rows": 2.0},
    ]
    np.testing.assert_array_equal(data.actual, [100.0, 100.0])
    np.testing.assert_array_equal(data.predicted, [101.0, 120.0])
    assert data.excluded_counts["non_positive"] == 1 and data.excluded_examples["doc_id"].tolist() == ["z"]
    assert [e.doc_id for e in data.examples] == ["d2", "d0"]
    assert data.examples[1].words[0] == ("apple", 3.0)
    assert data.examples_rule.startswith("2 of the 2 held-out listings, at evenly spaced ranks of absolute log error")
    assert "(predicted +20% off the actual price) to the worst (+1%)" in data.examples_rule
    assert data.baseline_terms == baseline.top_terms(12)
    assert data.baseline_drivers == baseline.driver_terms(frame["text"].tolist(), 5, options.word_filter().keeps, 3)
    assert data.verdict == ModelVerdict(True, "fine") and data.min_texts == 3
    assert data.category_sizes == {"x": 2, "y": 2}
    assert data.settings == {
        "attribution method": "lafa",
        "effect": "estimated from attributions (y - attribution)",
        "replacement": "unk",
        "listings": "5 (3 train / 2 held out)",
        "driver occurrences": "1,234 (drivers in >= 3 listings)",
        "categories": "2",
        "verdict thresholds": "model R^2 - baseline R^2 > 0 and model MAPE <= 1 x baseline MAPE",
    }


def test_figure_pngs_leave_the_figures_open_for_the_report() -> None:
    data = _data()
    figures = report_figures(data)
    pngs = figure_pngs(figures)
    assert set(pngs) == set(figures) and all(png.startswith(b"\x89PNG") for png in pngs.values())
    assert render_price_report(data, figures).count("data:image/png;base64,") == len(figures)
