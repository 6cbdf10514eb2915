"""The train flow end to end under a Prefect test harness, on a tiny model, with LDAV and early stopping."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient
from prefect.testing.utilities import prefect_test_harness

from flows.explain_corpus import explain_corpus
from flows.settings import ExplainSettings
from flows.train import train
from flows.train_settings import TrainSettings, load_train_settings
from storage import ArtifactRef, read_artifact
from tests.conftest import save_tiny_model
from xattr.ldav import load_ldav_vectors
from xattr.models.loading import ModelSpec

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def harness():
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = random.Random(0)
    rows = []
    for i in range(48):
        words = [rng.choice(["the", "movie", "plot", "film"]) for _ in range(3)]
        words.append(rng.choice(["good", "great"] if i % 2 == 0 else ["bad", "awful"]))
        rows.append({"id": f"d{i}", "text": " ".join(words), "label": "pos" if i % 2 == 0 else "neg"})
    path = tmp_path_factory.mktemp("corpus") / "reviews.parquet"
    pd.DataFrame(rows).to_parquet(path)
    return path


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("base"), num_labels=2)


def _settings(tmp_path: Path, corpus: Path, base: Path, **extra: object) -> TrainSettings:
    return TrainSettings.model_validate(
        {
            "name": "tiny",
            "workdir": str(tmp_path),
            "corpus": {"path": str(corpus), "id_column": "id", "label_column": "label"},
            "base_model": str(base),
            "split": {"validation_fraction": 0.25, "seed": 1},
            "training": {"epochs": 2, "batch_size": 8, "max_length": 16, "patience": None},
            **extra,
        }
    )


def test_train_flow_with_ldav_saves_vectors_and_logs_the_model(
    harness: None, tmp_path: Path, corpus: Path, base: Path
) -> None:
    settings = _settings(
        tmp_path,
        corpus,
        base,
        ldav={"enabled": True},
        concepts={"phrases": ["good movie"], "word_lists": {"negative": ["bad", "awful"]}},
    )
    summary = train(settings)
    model_dir = Path(summary["output_dir"])
    assert model_dir.parent == tmp_path / "models" and (model_dir / "ldav_vectors.safetensors").is_file()
    assert (summary["train_rows"], summary["validation_rows"], summary["epochs_run"]) == (36, 12, 2)
    assert summary["id2label"] == {"0": "neg", "1": "pos"}
    loaded = ModelSpec(str(model_dir)).load()
    assert loaded.task == "classification" and loaded.id2label == {0: "neg", 1: "pos"}
    vectors = load_ldav_vectors(model_dir)
    assert vectors.labels == ("neg", "pos") and vectors.vectors.shape == (2, 32)
    assert [c["concept"] for c in summary["concepts"]] == ["good movie", "negative"]
    client = MlflowClient(summary["tracking_uri"])
    run = client.get_run(summary["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["ldav.enabled"] == "true"
    history = client.get_metric_history(run.info.run_id, "validation/loss")
    assert [m.step for m in history] == [1, 2]
    assert [m.value for m in history] == pytest.approx([h["validation"]["loss"] for h in summary["history"]])
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "model")}
    assert {"model/config.json", "model/model.safetensors", "model/ldav_vectors.safetensors"} <= logged
    assert {a.path for a in client.list_artifacts(run.info.run_id, "ldav")} == {
        f"ldav/{model_dir.name}.ldav-correlation.csv",
        f"ldav/{model_dir.name}.ldav-concepts.csv",
    }
    assert torch.equal(
        vectors.vectors, load_ldav_vectors(Path(client.download_artifacts(run.info.run_id, "model"))).vectors
    )


def test_ldav_method_explains_a_trained_model_from_config(
    harness: None, tmp_path: Path, corpus: Path, base: Path
) -> None:
    summary = train(_settings(tmp_path, corpus, base, ldav={"enabled": True}))
    settings = ExplainSettings.model_validate(
        {
            "workdir": str(tmp_path / "explain"),
            "corpus": {"path": str(corpus), "id_column": "id", "label_column": "label"},
            "model": {"path": summary["output_dir"]},
            "attribution": {"methods": [{"name": "ldav"}, {"name": "random"}]},
            "evaluation": {"max_texts": 8},
        }
    )
    explained = explain_corpus(settings)
    assert {"aopc", "log_odds"} <= set(explained["metrics"]["ldav"])
    refs = {s["stage"]: s["refs"] for s in explained["stages"]}
    table = read_artifact(ArtifactRef.from_dict(refs["attribute-ldav"]["attributions"])).to_pandas()
    assert len(table) and table["method"].unique().tolist() == ["ldav"]
    # Eq. 5: per text, the non-special token scores have mean 0 and population std 1
    content = table[~table["token"].isin(["[CLS]", "[SEP]"])]
    stats = content.groupby("doc_id")["score"].agg(["mean", lambda v: float(np.std(v))])
    assert np.allclose(stats.iloc[:, 0], 0.0, atol=1e-5) and np.allclose(stats.iloc[:, 1], 1.0, atol=1e-4)


def test_train_flow_stops_early_from_a_config_file(harness: None, tmp_path: Path, corpus: Path, base: Path) -> None:
    config = tmp_path / "train.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "name": "early",
                "corpus": {"path": str(corpus), "label_column": "label"},
                "base_model": str(base),
                "output_dir": "out/model",
                "training": {"epochs": 5, "batch_size": 8, "max_length": 16, "patience": 1, "min_delta": 100.0},
            }
        )
    )
    summary = train(load_train_settings(config))
    assert Path(summary["output_dir"]) == tmp_path / "out" / "model"
    assert (summary["epochs_run"], summary["best_epoch"], summary["stopped_early"]) == (2, 1, True)
    assert not (tmp_path / "out" / "model" / "ldav_vectors.safetensors").exists()
    with pytest.raises(FileExistsError, match="already exists"):
        train(load_train_settings(config))


def test_ldav_settings_refuse_regression_and_concepts_without_ldav(corpus: Path, base: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ldav.enabled needs a single-label classifier"):
        _settings(tmp_path, corpus, base, task="regression", ldav={"enabled": True})
    with pytest.raises(ValueError, match="concepts need LDAV class vectors"):
        _settings(tmp_path, corpus, base, concepts={"phrases": ["good"]})
