"""price_drivers end to end under a Prefect test harness: tiny model, small synthetic catalogue, CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient
from prefect.testing.utilities import prefect_test_harness
from typer.testing import CliRunner

from flows.cli import app
from flows.price_drivers import price_drivers
from flows.price_settings import PriceDriverSettings, load_price_settings
from flows.settings import SettingsError
from storage import read_artifact_path
from xattr.data.synthetic_catalogue import generate_catalogue

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def harness():
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory: pytest.TempPathFactory) -> Path:
    frame = generate_catalogue(n=160, seed=1).frame
    frame["price"] = frame["price"].astype(object)
    frame.loc[0, "price"] = 0.0
    frame.loc[1, "price"] = None
    frame.loc[2, "price"] = "call us"
    frame.loc[3, "price"] = 5e6
    frame.loc[frame.index[-6:], "category"] = "tablet"  # too few: grouped into "other"
    path = tmp_path_factory.mktemp("catalogue") / "catalogue.csv"
    frame.to_csv(path, index=False)
    return path


def _config(tmp_path: Path, catalogue: Path, model: Path) -> Path:
    config = {
        "name": "price-test",
        "workdir": "work",
        "catalogue": {
            "path": str(catalogue),
            "format": "table",
            "category_column": "category",
            "brand_column": "brand",
            "id_column": "doc_id",
            "min_category_items": 10,
        },
        "model": {"path": str(model), "max_length": 40},
        "drivers": {"min_texts": 5, "resamples": 200, "noun_chunks": False},
    }
    path = tmp_path / "price.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_cli_runs_the_flow_and_writes_every_output(harness, tmp_path: Path, catalogue: Path, tiny_regressor_dir):
    config = _config(tmp_path, catalogue, tiny_regressor_dir)
    result = CliRunner().invoke(app, ["report", "price-drivers", str(config)])
    assert result.exit_code == 0, result.output
    assert "excluded 4 (missing 1, non numeric 1, non positive 1, outlier 1)" in " ".join(result.output.split())
    settings = load_price_settings(config)
    runs = sorted((settings.workdir / "artifacts").iterdir())
    assert len(runs) == 1
    run = runs[0]
    drivers = read_artifact_path(run / "price_drivers" / "drivers.parquet", "price_drivers").to_pandas()
    assert set(drivers["scope"]) == {"overall", "category"}
    assert set(drivers.loc[drivers["scope"] == "category", "category"]) <= {
        "laptop",
        "chromebook",
        "workstation",
        "other",
    }
    assert "other" in set(drivers["category"])  # the 6 tablets plus small categories
    assert (drivers["texts"] >= 5).all()
    assert np.isfinite(drivers["mean_effect"]).all()
    assert {"word", "attribute"} <= set(drivers["kind"])
    excluded = pd.read_csv(run / "prepare_catalogue" / "excluded_prices.csv")
    assert dict(zip(excluded["doc_id"], excluded["reason"], strict=True)) == {
        "item-00000": "non_positive",
        "item-00001": "missing",
        "item-00002": "non_numeric",
        "item-00003": "outlier",
    }
    report = (run / "price_drivers" / "report.html").read_text()
    assert report.count("data:image/png;base64,") == 4
    assert "item-00002" in report and "non_numeric" in report
    plots = sorted(p.name for p in (run / "price_drivers" / "plots").iterdir())
    assert plots == ["category_heatmap.png", "predicted_vs_actual.png", "top_negative.png", "top_positive.png"]

    client = MlflowClient(settings.tracking_uri())
    experiment = client.get_experiment_by_name("xattr-price-drivers")
    parents = [r for r in client.search_runs([experiment.experiment_id]) if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert logged == {"report/report.html"}
    assert len(client.list_artifacts(parent.info.run_id, "plots")) == 4
    assert parent.data.metrics["excluded_outlier"] == 1.0
    assert -1e6 < parent.data.metrics["r2"] < 1.0 and 0.0 < parent.data.metrics["baseline_r2"] < 1.0


def test_second_run_reuses_every_stage(harness, tmp_path: Path, catalogue: Path, tiny_regressor_dir):
    settings = load_price_settings(_config(tmp_path, catalogue, tiny_regressor_dir))
    first = price_drivers(settings)
    second = price_drivers(settings)
    assert first["cache_hits"] == 0
    assert second["cache_hits"] == len(second["stages"]) == 5  # prepare, encode, index, attribute, drivers
    assert second["drivers"] == first["drivers"]


def test_attribution_estimate_runs_without_masking_and_with_another_method(
    harness, tmp_path: Path, catalogue: Path, tiny_regressor_dir
):
    settings = load_price_settings(_config(tmp_path, catalogue, tiny_regressor_dir))
    settings = settings.model_copy(
        update={
            "drivers": settings.drivers.model_copy(
                update={"effect": "attribution", "method": {"name": "grad_input", "params": {"reduction": "sum"}}}
            )
        }
    )
    settings = PriceDriverSettings.model_validate(settings.model_dump())
    summary = price_drivers(settings)
    assert summary["stages"] == ["prepare_catalogue", "attribute-grad_input", "price_drivers"]
    drivers = read_artifact_path(summary["drivers"], "price_drivers").to_pandas()
    # The estimate is y - attribution, so the mean output effect is the mean attribution.
    np.testing.assert_allclose(drivers["mean_output_effect"], drivers["mean_attribution"], rtol=1e-9, atol=1e-12)


def test_unsigned_methods_and_bad_rules_are_refused(tmp_path: Path, catalogue: Path, tiny_regressor_dir):
    config = _config(tmp_path, catalogue, tiny_regressor_dir)
    raw = yaml.safe_load(config.read_text())
    raw["drivers"]["method"] = {"name": "simple_grad"}
    config.write_text(yaml.safe_dump(raw))
    with pytest.raises(SettingsError, match="must give signed scores"):
        load_price_settings(config)
    raw["drivers"]["method"] = {"name": "grad_input", "params": {"reduction": "sum"}}
    raw["drivers"]["rules"] = [{"attribute": "x", "pattern": "(oops"}]
    config.write_text(yaml.safe_dump(raw))
    with pytest.raises(SettingsError, match="invalid pattern"):
        load_price_settings(config)
    result = CliRunner().invoke(app, ["report", "price-drivers", str(config)])
    assert result.exit_code == 2 and "invalid pattern" in result.output


def test_without_a_model_the_flow_fine_tunes_one_on_the_training_listings(
    harness, tmp_path: Path, catalogue: Path, tiny_regressor_dir
):
    import json

    from xattr.reporting.price_drivers import holdout_mask

    config = _config(tmp_path, catalogue, tiny_regressor_dir)
    raw = yaml.safe_load(config.read_text())
    raw["model"] = {"path": None, "base_model": str(tiny_regressor_dir), "epochs": 1, "max_length": 40}
    raw["drivers"]["method"] = {"name": "grad_input", "params": {"reduction": "sum"}}
    config.write_text(yaml.safe_dump(raw))
    settings = load_price_settings(config)
    first = price_drivers(settings)
    assert first["stages"] == ["prepare_catalogue", "train_price_model", "attribute-grad_input", "price_drivers"]
    model_dir = Path(first["model_path"])
    assert model_dir.parent == settings.workdir / "models" and model_dir.name.startswith("price-")
    saved = json.loads((model_dir / "config.json").read_text())
    assert saved["xattr_output_transform"] == "log" and saved["xattr_task"] == "regression"
    # Trained on the listings that are not held out: 156 kept, minus the held-out share.
    corpus = pd.read_csv(catalogue)
    kept = corpus[~corpus["doc_id"].isin(["item-00000", "item-00001", "item-00002", "item-00003"])]
    held_out = holdout_mask(kept["doc_id"].tolist(), 0.2, 0)
    client = MlflowClient(settings.tracking_uri())
    stage_runs = client.search_runs(
        [client.get_experiment_by_name("xattr-price-drivers").experiment_id],
        filter_string="tags.`xattr.stage` = 'train_price_model'",
    )
    assert stage_runs[0].data.metrics["train_rows"] == float((~held_out).sum())
    second = price_drivers(settings)
    assert second["model_path"] == first["model_path"] and second["cache_hits"] == 4
