"""Reading product tables and the price rule, on inline samples with hand-computed fences."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from xattr.data.products import (
    OTHER_CATEGORY,
    ProductsError,
    catalogue_from_table,
    clean_prices,
    group_rare_categories,
    prepare_catalogue,
    read_products,
)

WALMART = pd.DataFrame(
    {
        "_id": pd.array([0, 1, 2], dtype="Int64"),
        "title": ["draper infrared remote transmitter", "epson 1500 hours projector lamp", None],
        "category": ["electronics - general", "monitors", None],
        "brand": ["draper", "epson", "sony"],
        "modelno": ["121066", "elplp12", "x"],
        "price": [58.45, 0.0, np.nan],
    }
)


def test_walmart_amazon_directory_reads_both_tables(tmp_path: Path) -> None:
    WALMART.to_parquet(tmp_path / "table_a.parquet")
    amazon = pd.DataFrame(
        {
            "_id": [0],
            "title": ["koss eq50 3-band stereo equalizer"],
            "category": ["headphone accessories"],
            "brand": ["Koss Corp"],
            "modelno": ["152132"],
            "price": ["call us"],
        }
    )
    amazon.to_csv(tmp_path / "table_b.csv", index=False)
    frame = read_products(tmp_path)
    assert frame["doc_id"].tolist() == ["table_a-0", "table_a-1", "table_a-2", "table_b-0"]
    # The brand is appended only when the title lacks it as whole words.
    assert frame["text"].tolist() == [
        "draper infrared remote transmitter",
        "epson 1500 hours projector lamp",
        "sony",
        "koss eq50 3-band stereo equalizer Koss Corp",
    ]
    assert frame["label"].iloc[0] == 58.45 and frame["label"].iloc[1] == 0.0
    assert math.isnan(frame["label"].iloc[2]) and math.isnan(frame["label"].iloc[3])
    assert frame["price_raw"].tolist() == ["58.45", "0.0", None, "call us"]
    assert frame["group"].tolist() == ["electronics - general", "monitors", None, "headphone accessories"]
    assert frame["brand"].tolist() == ["draper", "epson", "sony", "Koss Corp"]
    assert frame["source"].tolist() == ["table_a", "table_a", "table_a", "table_b"]


def test_abt_buy_table_uses_name_and_has_no_brand_or_category(tmp_path: Path) -> None:
    path = tmp_path / "table_a.csv"
    pd.DataFrame(
        {"_id": [7], "name": ["sony turntable pslx350h"], "description": ["belt drive"], "price": ["99"]}
    ).to_csv(path, index=False)
    frame = read_products(path)
    assert frame.to_dict("records")[0] | {} == {
        "doc_id": "table_a-7",
        "text": "sony turntable pslx350h",
        "label": 99.0,
        "group": None,
        "brand": None,
        "price_raw": "99",
        "source": "table_a",
    }


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (pd.DataFrame({"_id": [1], "title": ["x"]}), "missing column 'price'"),
        (pd.DataFrame({"_id": [1], "text": ["x"], "price": [1.0]}), "no title column"),
        (pd.DataFrame({"_id": [1, 1], "title": ["x", "y"], "price": [1.0, 2.0]}), "duplicate values, e.g. '1'"),
    ],
)
def test_bad_tables_are_named(tmp_path: Path, frame: pd.DataFrame, message: str) -> None:
    path = tmp_path / "table_b.parquet"
    frame.to_parquet(path)
    with pytest.raises(ProductsError, match=message) as info:
        read_products(path)
    assert str(path) in str(info.value)


def test_missing_path_and_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(ProductsError, match="no such file"):
        read_products(tmp_path / "nope")
    with pytest.raises(ProductsError, match="neither table_a nor table_b"):
        read_products(tmp_path)


def test_price_rule_reports_every_reason_and_the_log_iqr_fence() -> None:
    good = [10.0, 20.0, 40.0, 80.0, 160.0]
    frame = pd.DataFrame(
        {
            "doc_id": [f"d{i}" for i in range(10)],
            "label": [*good, np.nan, np.nan, 0.0, -5.0, 1e9],
            "price_raw": ["10", "20", "40", "80", "160", None, "n/a", "0", "-5", "1e9"],
        }
    )
    cleaned = clean_prices(frame, iqr_factor=1.0)
    # Quartiles of the 6 positive log prices (10..160 and 1e9), computed by hand.
    logs = np.log([10.0, 20.0, 40.0, 80.0, 160.0, 1e9])
    q1, q3 = np.quantile(logs, [0.25, 0.75])
    assert cleaned.log_fence == pytest.approx((q1 - (q3 - q1), q3 + (q3 - q1)))
    assert cleaned.counts == {"missing": 1, "non_numeric": 1, "non_positive": 2, "not_finite": 0, "outlier": 1}
    assert cleaned.kept["doc_id"].tolist() == ["d0", "d1", "d2", "d3", "d4"]
    assert dict(zip(cleaned.excluded["doc_id"], cleaned.excluded["reason"], strict=True)) == {
        "d5": "missing",
        "d6": "non_numeric",
        "d7": "non_positive",
        "d8": "non_positive",
        "d9": "outlier",
    }
    assert cleaned.describe().startswith("kept 5 of 10 prices; excluded 5 (missing 1, non numeric 1, non positive 2")


def test_price_rule_k3_keeps_a_wide_but_sane_range() -> None:
    prices = np.exp(np.linspace(0, 4, 41))
    frame = pd.DataFrame({"label": [*prices, math.exp(9.5), math.exp(-5.5)]})
    cleaned = clean_prices(frame)
    # 43 log prices -5.5, 0, 0.1, ..., 4, 9.5: Q1 = (0.9 + 1.0) / 2, Q3 = (3.0 + 3.1) / 2, IQR 2.1.
    assert cleaned.log_fence == pytest.approx((0.95 - 6.3, 3.05 + 6.3))
    assert cleaned.counts["outlier"] == 2 and len(cleaned.kept) == 41


def test_price_rule_needs_prices_and_a_positive_factor() -> None:
    with pytest.raises(ValueError, match="only 2 rows"):
        clean_prices(pd.DataFrame({"label": [1.0, 2.0, np.nan]}))
    with pytest.raises(ValueError, match="iqr_factor"):
        clean_prices(pd.DataFrame({"label": [1.0] * 5}), iqr_factor=0)
    with pytest.raises(ValueError, match="no 'label'"):
        clean_prices(pd.DataFrame({"price": [1.0] * 5}))


def test_rare_and_missing_categories_go_to_other() -> None:
    frame = pd.DataFrame({"group": ["a", "a", "a", "b", "b", "c", None]})
    out = group_rare_categories(frame, 2)
    assert out["group"].tolist() == ["a", "a", "a", "b", "b", OTHER_CATEGORY, OTHER_CATEGORY]
    assert frame["group"].iloc[5] == "c"  # the input is not modified
    with pytest.raises(ValueError, match="min_items"):
        group_rare_categories(frame, 0)


TABLE_COLUMNS = {"text": "title", "price": "cost", "category": "cat", "brand": "maker", "id": "sku"}


def test_a_user_table_maps_to_canonical_columns() -> None:
    frame = pd.DataFrame(
        {
            "sku": [7, 8, 9],
            "title": ["Dell laptop", None, "HP mouse"],
            "cost": ["499.5", "call us", None],
            "cat": ["laptop", None, "mouse"],
            "maker": ["dell", "hp", None],
        }
    )
    out = catalogue_from_table(frame, TABLE_COLUMNS, source="t.csv")
    assert out.columns.tolist() == ["doc_id", "text", "label", "group", "brand", "price_raw"]
    assert out["doc_id"].tolist() == ["7", "8", "9"]
    assert out["text"].tolist() == ["Dell laptop", "", "HP mouse"]
    assert out["label"].tolist()[0] == 499.5 and np.isnan(out["label"].tolist()[1:]).all()
    assert out["group"].tolist()[::2] == ["laptop", "mouse"] and pd.isna(out["group"].iloc[1])
    assert out["brand"].tolist()[:2] == ["dell", "hp"] and pd.isna(out["brand"].iloc[2])
    assert out["price_raw"].tolist()[:2] == ["499.5", "call us"] and pd.isna(out["price_raw"].iloc[2])
    minimal = catalogue_from_table(frame, {"text": "title", "price": "cost"}, source="t.csv")
    assert minimal["doc_id"].tolist() == ["row-0", "row-1", "row-2"]
    assert minimal["group"].tolist() == [None, None, None] and minimal["brand"].tolist() == [None, None, None]


def test_a_user_table_with_missing_or_duplicate_columns_is_named() -> None:
    frame = pd.DataFrame({"sku": [1, 1], "title": ["a", "b"], "cost": [1.0, 2.0]})
    with pytest.raises(ProductsError, match=r"t\.csv: the price column 'price' is missing"):
        catalogue_from_table(frame, {"text": "title", "price": "price"}, source="t.csv")
    with pytest.raises(ProductsError, match="the brand column 'maker' is missing"):
        catalogue_from_table(frame, {"text": "title", "price": "cost", "brand": "maker"}, source="t.csv")
    with pytest.raises(ProductsError, match="id column 'sku' has duplicate values, e.g. '1'"):
        catalogue_from_table(frame, {"text": "title", "price": "cost", "id": "sku"}, source="t.csv")


def _listings(prices: list[float], groups: list[str | None]) -> pd.DataFrame:
    n = len(prices)
    return pd.DataFrame(
        {
            "doc_id": [f"d{i}" for i in range(n)],
            "text": [f"item {i}" for i in range(n)],
            "label": prices,
            "group": groups,
            "brand": [None] * n,
            "price_raw": [str(p) for p in prices],
        }
    )


def test_prepare_catalogue_excludes_samples_and_groups() -> None:
    frame = _listings([10.0, 20.0, 30.0, 40.0, 50.0, 0.0, 60.0], ["a", "a", "a", "b", "b", "a", "c"])
    prepared = prepare_catalogue(frame, iqr_factor=3.0, min_category_items=2, max_rows=None, seed=0, source="x")
    assert prepared.cleaned.excluded["doc_id"].tolist() == ["d5"]  # price 0
    assert prepared.corpus.columns.tolist() == ["doc_id", "text", "text_pair", "label", "label_set", "group"]
    assert prepared.corpus["doc_id"].tolist() == ["d0", "d1", "d2", "d3", "d4", "d6"]
    assert prepared.corpus["group"].tolist() == ["a", "a", "a", "b", "b", OTHER_CATEGORY]
    assert prepared.corpus["text_pair"].isna().all() and prepared.corpus["label_set"].isna().all()
    m = prepared.metrics
    assert (m["rows_read"], m["rows_kept"], m["rows"], m["excluded"]) == (7.0, 6.0, 6.0, 1.0)
    assert (m["categories"], m["in_other_category"], m["excluded_non_positive"]) == (3.0, 1.0, 1.0)
    assert (m["log_fence_low"], m["log_fence_high"]) == prepared.cleaned.log_fence
    sampled = prepare_catalogue(frame, iqr_factor=3.0, min_category_items=1, max_rows=3, seed=4, source="x")
    picked = np.sort(np.random.default_rng(4).choice(6, size=3, replace=False))
    assert sampled.corpus["doc_id"].tolist() == [["d0", "d1", "d2", "d3", "d4", "d6"][i] for i in picked]
    assert sampled.metrics["rows"] == 3.0 and sampled.metrics["rows_kept"] == 6.0


def test_prepare_catalogue_without_categories_and_with_empty_text() -> None:
    frame = _listings([10.0, 20.0, 30.0, 40.0], [None] * 4)
    prepared = prepare_catalogue(frame, iqr_factor=3.0, min_category_items=2, max_rows=None, seed=0, source="x")
    assert prepared.corpus["group"].isna().all()
    assert (prepared.metrics["categories"], prepared.metrics["in_other_category"]) == (0.0, 0.0)
    frame.loc[2, "text"] = "  "
    with pytest.raises(ProductsError, match="x: 1 listings have no text, e.g. 'd2'"):
        prepare_catalogue(frame, iqr_factor=3.0, min_category_items=2, max_rows=None, seed=0, source="x")
