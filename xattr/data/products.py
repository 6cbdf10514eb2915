"""Product catalogues with a price: reading the Walmart-Amazon / Abt-Buy tables and the price rules.

:func:`read_products` reads one table (``.parquet``, ``.csv``) or a dataset directory holding
``table_a`` and ``table_b`` (both are read and stacked, as the catalogue README suggests) into
canonical columns. It never drops or repairs a row: prices that cannot be used are classified and
excluded by :func:`clean_prices`, which reports every excluded row with its reason.

Price rule (documented, applied in this order; a row gets the first reason that applies):

1. ``missing``: the price cell is empty.
2. ``non_numeric``: the cell is not a number (e.g. ``"call for price"``).
3. ``non_positive``: the price is 0 or negative (a log price is undefined; 0 is a placeholder).
4. ``not_finite``: the price is infinite or NaN written as text.
5. ``outlier``: ``log(price)`` lies outside ``[Q1 - k * IQR, Q3 + k * IQR]`` with ``Q1``, ``Q3``
   the quartiles of the log prices of the rows that passed 1-4 and ``k = iqr_factor`` (3 by
   default: Tukey's "far out" fence, applied on the log scale because prices are right-skewed).

Categories with fewer than ``min_items`` kept rows are grouped into ``"other"``
(:func:`group_rare_categories`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = [
    "OTHER_CATEGORY",
    "PRICE_PROBLEMS",
    "CleanedPrices",
    "ProductsError",
    "clean_prices",
    "group_rare_categories",
    "read_products",
]

#: Group name of categories with too few items, and of rows without a category.
OTHER_CATEGORY = "other"
#: Reasons a price is excluded, in the order they are checked.
PRICE_PROBLEMS: tuple[str, ...] = ("missing", "non_numeric", "non_positive", "not_finite", "outlier")

# Column names of the supported tables: (title, brand, category, description).
_TITLE_COLUMNS = ("title", "name")
_TABLE_STEMS = ("table_a", "table_b")


class ProductsError(ValueError):
    """A product table cannot be read; the message names the file and the column."""


def _read_table(path: Path) -> pd.DataFrame:
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix == ".csv":
        # Prices stay text here so that non-numeric cells can be reported, not coerced silently.
        return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    raise ProductsError(f"{path}: unsupported file type {path.suffix!r} (use .parquet or .csv)")


def _table_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise ProductsError(f"{path}: no such file or directory")
    files = []
    for stem in _TABLE_STEMS:
        found = [path / f"{stem}{suffix}" for suffix in (".parquet", ".csv") if (path / f"{stem}{suffix}").is_file()]
        if found:
            files.append(found[0])
    if not files:
        raise ProductsError(f"{path}: directory holds neither table_a nor table_b (.parquet or .csv)")
    return files


def _text_column(frame: pd.DataFrame, path: Path) -> str:
    for name in _TITLE_COLUMNS:
        if name in frame.columns:
            return name
    raise ProductsError(
        f"{path}: no title column (expected one of {', '.join(_TITLE_COLUMNS)}; has {list(frame.columns)})"
    )


def _clean_str(value: object) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    text = " ".join(str(value).split())
    return text or None


def _listing_text(title: str | None, brand: str | None) -> str:
    """Title, then the brand when the title does not already hold it as whole words."""
    title = title or ""
    if brand and f" {brand.lower()} " not in f" {title.lower()} ":
        return f"{title} {brand}".strip()
    return title


def read_products(path: Path | str) -> pd.DataFrame:
    """Read a product table, or a directory with ``table_a`` and ``table_b``, into canonical columns.

    Args:
        path: A ``.parquet``/``.csv`` table with an ``_id`` column, a ``title`` (Walmart-Amazon) or
            ``name`` (Abt-Buy) column, a ``price`` column and optionally ``brand`` and
            ``category``; or a directory holding ``table_a`` and/or ``table_b`` (stacked).

    Returns:
        One row per listing with ``doc_id`` (``"<table stem>-<_id>"``, unique), ``text`` (title,
        then the brand when the title lacks it), ``label`` (price as float; NaN when missing or
        not a number: see :func:`clean_prices`), ``group`` (category or None), ``brand`` (or
        None), ``price_raw`` (the price cell as text, None when empty) and ``source`` (file stem).

    Raises:
        ProductsError: Missing file, unsupported type, a table without ``_id``/title/``price``
            columns, or duplicate ``_id`` values (the message names the file and column).
    """
    parts = []
    for file in _table_files(Path(path)):
        frame = _read_table(file)
        for required in ("_id", "price"):
            if required not in frame.columns:
                raise ProductsError(f"{file}: missing column {required!r} (has {list(frame.columns)})")
        title = _text_column(frame, file)
        ids = frame["_id"].astype(str)
        duplicated = ids[ids.duplicated()]
        if len(duplicated):
            raise ProductsError(f"{file}: column '_id' has duplicate values, e.g. {duplicated.iloc[0]!r}")
        brands = [_clean_str(v) for v in frame["brand"]] if "brand" in frame.columns else [None] * len(frame)
        groups = [_clean_str(v) for v in frame["category"]] if "category" in frame.columns else [None] * len(frame)
        titles = [_clean_str(v) for v in frame[title]]
        raw = [_clean_str(v) for v in frame["price"]]
        parts.append(
            pd.DataFrame(
                {
                    "doc_id": [f"{file.stem}-{i}" for i in ids],
                    "text": [_listing_text(t, b) for t, b in zip(titles, brands, strict=True)],
                    "label": pd.to_numeric(pd.Series(raw, dtype=object), errors="coerce").astype("float64"),
                    "group": pd.Series(groups, dtype=object),
                    "brand": pd.Series(brands, dtype=object),
                    "price_raw": pd.Series(raw, dtype=object),
                    "source": file.stem,
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


@dataclass(frozen=True)
class CleanedPrices:
    """Rows kept for price modelling and rows excluded, with the rule's numbers.

    Attributes:
        kept: Rows with a usable price (``label`` > 0, finite, inside the fence).
        excluded: Excluded rows with a ``reason`` column (one of :data:`PRICE_PROBLEMS`).
        counts: Excluded rows per reason (every reason present, zero when none).
        log_fence: ``(low, high)`` bounds on natural-log price; prices outside are outliers.
        iqr_factor: ``k`` of the fence.
    """

    kept: pd.DataFrame
    excluded: pd.DataFrame
    counts: dict[str, int]
    log_fence: tuple[float, float]
    iqr_factor: float

    def describe(self) -> str:
        """One line: how many rows were excluded and why, and the fence in currency."""
        reasons = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in self.counts.items() if v)
        low, high = (math.exp(b) for b in self.log_fence)
        return (
            f"kept {len(self.kept)} of {len(self.kept) + len(self.excluded)} prices; excluded "
            f"{len(self.excluded)} ({reasons or 'none'}); outlier fence [{low:.2f}, {high:.2f}] "
            f"(log price outside Q1 - {self.iqr_factor:g} IQR .. Q3 + {self.iqr_factor:g} IQR)"
        )


def _is_number_text(value: object) -> bool:
    try:
        float(str(value))
    except ValueError:
        return False
    return True


def clean_prices(frame: pd.DataFrame, *, iqr_factor: float = 3.0) -> CleanedPrices:
    """Classify every price and exclude the unusable ones (rule in the module docstring).

    Args:
        frame: Rows with ``label`` (float price, NaN allowed) and optionally ``price_raw`` (the
            cell as text, to tell missing from non-numeric).
        iqr_factor: ``k`` of the outlier fence on log price, > 0.

    Returns:
        The kept and excluded rows, counts per reason and the fence.

    Raises:
        ValueError: If ``iqr_factor`` is not positive, ``label`` is absent, or fewer than 4 rows
            have a positive finite price (no quartiles).
    """
    if not (math.isfinite(iqr_factor) and iqr_factor > 0):
        raise ValueError(f"iqr_factor must be finite and > 0, got {iqr_factor!r}")
    if "label" not in frame.columns:
        raise ValueError(f"the catalogue has no 'label' (price) column; columns: {list(frame.columns)}")
    price = pd.to_numeric(frame["label"], errors="coerce").astype("float64").to_numpy()
    raw = frame["price_raw"] if "price_raw" in frame.columns else frame["label"]
    is_missing = raw.isna().to_numpy()
    text_number = np.array([_is_number_text(v) if v is not None and v is not pd.NA else True for v in raw])
    reason = np.full(len(frame), "", dtype=object)
    reason[is_missing] = "missing"
    reason[(reason == "") & ~text_number] = "non_numeric"
    with np.errstate(invalid="ignore"):
        reason[(reason == "") & (price <= 0)] = "non_positive"
    reason[(reason == "") & ~np.isfinite(price)] = "not_finite"
    usable = reason == ""
    if usable.sum() < 4:
        raise ValueError(f"only {int(usable.sum())} rows have a positive finite price; at least 4 are needed")
    logs = np.log(price[usable])
    q1, q3 = np.quantile(logs, [0.25, 0.75])
    fence = (float(q1 - iqr_factor * (q3 - q1)), float(q3 + iqr_factor * (q3 - q1)))
    with np.errstate(divide="ignore", invalid="ignore"):
        log_price = np.log(price)
    reason[usable & ((log_price < fence[0]) | (log_price > fence[1]))] = "outlier"
    keep = reason == ""
    excluded = frame.loc[~keep].assign(reason=reason[~keep])
    counts = {problem: int((reason == problem).sum()) for problem in PRICE_PROBLEMS}
    return CleanedPrices(
        frame.loc[keep].reset_index(drop=True), excluded.reset_index(drop=True), counts, fence, iqr_factor
    )


def group_rare_categories(frame: pd.DataFrame, min_items: int, *, column: str = "group") -> pd.DataFrame:
    """Replace categories with fewer than ``min_items`` rows (and missing ones) by ``"other"``.

    Args:
        frame: Rows with a category column.
        min_items: Smallest category kept as its own group, >= 1.
        column: The category column.

    Returns:
        A copy with the column rewritten.

    Raises:
        ValueError: If ``min_items < 1`` or the column is absent.
    """
    if min_items < 1:
        raise ValueError(f"min_items must be >= 1, got {min_items}")
    if column not in frame.columns:
        raise ValueError(f"no category column {column!r}; columns: {list(frame.columns)}")
    counts = frame[column].value_counts(dropna=True)
    big = set(counts[counts >= min_items].index)
    out = frame.copy()
    out[column] = [v if v in big else OTHER_CATEGORY for v in frame[column]]
    return out
