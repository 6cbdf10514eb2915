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
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = [
    "OTHER_CATEGORY",
    "PRICE_PROBLEMS",
    "CleanedPrices",
    "PreparedCatalogue",
    "ProductsError",
    "catalogue_from_table",
    "clean_prices",
    "group_rare_categories",
    "prepare_catalogue",
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


def catalogue_from_table(frame: pd.DataFrame, columns: Mapping[str, str | None], *, source: object) -> pd.DataFrame:
    """A user's table in the canonical columns of :func:`read_products` (``format: table``).

    Args:
        frame: The table as read (e.g. :func:`xattr.data.corpus.read_table_file`).
        columns: Column of each role: ``text`` and ``price`` (required), ``category``, ``brand``
            and ``id`` (``None``: absent; ids then are ``row-<i>``).
        source: What the table came from, named in error messages.

    Returns:
        ``doc_id``, ``text`` (empty cells as ""), ``label`` (price as float; NaN when missing or
        not a number), ``group`` and ``brand`` (null when the role has no column or the cell is
        empty) and ``price_raw`` (the price cell as text, null when empty).

    Raises:
        ProductsError: A named column is missing, or the id column has duplicate values.
    """
    for role in ("text", "price"):
        if columns.get(role) not in frame.columns:
            raise ProductsError(
                f"{source}: the {role} column {columns.get(role)!r} is missing (has {list(frame.columns)})"
            )
    for role in ("category", "brand", "id"):
        if columns.get(role) and columns[role] not in frame.columns:
            raise ProductsError(f"{source}: the {role} column {columns[role]!r} is missing (has {list(frame.columns)})")
    raw = frame[columns["price"]]
    ids = frame[columns["id"]].astype(str) if columns.get("id") else pd.Series([f"row-{i}" for i in range(len(frame))])
    if ids.duplicated().any():
        raise ProductsError(
            f"{source}: id column {columns['id']!r} has duplicate values, e.g. {ids[ids.duplicated()].iloc[0]!r}"
        )

    def optional(role: str) -> pd.Series:
        name = columns.get(role)
        return frame[name].astype(object).where(frame[name].notna(), None) if name else pd.Series([None] * len(frame))

    return pd.DataFrame(
        {
            "doc_id": ids.to_numpy(),
            "text": frame[columns["text"]].fillna("").astype(str).to_numpy(),
            "label": pd.to_numeric(raw, errors="coerce").astype("float64").to_numpy(),
            "group": optional("category").to_numpy(),
            "brand": optional("brand").to_numpy(),
            "price_raw": raw.astype(object)
            .where(raw.notna(), None)
            .astype(object)
            .map(lambda v: None if v is None else str(v))
            .to_numpy(),
        }
    )


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


@dataclass(frozen=True)
class PreparedCatalogue:
    """A catalogue ready for price modelling.

    Attributes:
        cleaned: The price rule's outcome on every row read (:func:`clean_prices`).
        kept: Kept rows after sampling, rare categories grouped (all canonical columns).
        corpus: ``kept`` in corpus columns: ``doc_id, text, text_pair, label, label_set, group``
            (``label`` = price, ``group`` = category or None).
        metrics: Rows read, kept, sampled and excluded (also per reason), the log-price fence,
            the number of categories and of rows in :data:`OTHER_CATEGORY`.
    """

    cleaned: CleanedPrices
    kept: pd.DataFrame
    corpus: pd.DataFrame
    metrics: dict[str, float]


def prepare_catalogue(
    frame: pd.DataFrame,
    *,
    iqr_factor: float,
    min_category_items: int,
    max_rows: int | None,
    seed: int,
    source: object,
) -> PreparedCatalogue:
    """Exclude unusable prices, sample ``max_rows`` kept rows (seeded), group rare categories.

    Args:
        frame: Canonical product rows (:func:`read_products`, :func:`catalogue_from_table`).
        iqr_factor: ``k`` of the outlier fence (:func:`clean_prices`).
        min_category_items: Smallest category kept as its own group (:func:`group_rare_categories`).
        max_rows: Kept rows sampled without replacement, in catalogue order (``None``: all).
        seed: Seed of the sample.
        source: What the catalogue came from, named in error messages.

    Returns:
        The :class:`PreparedCatalogue`.

    Raises:
        ProductsError: A listing has no text.
        ValueError: From :func:`clean_prices`.
    """
    empty = frame["text"].str.strip() == ""
    if empty.any():
        raise ProductsError(
            f"{source}: {int(empty.sum())} listings have no text, e.g. {frame.loc[empty, 'doc_id'].iloc[0]!r}"
        )
    cleaned = clean_prices(frame, iqr_factor=iqr_factor)
    kept = cleaned.kept
    if max_rows is not None and len(kept) > max_rows:
        rng = np.random.default_rng(seed)
        kept = kept.iloc[np.sort(rng.choice(len(kept), size=max_rows, replace=False))].reset_index(drop=True)
    has_groups = kept["group"].notna().any()
    if has_groups:
        kept = group_rare_categories(kept, min_category_items)
    corpus = pd.DataFrame(
        {
            "doc_id": kept["doc_id"],
            "text": kept["text"],
            "text_pair": None,
            "label": kept["label"].astype("float64"),
            "label_set": None,
            "group": kept["group"] if has_groups else None,
        }
    )
    metrics = {
        "rows_read": float(len(frame)),
        "rows_kept": float(len(cleaned.kept)),
        "rows": float(len(kept)),
        "excluded": float(len(cleaned.excluded)),
        "log_fence_low": cleaned.log_fence[0],
        "log_fence_high": cleaned.log_fence[1],
        "categories": float(kept["group"].nunique()) if has_groups else 0.0,
        "in_other_category": float((kept["group"] == OTHER_CATEGORY).sum()) if has_groups else 0.0,
    } | {f"excluded_{k}": float(v) for k, v in cleaned.counts.items()}
    return PreparedCatalogue(cleaned, kept, corpus, metrics)
