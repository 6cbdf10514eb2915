"""The benchmark flow end to end on tiny models: fine-tune + regression metrics, a given classifier + gold."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from prefect.testing.utilities import prefect_test_harness

from flows.benchmark import benchmark
from flows.benchmark_settings import load_benchmark_settings
from flows.settings import SettingsError
from storage import ArtifactRef, artifact_metadata, read_artifact
from tasks.corpus_io import read_corpus
from tasks.head_statistics import read_head_masks
from tasks.models import loaded_model
from xattr.metrics.applicability import MetricNotApplicableError
from xattr.models.loading import ModelSpec
from xattr.neighbours.precision import layer_precisions

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "benchmarks" / "tiny.yaml"
TREES = [
    "(3 (2 the) (4 (4 good) (2 film)))",
    "(1 (2 the) (0 (0 bad) (2 plot)))",
    "(4 (4 great) (3 (2 fun) (2 .)))",
    "(0 (0 awful) (1 (2 boring) (2 movie)))",
    "(3 (2 it) (3 (2 was) (4 (2 very) (4 good))))",
    "(1 (2 not) (1 (2 really) (0 fun)))",
]


@pytest.fixture(scope="module")
def harness():
    with prefect_test_harness():
        yield


def _children(uri: str, parent: str) -> dict[str, object]:
    """The per-method child runs (every stage also has a child run of its own, tagged ``xattr.stage``)."""
    client = MlflowClient(uri)
    run = client.get_run(parent)
    runs = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{parent}'")
    return {r.info.run_name: r for r in runs if "xattr.method" in r.data.tags}


def _stage_runs(uri: str, parent: str) -> dict[str, object]:
    client = MlflowClient(uri)
    run = client.get_run(parent)
    runs = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{parent}'")
    return {r.info.run_name: r for r in runs if "xattr.stage" in r.data.tags}


def test_regression_benchmark_fine_tunes_and_logs_one_run_per_method(harness, tiny_regressor_dir, tmp_path) -> None:
    overrides = {
        "workdir": str(tmp_path / "work"),
        "train": {"base_model": str(tiny_regressor_dir)},
        "evaluation": {"neighbour_precision": True, "neighbours": 3},
    }
    settings = load_benchmark_settings(TINY, overrides)
    summary = benchmark(settings)
    # LAFA Eq. 8 per layer on the evaluation pool equals a direct computation on the same texts.
    pool = read_artifact(ArtifactRef.from_dict(summary["eval_split"])).to_pandas()
    loaded = loaded_model(ModelSpec(summary["model"], None, False, 32, None))
    view = read_corpus(ArtifactRef.from_dict(summary["eval_split"]), loaded)
    keep = [i for i, g in enumerate(pool["group"]) if g is not None]
    direct = layer_precisions(loaded, [view.encoded[i] for i in keep], [pool["group"][i] for i in keep], m=3)
    assert summary["neighbour_precision"] == {f"neighbour_precision@{k}": v for k, v in direct.items()}
    parent = MlflowClient(summary["tracking_uri"]).get_metric_history(summary["mlflow_run_id"], "neighbour_precision")
    assert {m.step: m.value for m in parent} == pytest.approx(direct)
    assert summary["fine_tune"]["reused"] is False
    assert set(summary["metrics"]) == {"simple_grad", "random"}
    for metrics in summary["metrics"].values():
        assert {"aopc", "degradation_area", "mape", "mape_texts", "mape_curve@10", "mape_curve@50"} <= set(metrics)
        assert "switching_point" not in metrics and "degradation" not in metrics
        assert metrics["mape_texts"] == 12.0
    assert "vs_random/aopc_p" in summary["metrics"]["simple_grad"]
    table = Path(summary["table_path"]).read_text()
    assert "| simple_grad | 12 |" in table and "MAPE" in table
    assert table.count("MAPE texts:") == 1  # the selection's note, not one copy per method
    assert "neighbour precision (LAFA Eq. 8, M=3" in table
    assert set(summary["figures"]) >= {"comprehensiveness_curve", "log_odds_curve", "mape_curve"}
    children = _children(summary["tracking_uri"], summary["mlflow_run_id"])
    assert set(children) == {"simple_grad", "random"}
    # Every stage is recorded as its own child run, as in the other flows, the fine-tune stage (tasks.fine_tune) too.
    stages = _stage_runs(summary["tracking_uri"], summary["mlflow_run_id"])
    assert {"prepare_splits", "fine_tune", "select_accurate", "attribute-simple_grad", "evaluate-random"} <= set(stages)
    assert stages["fine_tune"].data.metrics["train_rows"] == summary["fine_tune"]["train_rows"]
    assert stages["fine_tune"].data.params["model_path"] == summary["model"]
    logged = children["random"].data
    assert logged.params["method"] == "random" and logged.params["replacement"] == "mask"
    assert logged.metrics["mape"] == pytest.approx(summary["metrics"]["random"]["mape"])
    assert "method_seconds" in logged.metrics
    artifacts = {
        a.path for a in MlflowClient(summary["tracking_uri"]).list_artifacts(summary["mlflow_run_id"], "curves")
    }
    assert "curves/mape_curve.png" in artifacts
    # Second run: the fine-tuned model directory is reused, every stage comes from cache.
    again = benchmark(settings)
    assert again["fine_tune"]["reused"] is True
    assert again["metrics"]["simple_grad"]["aopc"] == summary["metrics"]["simple_grad"]["aopc"]


def test_classification_benchmark_with_gold_words(harness, tiny_classifier_dir, tmp_path) -> None:
    trees = tmp_path / "dev.txt"
    trees.write_text("\n".join(TREES) + "\n")
    config = tmp_path / "sst.yaml"
    config.write_text(
        f"name: tiny-sst\nworkdir: work\ndata_root: {tmp_path}\n"
        "dataset: {name: sst, eval: dev.txt}\n"
        f"model: {{path: {tiny_classifier_dir}, max_length: 32}}\n"
        "attribution: {methods: [{name: grad_input}, {name: random}, {name: lafa},\n"
        "  {name: lafa, label: lafa_layer1,\n"
        "   params: {layer: 1, epsilon_quantile: 0.5, neighbour_filter: prediction}}]}\n"
        "evaluation: {fractions: [0.5, 1.0], max_texts: 6,\n"
        "  metrics: [aopc, degradation, switching_point, gold_pearson]}\n"
    )
    summary = benchmark(load_benchmark_settings(config))
    metrics = summary["metrics"]["grad_input"]
    assert {"switching_point", "switched", "degradation", "degradation_lerf", "gold_pearson"} <= set(metrics)
    assert 0.0 < metrics["switching_point"] <= 1.0
    assert "Pearson vs gold words" in Path(summary["table_path"]).read_text()
    # Each LAFA row got the index of its own layer (a mismatched index raises IndexMismatchError).
    assert set(_children(summary["tracking_uri"], summary["mlflow_run_id"])) == {
        "grad_input",
        "random",
        "lafa",
        "lafa_layer1",
    }
    assert summary["metrics"]["lafa_layer1"]["texts"] == 6.0


def test_neighbours_come_from_the_train_split_and_methods_are_tested_against_a_named_base(
    harness, tiny_classifier_dir, tmp_path
) -> None:
    (tmp_path / "train.txt").write_text("\n".join(TREES) + "\n")
    (tmp_path / "dev.txt").write_text("\n".join(TREES[:3]) + "\n")
    config = tmp_path / "sst.yaml"
    config.write_text(
        f"name: tiny-pool\nworkdir: work\ndata_root: {tmp_path}\n"
        "dataset: {name: sst, train: train.txt, eval: dev.txt}\n"
        f"model: {{path: {tiny_classifier_dir}, max_length: 32}}\n"
        "attribution: {methods: [{name: simple_grad}, {name: random},\n"
        "  {name: lafa, params: {epsilon_quantile: 1.0}, compare_to: simple_grad}]}\n"
        "evaluation: {fractions: [0.5, 1.0], metrics: [aopc, gold_pearson]}\n"
    )
    summary = benchmark(load_benchmark_settings(config))
    lafa = summary["metrics"]["lafa"]
    assert lafa["texts"] == 3.0
    assert {"vs_simple_grad/aopc_difference", "vs_simple_grad/aopc_p", "vs_random/aopc_p"} <= set(lafa)
    assert "vs_simple_grad/aopc_p" not in summary["metrics"]["simple_grad"]
    # LAFA explained only the 3 scored texts, with neighbours from the 3 + 6 pool texts; its diagnostics are kept
    explained = read_artifact(ArtifactRef.from_dict(summary["attributions"]["lafa"])).to_pandas()
    assert set(explained["doc_id"]) == {"dev-1", "dev-2", "dev-3"}
    assert lafa["attribute/texts_without_neighbours"] == 0.0 and lafa["attribute/neighbours_mean"] > 0
    assert {"attribute/kernel_mean", "attribute/kernel_sd", "attribute/fallbacks"} <= set(lafa)
    assert "neighbour pool: the 3 scored texts and 6 train texts" in Path(summary["table_path"]).read_text()
    # a compare_to naming no configured method is refused
    bad = config.read_text().replace("compare_to: simple_grad", "compare_to: nope")
    config.write_text(bad)
    with pytest.raises(SettingsError, match="compare_to 'nope'"):
        load_benchmark_settings(config)


def test_bad_benchmark_inputs(harness, tiny_classifier_dir, tmp_path) -> None:
    trees = tmp_path / "dev.txt"
    trees.write_text("(2 (2 the) (2 film))\n")  # SST-2 drops neutral sentences: no rows left
    config = tmp_path / "empty.yaml"
    config.write_text(
        f"workdir: work\ndata_root: {tmp_path}\ndataset: {{name: sst, eval: dev.txt}}\n"
        f"model: {{path: {tiny_classifier_dir}}}\n"
    )
    with pytest.raises(ValueError, match="evaluation split .* has no rows"):
        benchmark(load_benchmark_settings(config))
    config.write_text(
        f"workdir: work\ndata_root: {tmp_path}\ndataset: {{name: sst, eval: dev.txt}}\n"
        f"model: {{path: {tiny_classifier_dir}}}\nevaluation: {{metrics: [mape]}}\n"
    )
    with pytest.raises(MetricNotApplicableError, match="'mape' does not apply to a classification model"):
        benchmark(load_benchmark_settings(config))
    config.write_text("dataset: {name: nope}\n")
    with pytest.raises(SettingsError, match="unknown dataset 'nope'"):
        load_benchmark_settings(config)


def test_multi_label_benchmark_fine_tunes_and_scores_entity_spans(harness, tiny_classifier_dir, tmp_path) -> None:
    import json

    records = [
        {"text": "the film was good", "triple_list": [["the film", "quality", "good"]]},
        {"text": "the plot was bad", "triple_list": [["the plot", "quality", "bad"], ["the plot", "part", "bad"]]},
        {"text": "a movie is fun", "triple_list": [["a movie", "part", "fun"], ["a movie", "genre", "Texas"]]},
    ] * 4
    (tmp_path / "rel2id.json").write_text(json.dumps([{"quality": 0, "part": 1, "genre": 2}]))
    (tmp_path / "train_triples.json").write_text(json.dumps(records))
    (tmp_path / "val_triples.json").write_text(json.dumps(records[:3]))
    config = tmp_path / "webnlg.yaml"
    config.write_text(
        f"workdir: work\ndata_root: {tmp_path}\n"
        "dataset: {name: webnlg, train: train_triples.json, eval: val_triples.json}\n"
        f"train: {{base_model: {tiny_classifier_dir}, epochs: 1, batch_size: 4, max_length: 16, num_labels: 3}}\n"
        "attribution: {target: label, methods: [{name: simple_grad}, {name: random}]}\n"
        "evaluation: {fractions: [0.5], metrics: [aopc, degradation, switching_point, gold_auc]}\n"
    )
    summary = benchmark(load_benchmark_settings(config))
    metrics = summary["metrics"]["simple_grad"]
    assert {"gold_auc", "gold_word_auc", "switching_point", "degradation", "aopc"} <= set(metrics)
    assert metrics["texts"] == 3.0
    assert metrics["gold_unlocated"] == 1.0  # "Texas" is not in its text: counted, reported, not fatal
    assert "1 gold items could not be located" in Path(summary["table_path"]).read_text()
    assert "micro_f1" in summary["fine_tune"]["metrics"]


def test_benchmark_trains_ldav_vectors_and_binds_head_masks_mined_on_train(
    harness, tiny_classifier_dir, tmp_path, mask_probe
) -> None:
    (tmp_path / "train.txt").write_text("\n".join(TREES * 3) + "\n")
    (tmp_path / "dev.txt").write_text("\n".join(TREES) + "\n")
    config = tmp_path / "sst.yaml"
    config.write_text(
        f"workdir: work\ndata_root: {tmp_path}\n"
        "dataset: {name: sst, train: train.txt, eval: dev.txt}\n"
        f"train: {{base_model: {tiny_classifier_dir}, epochs: 1, batch_size: 4, max_length: 16,\n"
        "  ldav: {enabled: true}}\n"
        "attribution: {methods: [{name: ldav}, {name: mask_probe}, {name: random}]}\n"
        "heads: {xi_synt: 0.05, xi_pos: 0.3, window: 2}\n"
        "evaluation: {fractions: [0.5], max_texts: 6, metrics: [aopc]}\n"
    )
    summary = benchmark(load_benchmark_settings(config))
    assert (Path(summary["model"]) / "ldav_vectors.safetensors").is_file()
    assert {"aopc", "texts"} <= set(summary["metrics"]["ldav"]) and summary["metrics"]["ldav"]["texts"] == 6.0
    heads = ArtifactRef.from_dict(summary["head_statistics"])
    metadata = artifact_metadata(heads)
    assert (metadata["xi_synt"], metadata["xi_pos"], metadata["texts"]) == ("0.05", "0.3", "18")  # the train split
    kept = float(read_head_masks(heads).union.sum())
    probe_scores = read_artifact(ArtifactRef.from_dict(summary["attributions"]["mask_probe"])).column("score")
    assert len(probe_scores) > 0 and set(probe_scores.to_pylist()) == {kept}
    assert "head masks mined on the train split" in Path(summary["table_path"]).read_text()
    client = MlflowClient(summary["tracking_uri"])
    assert [f.path for f in client.list_artifacts(summary["mlflow_run_id"], "heads")] == ["heads/head_masks.png"]
    assert set(_children(summary["tracking_uri"], summary["mlflow_run_id"])) == {"ldav", "mask_probe", "random"}
