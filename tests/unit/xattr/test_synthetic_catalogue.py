from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest

from xattr.data.synthetic_catalogue import (
    BASE_LOG_PRICE,
    PRICE_DRIVERS,
    PriceDriver,
    SyntheticCatalogue,
    expected_log_price,
    generate_catalogue,
)

# The documented pricing function, written out independently of the module.
EFFECTS: dict[tuple[str, str], float] = {
    ("brand", "Apple"): 0.40,
    ("brand", "Acer"): -0.20,
    ("category", "chromebook"): -0.40,
    ("category", "workstation"): 0.35,
    ("cpu", "i5"): 0.25,
    ("cpu", "i7"): 0.50,
    ("cpu", "i9"): 0.80,
    ("ram", "16GB"): 0.20,
    ("ram", "32GB"): 0.45,
    ("storage", "512GB"): 0.15,
    ("storage", "1TB"): 0.30,
    ("condition", "refurbished"): -0.30,
    ("condition", "used"): -0.50,
}
ATTRIBUTES = ("brand", "category", "cpu", "ram", "storage", "condition")
COLUMNS = [
    "doc_id",
    "text",
    "price",
    "brand",
    "category",
    "cpu",
    "ram",
    "storage",
    "screen",
    "condition",
    "colour",
    "expected_log_price",
]


@pytest.fixture(scope="module")
def catalogue() -> SyntheticCatalogue:
    return generate_catalogue(n=3000, seed=0)


@pytest.fixture(scope="module")
def noiseless() -> SyntheticCatalogue:
    return generate_catalogue(n=500, seed=3, noise_sd=0.0)


def test_shape_columns_and_metadata(catalogue: SyntheticCatalogue) -> None:
    assert list(catalogue.frame.columns) == COLUMNS
    assert len(catalogue.frame) == 3000
    assert catalogue.base_log_price == BASE_LOG_PRICE == 6.0
    assert catalogue.noise_sd == 0.1
    assert catalogue.drivers == PRICE_DRIVERS
    assert {(d.attribute, d.word): d.effect for d in catalogue.drivers} == EFFECTS
    assert all(isinstance(d, PriceDriver) for d in catalogue.drivers)
    assert catalogue.frame["price"].dtype == np.float64


def test_drivers_have_both_signs_and_are_single_distinct_words() -> None:
    effects = [d.effect for d in PRICE_DRIVERS]
    assert max(effects) >= 0.75 and min(effects) <= -0.5
    words = [d.word for d in PRICE_DRIVERS]
    assert len(set(words)) == len(words)
    assert all(len(w.split()) == 1 and w == w.strip() for w in words)


def test_same_seed_same_catalogue() -> None:
    pd.testing.assert_frame_equal(generate_catalogue(n=200, seed=7).frame, generate_catalogue(n=200, seed=7).frame)


def test_different_seeds_differ() -> None:
    a = generate_catalogue(n=200, seed=1).frame
    b = generate_catalogue(n=200, seed=2).frame
    assert (a["text"] != b["text"]).sum() > 190
    assert not np.array_equal(a["price"].to_numpy(), b["price"].to_numpy())


def test_prefix_does_not_depend_on_n() -> None:
    short = generate_catalogue(n=50, seed=4).frame
    long = generate_catalogue(n=120, seed=4).frame
    pd.testing.assert_frame_equal(short, long.iloc[:50])


def test_texts_do_not_depend_on_noise_sd() -> None:
    a = generate_catalogue(n=100, seed=5, noise_sd=0.0).frame
    b = generate_catalogue(n=100, seed=5, noise_sd=0.3).frame
    assert a["text"].tolist() == b["text"].tolist()
    assert not np.array_equal(a["price"].to_numpy(), b["price"].to_numpy())


def test_noiseless_price_is_exp_of_documented_function(noiseless: SyntheticCatalogue) -> None:
    frame = noiseless.frame
    for row in frame.itertuples(index=False):
        by_hand = 6.0 + sum(EFFECTS.get((a, getattr(row, a)), 0.0) for a in ATTRIBUTES)
        assert row.expected_log_price == pytest.approx(by_hand, abs=1e-12)
        assert expected_log_price(row.text) == pytest.approx(by_hand, abs=1e-12)
        assert abs(row.price - math.exp(by_hand)) <= 0.005 + 1e-9
        assert row.price == round(math.exp(by_hand), 2)


def test_noise_is_gaussian_on_log_price_with_the_stated_sd(catalogue: SyntheticCatalogue) -> None:
    frame = catalogue.frame
    residual = np.log(frame["price"].to_numpy()) - frame["expected_log_price"].to_numpy()
    assert abs(residual.mean()) < 0.01
    assert residual.std() == pytest.approx(0.1, rel=0.05)


def test_screen_colour_and_filler_do_not_move_price(noiseless: SyntheticCatalogue) -> None:
    frame = noiseless.frame
    residual = np.log(frame["price"]) - frame["expected_log_price"]
    assert np.abs(residual).max() < 1e-4  # only rounding to cents is left
    assert frame["screen"].nunique() == 4 and frame["colour"].nunique() == 5


def test_prices_are_positive_and_rounded_to_cents(catalogue: SyntheticCatalogue) -> None:
    price = catalogue.frame["price"].to_numpy()
    assert (price > 0).all()
    np.testing.assert_allclose(price * 100, np.round(price * 100), atol=1e-6)


def test_each_level_is_a_whole_word_of_its_text(catalogue: SyntheticCatalogue) -> None:
    for row in catalogue.frame.itertuples(index=False):
        words = row.text.split()
        for attribute in (*ATTRIBUTES, "screen", "colour"):
            assert getattr(row, attribute) in words, (attribute, row.text)


def test_driver_word_occurs_exactly_when_its_level_is_present(
    catalogue: SyntheticCatalogue,
) -> None:
    frame = catalogue.frame
    word_sets = [set(text.split()) for text in frame["text"]]
    for driver in PRICE_DRIVERS:
        present = np.array([driver.word in words for words in word_sets])
        has_level = (frame[driver.attribute] == driver.word).to_numpy()
        assert np.array_equal(present, has_level), driver
        assert 0.05 < present.mean() < 0.5, driver
        # Never glued to punctuation: no other token contains the word.
        glued = [t for t in frame["text"] if re.search(rf"\S{driver.word}|{driver.word}\S", t)]
        assert not glued, (driver, glued[:3])


def test_levels_and_word_order_vary(catalogue: SyntheticCatalogue) -> None:
    frame = catalogue.frame
    assert set(frame["brand"]) == {"Dell", "HP", "Lenovo", "Asus", "Acer", "Apple"}
    assert set(frame["category"]) == {"laptop", "chromebook", "workstation"}
    assert set(frame["condition"]) == {"new", "refurbished", "used"}
    first_words = frame["text"].str.split().str[0]
    assert first_words.nunique() > 20
    cpu_positions = [t.split().index(c) for t, c in zip(frame["text"], frame["cpu"], strict=True)]
    assert len(set(cpu_positions)) > 10
    fillers = frame["text"].str.contains("fast shipping|great deal|lightweight")
    assert 0.1 < fillers.mean() < 0.9


def test_doc_ids_are_unique_and_formatted(catalogue: SyntheticCatalogue) -> None:
    ids = catalogue.frame["doc_id"]
    assert ids.is_unique
    assert ids.iloc[0] == "item-00000" and ids.iloc[-1] == "item-02999"


def test_texts_are_short() -> None:
    lengths = generate_catalogue(n=300, seed=0).frame["text"].str.split().str.len()
    assert lengths.min() >= 10 and lengths.max() <= 30


def test_single_row() -> None:
    frame = generate_catalogue(n=1, seed=0).frame
    assert len(frame) == 1 and frame["doc_id"].tolist() == ["item-00000"]


@pytest.mark.parametrize("n", [0, -3])
def test_rejects_n_below_one(n: int) -> None:
    with pytest.raises(ValueError, match="n must be at least 1"):
        generate_catalogue(n=n)


def test_rejects_non_integer_n() -> None:
    with pytest.raises(TypeError, match="n must be an integer"):
        generate_catalogue(n=2.5)  # type: ignore[arg-type]


@pytest.mark.parametrize("noise_sd", [-0.1, float("nan"), float("inf")])
def test_rejects_bad_noise_sd(noise_sd: float) -> None:
    with pytest.raises(ValueError, match="noise_sd"):
        generate_catalogue(n=5, noise_sd=noise_sd)
