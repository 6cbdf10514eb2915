"""A self-contained HTML price-driver report: inline CSS, charts as base64 PNG, no network.

Sections: the verdict (the model's held-out quality against the linear baseline; a red banner
when the model is not better, with the baseline's weights as the drivers to trust and the
model's drivers collapsed below it), excluded prices, top positive and negative drivers (bar
charts with CIs), a category x driver heatmap with the categories it leaves out, predicted vs
actual prices, example listings across the error range with each word coloured by its effect
(the quantity the tables rank by), and the linear baseline's largest weights.
Charts are drawn with matplotlib (Agg backend, no display needed).
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from xattr.data.products import PRICE_PROBLEMS
from xattr.reporting.baseline import VERDICT_CSS, ModelVerdict
from xattr.reporting.price_drivers import ALL_CATEGORIES, DriverOptions, PriceDriverAnalysis

__all__ = [
    "ExampleListing",
    "PriceReportData",
    "example_listings",
    "excluded_summary",
    "figure_pngs",
    "price_drivers_markdown",
    "price_report_data",
    "render_price_report",
    "report_figures",
]


@dataclass(frozen=True)
class ExampleListing:
    """A listing shown with its words highlighted.

    Attributes:
        doc_id: Listing id.
        category: Its category (or None).
        words: ``(word, effect)`` in text order: the change of predicted price (currency) when
            the word is masked, as the drivers' effects are measured (NaN: not measured, e.g.
            truncated away).
        actual: True price.
        predicted: Predicted price.
    """

    doc_id: str
    category: str | None
    words: tuple[tuple[str, float], ...]
    actual: float
    predicted: float


@dataclass(frozen=True)
class PriceReportData:
    """Everything the report shows.

    Attributes:
        title: Page title.
        drivers: The drivers table (:func:`xattr.reporting.price_drivers.aggregate_drivers`).
        quality: Rows ``{"model": name, "r2": ..., "mape": ..., "rows": ...}`` (the explained model
            first, then the baseline), measured on the same held-out listings.
        actual: ``(n,)`` true prices of the held-out listings.
        predicted: ``(n,)`` the explained model's predicted prices of the same listings.
        price_rule: One line describing the price rule and what it excluded.
        excluded_counts: Excluded listings per reason.
        excluded_examples: A few excluded rows (``doc_id, text, price_raw, reason``).
        examples: Listings to highlight.
        baseline_terms: ``(term, weight)`` of the linear baseline, largest first.
        settings: Key facts of the run (method, effect source, replacement, sizes), shown as a table.
        currency: Currency symbol for labels.
        top_k: Drivers per bar chart.
        heatmap_categories: Categories (rows) in the heatmap.
        heatmap_drivers: Drivers (columns) in the heatmap.
        verdict: Whether the model is better than the baseline (None: no verdict shown).
        show_untrusted: Show an untrusted model's drivers normally instead of collapsed.
        baseline_drivers: The baseline's largest weights each way after the word filter
            (records of :meth:`~xattr.reporting.baseline.LinearBaseline.driver_terms`).
        category_sizes: Listings per category (the heatmap says which categories it leaves out).
        min_texts: Fewest listings of a driver in a scope (the heatmap's minimum-count rule).
        notes: Sentences on how drivers were found (rules chosen, filters, examples), shown
            with the drivers.
        examples_rule: How the examples were chosen.
    """

    title: str
    drivers: pd.DataFrame
    quality: Sequence[dict[str, Any]]
    actual: np.ndarray
    predicted: np.ndarray
    price_rule: str
    excluded_counts: dict[str, int]
    excluded_examples: pd.DataFrame
    examples: Sequence[ExampleListing]
    baseline_terms: Sequence[tuple[str, float]]
    settings: dict[str, str] = field(default_factory=dict)
    currency: str = "$"
    top_k: int = 15
    heatmap_categories: int = 12
    heatmap_drivers: int = 15
    verdict: ModelVerdict | None = None
    show_untrusted: bool = False
    baseline_drivers: Sequence[dict[str, Any]] = ()
    category_sizes: dict[str, int] = field(default_factory=dict)
    min_texts: int = 0
    notes: Sequence[str] = ()
    examples_rule: str = ""


_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 0; background: #f6f7f9;
       color: #1d2330; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 32px 48px; }
h1 { font-size: 26px; margin: 8px 0 4px; } h2 { font-size: 19px; margin: 28px 0 8px; border-bottom: 1px solid #d5d9e0;
     padding-bottom: 4px; }
p.lead { color: #4a5468; margin: 4px 0 16px; }
section { background: #fff; border: 1px solid #e1e4ea; border-radius: 8px; padding: 12px 20px 16px; margin: 16px 0; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0; }
th, td { border-bottom: 1px solid #e7e9ee; padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: #f0f2f5; font-weight: 600; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
img.chart { max-width: 100%; height: auto; display: block; margin: 8px 0; }
.grid { display: grid; grid-template-columns: 1fr 1fr; gap: 16px; }
.listing { font-size: 14px; line-height: 2.0; margin: 6px 0 10px; }
.listing span.w { padding: 2px 3px; border-radius: 3px; margin-right: 2px; }
.meta { color: #5b6477; font-size: 12px; }
.note { color: #5b6477; font-size: 12.5px; }
.legend span { padding: 2px 6px; border-radius: 3px; margin-right: 6px; font-size: 12px; }
"""


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _overall(drivers: pd.DataFrame) -> pd.DataFrame:
    return drivers[drivers["scope"] == "overall"]


def _bar_chart(rows: pd.DataFrame, title: str, colour: str, currency: str) -> Any:
    import matplotlib.pyplot as plt

    rows = rows.iloc[::-1]
    fig, ax = plt.subplots(figsize=(6.2, 0.32 * max(len(rows), 3) + 1.0))
    y = np.arange(len(rows))
    mean = rows["mean_effect"].to_numpy()
    low = np.nan_to_num(mean - rows["effect_ci_low"].to_numpy())
    high = np.nan_to_num(rows["effect_ci_high"].to_numpy() - mean)
    ax.barh(y, mean, color=colour, alpha=0.85, xerr=[low, high], error_kw={"ecolor": "#333", "capsize": 2, "lw": 0.8})
    labels = [f"{d}  (n={t})" for d, t in zip(rows["driver"], rows["texts"], strict=True)]
    ax.set_yticks(y, labels, fontsize=8.5)
    ax.axvline(0, color="#555", lw=0.8)
    ax.set_xlabel(f"mean change of predicted price when present ({currency}; 95% CI over listings)", fontsize=8.5)
    ax.set_title(title, fontsize=10.5)
    ax.tick_params(axis="x", labelsize=8)
    ax.grid(axis="x", alpha=0.3)
    return fig


@dataclass(frozen=True)
class HeatmapLayout:
    """Which categories (rows) and drivers (columns) the heatmap shows, and which categories it leaves out.

    Attributes:
        categories: Rows, most driver observations first.
        drivers: Columns.
        left_out: Category -> why it has no row.
    """

    categories: tuple[str, ...]
    drivers: tuple[str, ...]
    left_out: dict[str, str]


def heatmap_layout(data: PriceReportData) -> HeatmapLayout:
    """Rows: the ``heatmap_categories`` categories with the most driver observations; columns: the
    overall drivers that occur in at least ``min_texts`` listings of two or more of those rows,
    largest summed ``|relative effect|`` first. Every other category is listed with its reason.
    """
    per_category = data.drivers[data.drivers["scope"] == "category"]
    known = [c for c in data.category_sizes if c != ALL_CATEGORIES]
    left_out = {
        c: f"no driver in {data.min_texts} or more of its {data.category_sizes[c]} listings"
        for c in known
        if c not in set(per_category["category"])
    }
    if per_category.empty:
        return HeatmapLayout((), (), left_out)
    ranked = list(per_category.groupby("category")["texts"].sum().sort_values(ascending=False).index)
    categories = ranked[: data.heatmap_categories]
    for c in ranked[data.heatmap_categories :]:
        left_out[str(c)] = f"beyond the {data.heatmap_categories} categories with the most driver observations"
    shown = per_category[per_category["category"].isin(categories)]
    coverage = shown.groupby("driver")["category"].nunique()
    overall = set(_overall(data.drivers)["driver"])
    candidates = [d for d in coverage[coverage >= 2].index if d in overall]
    # Drivers by the sum over the shown categories of |relative effect|: large effects seen in
    # many categories first (ranking by the overall effect alone leaves the heatmap mostly blank).
    weight = shown.assign(size=shown["mean_relative_effect"].abs()).groupby("driver")["size"].sum()
    columns = sorted(dict.fromkeys(candidates), key=lambda d: (-float(weight[d]), d))[: data.heatmap_drivers]
    if columns:
        with_cells = set(shown[shown["driver"].isin(columns)]["category"])
        for c in categories:
            if c not in with_cells:
                left_out[str(c)] = "none of the shown drivers reaches the minimum count in it"
        categories = [c for c in categories if c in with_cells]
    else:
        for c in categories:
            left_out[str(c)] = "its drivers reach the minimum count in no other shown category"
        categories = []
    return HeatmapLayout(tuple(categories), tuple(columns), dict(sorted(left_out.items())))


def _heatmap(data: PriceReportData) -> Any | None:
    import matplotlib.pyplot as plt

    layout = heatmap_layout(data)
    if not layout.drivers:
        return None
    categories, columns = list(layout.categories), list(layout.drivers)
    per_category = data.drivers[data.drivers["scope"] == "category"]
    sizes = per_category.groupby("category")["texts"].max()
    shown = per_category[per_category["category"].isin(categories)]
    grid = shown.pivot_table(index="category", columns="driver", values="mean_relative_effect", aggfunc="first")
    grid = grid.reindex(index=categories, columns=columns) * 100.0
    limit = float(np.nanmax(np.abs(grid.to_numpy()))) if np.isfinite(grid.to_numpy()).any() else 1.0
    fig, ax = plt.subplots(figsize=(min(1.0 + 0.62 * len(columns), 11.5), 0.42 * len(categories) + 2.4))
    image = ax.imshow(np.ma.masked_invalid(grid.to_numpy()), cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
    ax.set_xticks(range(len(columns)), columns, rotation=55, ha="right", fontsize=8)
    labels = [f"{c} ({data.category_sizes.get(c, int(sizes.get(c, 0)))})" for c in categories]
    ax.set_yticks(range(len(categories)), labels, fontsize=8)
    for (i, j), value in np.ndenumerate(grid.to_numpy()):
        if np.isfinite(value):
            colour = "white" if abs(value) > 0.6 * limit else "#111"
            ax.text(j, i, f"{value:+.{0 if limit >= 10 else 1}f}", ha="center", va="center", fontsize=6.5, color=colour)
    ax.set_facecolor("#eceff3")
    bar = fig.colorbar(image, ax=ax, fraction=0.025, pad=0.02)
    bar.set_label("relative change of predicted price (%)", fontsize=8)
    rule = f"in fewer than {data.min_texts} of the category's listings" if data.min_texts else "too few listings"
    ax.set_title(f"Drivers by category (blank: driver {rule})", fontsize=10.5)
    return fig


def _price_distribution(data: PriceReportData) -> Any:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    actual = np.asarray(data.actual, dtype=np.float64)
    predicted = np.asarray(data.predicted, dtype=np.float64)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.0))
    bins = np.logspace(
        np.log10(max(min(actual.min(), predicted.min()), 1e-2)), np.log10(max(actual.max(), predicted.max())), 40
    )
    left.hist(actual, bins=bins, alpha=0.55, label="actual", color="#4c72b0")
    left.hist(predicted, bins=bins, alpha=0.55, label="predicted", color="#dd8452")
    left.set_xscale("log")
    left.set_xlabel(f"price ({data.currency}, log scale)", fontsize=9)
    left.set_ylabel("listings", fontsize=9)
    left.legend(fontsize=8)
    left.set_title("Distribution of actual and predicted prices (held-out listings)", fontsize=10)
    right.scatter(actual, predicted, s=6, alpha=0.35, color="#4c72b0", edgecolors="none")
    lo, hi = bins[0], bins[-1]
    right.plot([lo, hi], [lo, hi], color="#c44e52", lw=1, label="predicted = actual")
    right.set_xscale("log")
    right.set_yscale("log")
    right.set_xlabel(f"actual price ({data.currency})", fontsize=9)
    right.set_ylabel(f"predicted price ({data.currency})", fontsize=9)
    right.legend(fontsize=8)
    right.set_title("Predicted vs actual", fontsize=10)
    for ax in (left, right):
        axes = (ax.xaxis, ax.yaxis) if ax is right else (ax.xaxis,)
        decades = math.log10(bins[-1] / bins[0])
        for axis in axes:
            # Plain currency labels (1-2-5 steps over up to 3 decades, else decades) instead of
            # overlapping "2 x 10^2" minor labels.
            axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if decades <= 3 else (1.0,)))
            axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}"))
            axis.set_minor_formatter(NullFormatter())
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.25)
    return fig


def report_figures(data: PriceReportData) -> dict[str, Any]:
    """The report's matplotlib figures by file stem (callers save or log them, then close them)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    overall = _overall(data.drivers)
    positive = overall[overall["mean_effect"] > 0].sort_values("mean_effect", ascending=False).head(data.top_k)
    negative = overall[overall["mean_effect"] < 0].sort_values("mean_effect").head(data.top_k)
    figures: dict[str, Any] = {}
    if len(positive):
        figures["top_positive"] = _bar_chart(positive, "Drivers that raise predicted price", "#c44e52", data.currency)
    if len(negative):
        figures["top_negative"] = _bar_chart(negative, "Drivers that lower predicted price", "#4c72b0", data.currency)
    heat = _heatmap(data)
    if heat is not None:
        figures["category_heatmap"] = heat
    if len(data.actual):
        figures["predicted_vs_actual"] = _price_distribution(data)
    return figures


def _format(value: float, spec: str | None) -> str:
    """``spec``-formatted, except that values too small for it keep 3 significant digits."""
    text = (spec or "{}").format(value)
    if value != 0 and spec and not any(c in text.strip("+-.,0%") for c in "123456789"):
        return f"{value:+.3g}" + ("%" if spec.endswith("}%") else "")
    return text


def _table(frame: pd.DataFrame, formats: dict[str, str] | None = None) -> str:
    formats = formats or {}
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = []
    for row in frame.itertuples(index=False):
        cells = []
        for column, value in zip(frame.columns, row, strict=True):
            if isinstance(value, float | np.floating | int | np.integer) and not isinstance(value, bool):
                text = "" if isinstance(value, float) and math.isnan(value) else _format(value, formats.get(column))
                cells.append(f'<td class="num">{html.escape(text)}</td>')
            else:
                cells.append(f"<td>{html.escape('' if value is None else str(value))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _highlight(example: ExampleListing, currency: str) -> str:
    finite = [abs(e) for _, e in example.words if math.isfinite(e)]
    peak = max(finite, default=0.0) or 1.0
    spans = []
    for word, effect in example.words:
        if math.isfinite(effect):
            alpha = min(abs(effect) / peak, 1.0) * 0.85
            rgb = "214,39,40" if effect > 0 else "31,119,180"
            title = f"masked effect {effect:+,.2f} {currency}"
        else:
            alpha, rgb, title = 0.0, "255,255,255", "not measured (truncated away)"
        spans.append(
            f'<span class="w" style="background: rgba({rgb},{alpha:.2f})" title="{html.escape(title)}">'
            f"{html.escape(word)}</span>"
        )
    error = example.predicted / example.actual - 1.0
    meta = (
        f"{html.escape(example.doc_id)} · {html.escape(example.category or 'no category')} · actual "
        f"{currency}{example.actual:,.2f} · predicted {currency}{example.predicted:,.2f} ({error:+.0%})"
    )
    return f'<div class="listing">{"".join(spans)}<div class="meta">{meta}</div></div>'


def _driver_rows(rows: pd.DataFrame, currency: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "driver": rows["driver"],
            "kind": rows["kind"],
            "listings": rows["texts"],
            "frequency": rows["frequency"],
            f"mean effect ({currency})": rows["mean_effect"],
            "95% CI": [
                f"[{_format(lo, '{:,.2f}')}, {_format(hi, '{:,.2f}')}]" if math.isfinite(lo) else ""
                for lo, hi in zip(rows["effect_ci_low"], rows["effect_ci_high"], strict=True)
            ],
            "relative": rows["mean_relative_effect"] * 100.0,
        }
    )


def _baseline_rows(records: Sequence[dict[str, Any]], sign: int) -> pd.DataFrame:
    chosen = sorted((r for r in records if r["weight"] * sign > 0), key=lambda r: -sign * r["weight"])
    return pd.DataFrame(
        {
            "term": [r["term"] for r in chosen],
            "listings": [r["listings"] for r in chosen],
            "weight (log price per unit TF-IDF)": [r["weight"] for r in chosen],
            "typical change": [math.expm1(r["typical_change"]) * 100.0 for r in chosen],
        }
    )


def render_price_report(data: PriceReportData, figures: dict[str, Any] | None = None) -> str:
    """The report as one HTML string (charts embedded as base64 PNG; closes the figures).

    Args:
        data: What to show.
        figures: Figures from :func:`report_figures` (drawn here when None).

    Returns:
        A complete HTML document that needs no network.
    """
    figures = report_figures(data) if figures is None else figures
    images = {name: _png(fig) for name, fig in figures.items()}

    def img(name: str, alt: str) -> str:
        if name not in images:
            return f'<p class="note">No chart: not enough data for {html.escape(alt)}.</p>'
        return f'<img class="chart" alt="{html.escape(alt)}" src="data:image/png;base64,{images[name]}">'

    overall = _overall(data.drivers)
    effect_column = f"mean effect ({data.currency})"
    fmt = {"frequency": "{:.1%}", effect_column: "{:+,.2f}", "relative": "{:+.1f}%"}
    positive = overall[overall["mean_effect"] > 0].sort_values("mean_effect", ascending=False).head(data.top_k)
    negative = overall[overall["mean_effect"] < 0].sort_values("mean_effect").head(data.top_k)
    quality = pd.DataFrame(list(data.quality))
    settings = pd.DataFrame({"setting": list(data.settings), "value": list(data.settings.values())})
    counts = pd.DataFrame({"reason": list(data.excluded_counts), "listings": list(data.excluded_counts.values())})
    terms = pd.DataFrame(list(data.baseline_terms), columns=["term", "weight (log price per unit TF-IDF)"])
    base_fmt = {"weight (log price per unit TF-IDF)": "{:+.3f}", "typical change": "{:+.1f}%"}
    legend = (
        '<div class="legend"><span style="background: rgba(214,39,40,0.6)">raises predicted price</span>'
        '<span style="background: rgba(31,119,180,0.6)">lowers predicted price</span>'
        f"<span>(each word's masked effect: the change of predicted price ({html.escape(data.currency)}) when the"
        " word is masked, the quantity the driver tables average; shade relative to the listing's largest;"
        " hover for the value)</span></div>"
    )
    layout = heatmap_layout(data)
    left_out = "; ".join(f"{html.escape(c)} ({html.escape(why)})" for c, why in layout.left_out.items())
    heat_note = (
        f'<p class="note">A cell is shown when the driver occurs in at least {data.min_texts} listings of the'
        " category (the same minimum as the tables; blank otherwise); columns are drivers with a cell in two or"
        " more rows; each row shows the category's listings in brackets. "
        + (f"Categories left out: {left_out}." if left_out else "No category is left out.")
        + "</p>"
    )
    trusted = data.verdict is None or data.verdict.trusted
    collapse = not trusted and not data.show_untrusted
    verdict: list[str] = []
    if data.verdict is not None and trusted:
        verdict = [f'<div class="verdict-ok"><strong>Verdict:</strong> {html.escape(data.verdict.reason)}</div>']
    elif data.verdict is not None:
        shown = (
            "shown further down because the report was forced (--force)."
            if data.show_untrusted
            else "collapsed below (open them, or run with --force to show them normally)."
        )
        verdict = [
            '<div class="banner"><strong>Do not trust the model\'s drivers.</strong> '
            f"{html.escape(data.verdict.reason)} The linear baseline's weights below are the drivers to trust; the"
            f" model's drivers are {shown}</div>",
            "<section><h2>Drivers to trust: the linear baseline (TF-IDF + ridge)</h2>",
            f'<p class="note">The baseline\'s largest weights each way among terms in at least {data.min_texts}'
            " listings, after the same word filter as the model's drivers. Typical change: the weight times the"
            " term's median TF-IDF value in the listings that contain it, as a change of the baseline's predicted"
            " price.</p>",
            '<div class="grid"><div><h3>Raise price</h3>',
            _table(_baseline_rows(data.baseline_drivers, 1), base_fmt),
            "</div><div><h3>Lower price</h3>",
            _table(_baseline_rows(data.baseline_drivers, -1), base_fmt),
            "</div></div></section>",
        ]
    notes = "".join(f'<p class="note">{html.escape(n)}</p>' for n in data.notes)
    model_drivers = [
        "<section><h2>Top drivers (all categories)</h2>",
        notes,
        '<p class="note">Drivers are ranked by their mean effect: the change of predicted price when the driver\'s'
        " words are masked, averaged over the listings that contain it. The attribution method's own scores"
        " (mean_attribution in the drivers table) are not used for ranking or colouring: they are method scores,"
        " not currency, and can differ in sign from the masked effect.</p>",
        '<div class="grid"><div>',
        img("top_positive", "drivers that raise price"),
        "</div><div>",
        img("top_negative", "drivers that lower price"),
        "</div></div>",
        "<h3>Raise price</h3>",
        _table(_driver_rows(positive, data.currency), fmt),
        "<h3>Lower price</h3>",
        _table(_driver_rows(negative, data.currency), fmt),
        "</section>",
        "<section><h2>Drivers by category</h2>",
        img("category_heatmap", "the category x driver heatmap"),
        heat_note,
        "</section>",
        "<section><h2>Predicted vs actual prices</h2>",
        img("predicted_vs_actual", "predicted vs actual prices"),
        "</section>",
        "<section><h2>Example listings</h2>",
        f'<p class="note">{html.escape(data.examples_rule)}</p>' if data.examples_rule else "",
        legend,
        *[_highlight(e, data.currency) for e in data.examples],
        "</section>",
    ]
    if collapse:
        model_drivers = [
            '<details class="untrusted"><summary>The model\'s drivers (not trusted: the model is not better than'
            " the linear baseline)</summary>",
            *model_drivers,
            "</details>",
        ]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(data.title)}</title><style>{_CSS}{VERDICT_CSS}</style></head><body><main>",
        f"<h1>{html.escape(data.title)}</h1>",
        *verdict,
        '<p class="lead">What pushes the model\'s predicted price up or down across the catalogue, overall and per '
        "category. Effects are changes of predicted price, averaged over the listings that contain a driver, with "
        "95% bootstrap confidence intervals over listings.</p>",
        "<section><h2>Model quality (held-out listings)</h2>",
        _table(quality, {"r2": "{:.3f}", "mape": "{:.1%}", "rows": "{:,.0f}"}),
        '<p class="note">R<sup>2</sup> on log price; MAPE on price. Both models saw the same training listings '
        "and are scored on the same held-out ones.</p>",
        _table(settings),
        "</section>",
        "<section><h2>Prices excluded</h2>",
        f"<p>{html.escape(data.price_rule)}</p>",
        _table(counts),
        _table(data.excluded_examples) if len(data.excluded_examples) else "",
        "</section>",
        *model_drivers,
        "<section><h2>Linear baseline: largest TF-IDF + ridge weights</h2>",
        '<p class="note">A cross-check: words the linear model prices highly or lowly (no word filter).</p>',
        _table(terms, {"weight (log price per unit TF-IDF)": "{:+.3f}"}),
        "</section>",
        "</main></body></html>",
    ]
    return "\n".join(parts)


def example_listings(
    frame: pd.DataFrame,
    predicted_price: np.ndarray,
    positions: Sequence[int],
    word_effects: Mapping[str, Mapping[int, float]],
) -> list[ExampleListing]:
    """The listings at ``positions`` with each whitespace word's effect.

    Args:
        frame: Corpus rows (``doc_id, text, label`` = price, ``group``).
        predicted_price: ``(n,)`` predicted price per listing.
        positions: Listings to show (:func:`xattr.reporting.price_drivers.example_positions`).
        word_effects: ``{doc_id: {word_index: effect}}`` (words without one show as not measured).

    Returns:
        The listings in the order of ``positions``.
    """
    out = []
    for i in positions:
        doc_id, text = frame["doc_id"].iloc[i], frame["text"].iloc[i]
        effects = word_effects.get(doc_id, {})
        out.append(
            ExampleListing(
                doc_id,
                frame["group"].iloc[i],
                tuple((w, float(effects.get(j, math.nan))) for j, w in enumerate(text.split())),
                float(frame["label"].iloc[i]),
                float(predicted_price[i]),
            )
        )
    return out


def excluded_summary(excluded: pd.DataFrame, *, per_reason: int = 3) -> tuple[dict[str, int], pd.DataFrame]:
    """Excluded listings per reason (every reason of :data:`~xattr.data.products.PRICE_PROBLEMS`) and examples.

    Args:
        excluded: Excluded rows with a ``reason`` column (``excluded_prices.csv``).
        per_reason: Example rows kept per reason.

    Returns:
        The counts (zero for absent reasons) and up to ``per_reason`` rows of each reason,
        reasons in sorted order.
    """
    found = excluded["reason"].value_counts().to_dict() if len(excluded) else {}
    counts = {reason: int(found.get(reason, 0)) for reason in PRICE_PROBLEMS}
    examples = excluded.groupby("reason", sort=True).head(per_reason) if len(excluded) else excluded
    return counts, examples.reset_index(drop=True)


def price_report_data(
    analysis: PriceDriverAnalysis,
    frame: pd.DataFrame,
    excluded: pd.DataFrame,
    options: DriverOptions,
    *,
    price_rule: str,
    model_name: str,
) -> PriceReportData:
    """What the HTML report shows for one analysis.

    Args:
        analysis: The drivers and quality (:func:`xattr.reporting.price_drivers.analyse_price_drivers`).
        frame: The corpus rows the analysis ran on.
        excluded: Rows the price rule excluded, with their ``reason``.
        options: The analysis settings.
        price_rule: One line describing the price rule.
        model_name: How the explained model is named in the quality table.

    Returns:
        The :class:`PriceReportData`.
    """
    held_out = analysis.held_out
    test_idx = np.flatnonzero(held_out)
    baseline = analysis.baseline
    counts, examples = excluded_summary(excluded)
    listings = len(frame)
    shown = example_listings(frame, analysis.predicted_price, analysis.examples, analysis.example_effects)
    errors = [e.predicted / e.actual - 1.0 for e in shown]
    examples_rule = (
        f"{len(shown)} of the {len(test_idx):,} held-out listings, at evenly spaced ranks of absolute log error: from"
        f" the best-predicted (predicted {errors[0]:+.0%} off the actual price) to the worst ({errors[-1]:+.0%}),"
        " so they show the whole error range, not only the listings the model gets right."
        if shown
        else ""
    )
    keep = options.word_filter().keeps
    notes = [f"Attribute rules: {analysis.rules.describe()}."] if analysis.rules is not None else []
    dropped = [
        what
        for what, on in (
            ("stop words (spaCy's English list)", options.stop_words),
            ("bare numbers", options.numbers),
            (f"words shorter than {options.min_word_chars} characters", options.min_word_chars > 1),
        )
        if on
    ]
    notes.append(
        ("Word drivers leave out " + ", ".join(dropped) + "; " if dropped else "")
        + "a word that is the value of an attribute pair in a listing counts as the pair only"
        + (
            f" ({analysis.dropped_value_words} word rows of the table were dropped because an attribute driver of the"
            " same scope has that word as its value)."
            if analysis.dropped_value_words
            else "."
        )
    )
    return PriceReportData(
        title=options.title,
        drivers=analysis.drivers,
        quality=[
            {"model": f"explained model ({model_name})", **analysis.model_quality},
            {"model": f"TF-IDF + ridge, alpha {baseline.alpha:g} ({baseline.backend})", **analysis.baseline_quality},
        ],
        actual=frame["label"].to_numpy(dtype=np.float64)[test_idx],
        predicted=analysis.predicted_price[test_idx],
        price_rule=price_rule,
        excluded_counts=counts,
        excluded_examples=examples,
        examples=shown,
        baseline_terms=baseline.top_terms(12),
        settings={
            "attribution method": options.method,
            "effect": "masked forward pass per driver occurrence"
            if options.effect == "mask"
            else "estimated from attributions (y - attribution)",
            "replacement": options.replacement,
            "listings": f"{listings:,} ({listings - len(test_idx):,} train / {len(test_idx):,} held out)",
            "driver occurrences": f"{analysis.occurrences:,} (drivers in >= {options.min_texts} listings)",
            "categories": f"{len(analysis.texts_per_group) - 1}",
            "verdict thresholds": f"model R^2 - baseline R^2 > {options.min_r2_gain:g} and model MAPE <="
            f" {options.max_mape_ratio:g} x baseline MAPE",
        },
        top_k=options.top_k,
        verdict=analysis.verdict,
        show_untrusted=options.show_untrusted,
        baseline_drivers=baseline.driver_terms(frame["text"].tolist(), options.top_k, keep, options.min_texts),
        category_sizes={k: v for k, v in analysis.texts_per_group.items() if k != ALL_CATEGORIES},
        min_texts=options.min_texts,
        notes=notes,
        examples_rule=examples_rule,
    )


def figure_pngs(figures: Mapping[str, Any]) -> dict[str, bytes]:
    """Each figure as PNG bytes (110 dpi, tight box), by name; the figures stay open for the report."""
    out = {}
    for name, fig in figures.items():
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
        out[name] = buffer.getvalue()
    return out


def price_drivers_markdown(
    drivers: pd.DataFrame,
    metrics: Mapping[str, float],
    *,
    run_id: str,
    catalogue: object,
    report: str,
    price_rule: str | None,
    method: str,
    effect: str,
    replacement: str,
    top: int = 10,
    verdict: str | None = None,
) -> str:
    """A short markdown summary of a price-driver run: quality next to the baseline, top drivers each way.

    Args:
        drivers: The drivers table; its overall rows are listed.
        metrics: ``r2``, ``mape``, ``baseline_r2``, ``baseline_mape`` on the held-out listings.
        run_id: The run's id.
        catalogue: The catalogue's path, as shown.
        report: The HTML report's path.
        price_rule: One line describing the price rule (None: "n/a").
        method: Label of the attribution method.
        effect: How effects were measured.
        replacement: Replacement policy of masked words.
        top: Drivers listed each way.
        verdict: The model verdict's sentence (:class:`~xattr.reporting.baseline.ModelVerdict`), shown first.

    Returns:
        The markdown, ending with a newline.
    """
    overall = drivers[drivers["scope"] == "overall"]
    m = metrics
    lines = [
        f"# Price drivers `{run_id}`",
        "",
        f"Catalogue: `{catalogue}`; report: `{report}`.",
        "",
        *([f"**Verdict:** {verdict}", ""] if verdict else []),
        f"Price rule: {price_rule or 'n/a'}",
        "",
        "| model (held-out listings) | R^2 (log price) | MAPE |",
        "|---|---|---|",
        f"| explained model | {m['r2']:.3f} | {m['mape']:.1%} |",
        f"| TF-IDF + ridge | {m['baseline_r2']:.3f} | {m['baseline_mape']:.1%} |",
        "",
        f"Method `{method}`, effect `{effect}`, replacement `{replacement}`; effects are mean changes of predicted"
        " price (95% bootstrap CI over listings).",
    ]
    for title, rows in (
        ("Raise price", overall[overall["mean_effect"] > 0].head(top)),
        ("Lower price", overall[overall["mean_effect"] < 0].sort_values("mean_effect").head(top)),
    ):
        lines += [
            "",
            f"## {title}",
            "",
            "| driver | kind | listings | mean effect [95% CI] | relative |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {r.driver} | {r.kind} | {r.texts} | {r.mean_effect:+,.2f} [{r.effect_ci_low:+,.2f}, "
            f"{r.effect_ci_high:+,.2f}] | {r.mean_relative_effect:+.1%} |"
            for r in rows.itertuples()
        ]
    return "\n".join(lines) + "\n"
