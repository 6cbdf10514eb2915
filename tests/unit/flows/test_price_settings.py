"""Settings of the price_drivers flow, the shipped Walmart-Amazon config and the real catalogue's price rule."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.price_settings import PriceDriverSettings, load_price_settings
from flows.settings import SettingsError
from xattr.data.products import clean_prices, read_products

REPO = Path(__file__).resolve().parents[3]
SHARED = REPO.parent / "shared" / "data" / "products" / "walmart_amazon"


def test_defaults_are_signed_lafa_with_masked_effects(tmp_path: Path) -> None:
    settings = PriceDriverSettings.model_validate({"catalogue": {"path": str(tmp_path)}})
    method = settings.drivers.method
    assert (method.name, method.params["base"], method.params["base_params"]) == (
        "lafa",
        "grad_input",
        {"reduction": "sum"},
    )
    assert settings.drivers.effect == "mask" and settings.drivers.replacement == "mask"
    assert settings.model.path is None and settings.model.train_config().validation_fraction == 0.0
    assert settings.tracking_uri() == f"sqlite:///{(Path('xattr-runs').resolve() / 'mlflow.db')}"


def test_shipped_config_finds_the_catalogue_under_the_data_root(tmp_path: Path, monkeypatch) -> None:
    shipped = REPO / "configs" / "price-drivers-walmart-amazon.yaml"
    monkeypatch.delenv("XATTR_DATA_ROOT", raising=False)
    settings = load_price_settings(shipped)
    # ../shared/data from the repository root: a fresh clone next to shared/ finds it.
    assert settings.data_root == (REPO.parent / "shared" / "data").resolve()
    assert settings.catalogue.path == SHARED.resolve()
    monkeypatch.setenv("XATTR_DATA_ROOT", str(tmp_path / "env"))
    assert load_price_settings(shipped).catalogue.path == tmp_path / "env" / "products" / "walmart_amazon"
    moved = load_price_settings(shipped, data_root=tmp_path / "arg")
    assert moved.catalogue.path == tmp_path / "arg" / "products" / "walmart_amazon"
    with pytest.raises(SettingsError, match=r"catalogue.path: '.*/env/products/walmart_amazon' does not exist"):
        load_price_settings(shipped).check_inputs(shipped)
    monkeypatch.delenv("XATTR_DATA_ROOT")
    # Without data_root in the config, the catalogue stays relative to the config file.
    config = tmp_path / "c.yaml"
    config.write_text("catalogue: {path: cat.csv}\n")
    assert load_price_settings(config).catalogue.path == tmp_path / "cat.csv"


def test_shipped_config_resolves_paths_relative_to_itself() -> None:
    settings = load_price_settings(REPO / "configs" / "price-drivers-walmart-amazon.yaml")
    assert settings.catalogue.path == SHARED.resolve()
    assert settings.workdir == (REPO / "xattr-runs" / "price-drivers").resolve()
    assert settings.catalogue.max_rows == 4000 and settings.model.max_length == 48 and settings.model.epochs == 2


def test_layer_auto_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("catalogue: {path: x}\nencode: {layer: auto}\n")
    with pytest.raises(SettingsError, match="encode.layer: auto and encode.layer_precision are explain_corpus"):
        load_price_settings(config)


def test_unknown_fields_are_named(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("catalogue: {path: x, iqr: 3}\n")
    with pytest.raises(SettingsError, match=r"catalogue.iqr: Extra inputs are not permitted"):
        load_price_settings(config)
    with pytest.raises(SettingsError, match="does not exist"):
        load_price_settings(tmp_path / "missing.yaml")


def test_cli_has_the_report_command() -> None:
    result = CliRunner().invoke(app, ["report", "price-drivers", "--help"])
    assert result.exit_code == 0 and "xattr report price-drivers" in result.output and "config" in result.output


@pytest.mark.skipif(not SHARED.exists(), reason="needs ../shared/data/products/walmart_amazon")
def test_walmart_amazon_price_rule_on_the_real_tables() -> None:
    frame = read_products(SHARED)
    assert len(frame) == 2554 + 22074 and frame["doc_id"].is_unique
    cleaned = clean_prices(frame)
    # README: Amazon has 19,214 prices of 22,074; Walmart all 2,554 (with 0.0 and a 70,416.50 item).
    assert cleaned.counts["missing"] == 22074 - 19214
    assert cleaned.counts["non_numeric"] == 0
    assert "table_a-301" in set(cleaned.excluded.loc[cleaned.excluded["reason"] == "outlier", "doc_id"])
    assert (cleaned.kept["label"] > 0).all() and len(cleaned.kept) + len(cleaned.excluded) == len(frame)
