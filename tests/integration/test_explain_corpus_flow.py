"""explain_corpus end to end under a Prefect test harness, on a tiny model and 16 texts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from prefect.testing.utilities import prefect_test_harness
from typer.testing import CliRunner

from flows import cli
from flows.explain_corpus import explain_corpus
from flows.settings import ExplainSettings
from storage import ArtifactRef, read_artifact, read_index
from xattr.data.corpus import CorpusError
from xattr.models import encode_texts, load_model, predict_logits
from xattr.reporting.class_drivers import ClassDriverSettings, class_drivers

pytestmark = pytest.mark.integration

TEXTS = [
    "the movie was great",
    "bad acting and a boring plot",
    "not fun <script>alert('x')</script>",
    "very good film",
    "awful plot",
    "love this movie",
    "hate the acting",
    "the plot was fun",
    "great acting , great plot",
    "boring",
    "really bad film",
    "the film is fun",
    "not good , not great",
    "i love the plot",
    "very boring movie",
    "good fun",
]
STAGES = {
    "load_corpus",
    "encode_corpus",
    "build_index",
    "attribute-simple_grad",
    "evaluate-simple_grad",
    "attribute-grad_input",
    "evaluate-grad_input",
    "attribute-random",
    "evaluate-random",
    "compare_methods",
    "class_drivers",
    "viewer",
}


@pytest.fixture(scope="module")
def harness():
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="module")
def corpus_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "reviews.csv"
    pd.DataFrame({"id": [f"doc-{i}" for i in range(16)], "text": TEXTS, "label": [i % 2 for i in range(16)]}).to_csv(
        path, index=False
    )
    return path


def _settings(workdir: Path, corpus: Path, model: Path, **extra: object) -> ExplainSettings:
    return ExplainSettings.model_validate(
        {
            "workdir": str(workdir),
            "corpus": {"path": str(corpus), "id_column": "id", "label_column": "label"},
            "model": {"path": str(model)},
            "evaluation": {"max_texts": 8},
            "drivers": {"min_count": 2, "resamples": 100},
            **extra,
        }
    )


def _children(client: MlflowClient, parent: str, tag: str = "xattr.stage") -> dict[str, object]:
    """The parent's child runs carrying ``tag``: the stage runs, or (``xattr.method``) the per-method runs."""
    run = client.get_run(parent)
    children = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{parent}'")
    return {c.info.run_name: c for c in children if tag in c.data.tags}


def test_flow_writes_valid_artifacts_tracks_stages_and_reuses_cache(
    harness, tmp_path: Path, corpus_csv: Path, tiny_classifier_dir: Path
) -> None:
    settings = _settings(tmp_path / "work", corpus_csv, tiny_classifier_dir)
    first = explain_corpus(settings)

    assert first["cache_hits"] == 0
    assert {s["stage"] for s in first["stages"]} == STAGES
    for stage in first["stages"]:
        for ref_dict in stage["refs"].values():
            ref = ArtifactRef.from_dict(ref_dict)
            if ref.kind == "faiss_index":
                index, manifest = read_index(ref)
                assert index.ntotal == 16 and manifest["layer"] == "2"
            else:
                table = read_artifact(ref)  # validates hash, kind, version and schema
                assert table.num_rows == ref.rows > 0
    attributions = read_artifact(
        ArtifactRef.from_dict(
            next(s for s in first["stages"] if s["stage"] == "attribute-simple_grad")["refs"]["attributions"]
        )
    ).to_pandas()
    assert set(attributions["doc_id"]) == {f"doc-{i}" for i in range(16)}
    assert attributions.loc[attributions["token"] == "[CLS]", "word_index"].eq(-1).all()

    client = MlflowClient(first["tracking_uri"])
    assert first["tracking_uri"] == f"sqlite:///{tmp_path / 'work' / 'mlflow.db'}"
    children = _children(client, first["mlflow_run_id"])
    assert set(children) == STAGES
    for method in ("simple_grad", "grad_input"):
        metrics = children[f"evaluate-{method}"].data.metrics
        assert {"aopc", "log_odds", "comprehensiveness_curve", "log_odds_curve"} <= set(metrics)
        assert metrics["aopc_ci_low"] <= metrics["aopc"] <= metrics["aopc_ci_high"]
        assert metrics["aopc_sufficiency_ci_low"] <= metrics["aopc_sufficiency"] <= metrics["aopc_sufficiency_ci_high"]
        history = client.get_metric_history(children[f"evaluate-{method}"].info.run_id, "comprehensiveness_curve")
        assert sorted(m.step for m in history) == [10, 20, 30, 40, 50, 60, 70, 80, 90]
    parent = client.get_run(first["mlflow_run_id"])
    assert parent.info.status == "FINISHED"
    # One child run per method (random added as the baseline), the same plain metric names on each.
    methods = _children(client, first["mlflow_run_id"], "xattr.method")
    assert set(methods) == {"simple_grad", "grad_input", "random"}
    for label, method_run in methods.items():
        data = method_run.data
        assert data.params["method"] == label and data.params["label"] == label
        assert data.params["replacement"] == "mask" and data.params["max_texts"] == "8"
        for metric in ("aopc", "log_odds", "aopc_sufficiency"):
            assert data.metrics[metric] == first["metrics"][label][metric]
    assert methods["random"].data.tags["xattr.verdict"] == "baseline"
    assert methods["simple_grad"].data.params["params.reduction"] == "sum_of_squares"  # resolved defaults too
    verdicts = {(r["method"], r["metric"]): r for r in first["verdicts"]}
    for label in ("simple_grad", "grad_input"):
        row = verdicts[(label, "aopc")]
        assert row["difference"] == pytest.approx(first["metrics"][label]["aopc"] - first["metrics"]["random"]["aopc"])
        expected = "better than random" if row["better_than_reference"] else "not better than random"
        assert methods[label].data.tags["xattr.verdict"] == expected
        assert methods[label].data.metrics["vs_random/aopc_p"] == row["p_value"]
    assert "vs random" in Path(first["summary_path"]).read_text()
    curves = {a.path for a in client.list_artifacts(first["mlflow_run_id"], "curves")}
    assert "curves/comprehensiveness_curve.png" in curves
    assert client.get_experiment(parent.info.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    assert parent.data.params["corpus.id_column"] == "id"
    assert all(c.data.tags["xattr.cache_hit"] == "false" for c in children.values())

    _check_viewer_and_drivers(first, client, tiny_classifier_dir)

    second = explain_corpus(settings)
    assert second["cache_hits"] == len(STAGES)
    assert second["run_id"] != first["run_id"]
    assert second["metrics"] == first["metrics"]
    again = _children(client, second["mlflow_run_id"])
    assert set(again) == STAGES
    assert all(c.data.tags["xattr.cache_hit"] == "true" for c in again.values())
    new_run_dir = Path(second["artifacts_dir"])
    assert sorted(p.name for p in new_run_dir.iterdir()) == ["summary"]  # nothing recomputed

    changed = _settings(
        tmp_path / "work", corpus_csv, tiny_classifier_dir, evaluation={"max_texts": 8, "replacement": "pad"}
    )
    third = explain_corpus(changed)
    recomputed = {s["stage"] for s in third["stages"] if not s["cached"]}
    assert recomputed == {"evaluate-simple_grad", "evaluate-grad_input", "evaluate-random", "compare_methods", "viewer"}


def _check_viewer_and_drivers(summary: dict, client: MlflowClient, model_dir: Path) -> None:
    """The viewer stage's page, its MLflow copy, ``xattr report explanations`` and the class_drivers artifact."""
    page_path = Path(summary["viewer"])
    assert page_path == Path(summary["artifacts_dir"]) / "viewer" / "explanations.html"
    page = page_path.read_text()
    for label in ("simple_grad", "grad_input", "random"):
        assert f"<td>{label}" in page  # a faithfulness row each, random's included
        assert f"<div class='mname'>{label}" in page  # a highlighted row each
    assert "<script>alert" not in page and "&lt;script&gt;alert" in page
    assert "Drivers per predicted class" in page and "No class drivers given" not in page
    assert "for always predicting the majority class" in page and "labelled documents of this corpus" in page
    logged = {a.path for a in client.list_artifacts(summary["mlflow_run_id"], "viewer")}
    assert logged == {"viewer/explanations.html"}
    assert f"Explanation viewer: [{page_path}]" in Path(summary["summary_path"]).read_text()

    stages = {s["stage"]: s for s in summary["stages"]}
    ref = ArtifactRef.from_dict(stages["class_drivers"]["refs"]["class_drivers"])
    stored = read_artifact(ref).to_pandas()
    loaded = load_model(model_dir, device="cpu")
    corpus = read_artifact(ArtifactRef.from_dict(stages["load_corpus"]["refs"]["corpus"])).to_pandas()
    encoded = encode_texts(loaded.tokenizer, corpus["text"].tolist(), max_length=loaded.max_length)
    attributions = read_artifact(
        ArtifactRef.from_dict(stages["attribute-simple_grad"]["refs"]["attributions"])
    ).to_pandas()
    direct = class_drivers(
        loaded, encoded, corpus, attributions, predict_logits(loaded, encoded),
        ClassDriverSettings(min_count=2, resamples=100), method="simple_grad",
    )  # fmt: skip
    assert stored["method"].eq("simple_grad").all()  # no signed method here: the first method ranks
    pd.testing.assert_frame_equal(stored, direct, check_dtype=False, atol=1e-6)

    run_dir = Path(summary["artifacts_dir"])
    out = run_dir.parent / "re-rendered.html"
    result = CliRunner().invoke(cli.app, ["report", "explanations", str(run_dir), "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text().count("<div class='doc'") == page.count("<div class='doc'") == 16
    again = CliRunner().invoke(cli.app, ["report", "explanations", str(run_dir), "--output", str(out)])
    assert again.exit_code == 1 and "already exists" in again.output  # never overwritten
    one_doc = run_dir.parent / "one.html"
    one = CliRunner().invoke(
        cli.app,
        ["report", "explanations", str(run_dir), "--method", "grad_input", "--doc", "doc-3", "--output", str(one_doc)],
    )
    assert one.exit_code == 0, one.output
    narrow = one_doc.read_text()
    assert (
        narrow.count("<div class='doc'") == 1 and "doc-3" in narrow and "<div class='mname'>simple_grad" not in narrow
    )
    bad = {
        "not a run": ([str(run_dir.parent)], "is not an explain run directory"),
        "no document": ([str(run_dir), "--doc", "doc-99"], "document 'doc-99' is not in the corpus (16 documents)"),
        "no method": ([str(run_dir), "--method", "lafa"], "method 'lafa' was not computed in this run; computed: "),
    }
    for case, (args, message) in bad.items():
        failed = CliRunner().invoke(cli.app, ["report", "explanations", *args])
        assert failed.exit_code == 1, case
        assert message in failed.output and len(failed.output.strip().splitlines()) == 1, (case, failed.output)


def test_regression_model_gets_log_ratio_metrics(
    harness, tmp_path: Path, corpus_csv: Path, tiny_regressor_dir: Path
) -> None:
    settings = _settings(tmp_path / "work", corpus_csv, tiny_regressor_dir)
    summary = explain_corpus(settings)
    for method in ("simple_grad", "grad_input"):
        assert summary["metrics"][method]["aopc"] >= 0.0
        assert "log_odds" in summary["metrics"][method]


def test_bad_corpus_fails_the_flow_and_leaves_no_artifact(harness, tmp_path: Path, tiny_classifier_dir: Path) -> None:
    path = tmp_path / "dup.csv"
    pd.DataFrame({"id": ["a", "b", "a"], "text": ["x", "y", "z"], "label": [0, 1, 0]}).to_csv(path, index=False)
    settings = _settings(tmp_path / "work", path, tiny_classifier_dir)
    with pytest.raises(CorpusError, match="duplicate document id 'a' in rows 1, 3"):
        explain_corpus(settings)
    artifacts = tmp_path / "work" / "artifacts"
    assert not artifacts.exists() or not any(p.is_file() for p in artifacts.rglob("*"))
    client = MlflowClient(settings.tracking_uri())
    experiment = client.get_experiment_by_name("xattr")
    (run,) = client.search_runs([experiment.experiment_id], "attributes.status = 'FAILED'")
    assert run.data.tags["xattr.run_id"]


def test_lafa_and_layer_choice_run_from_config(harness, tmp_path: Path, tiny_classifier_dir: Path) -> None:
    path = tmp_path / "grouped.csv"
    pd.DataFrame({"text": TEXTS, "genre": ["a", "b"] * 8}).to_csv(path, index=False)
    settings = ExplainSettings.model_validate(
        {
            "workdir": str(tmp_path / "work"),
            "corpus": {"path": str(path), "group_column": "genre"},
            "model": {"path": str(tiny_classifier_dir)},
            "encode": {"layer": "auto"},
            "attribution": {
                "methods": [
                    {"name": "simple_grad"},
                    {"name": "lafa", "params": {"max_neighbours": 3, "epsilon_quantile": 0.5, "kernel": "rbf"}},
                    {"name": "lafa", "label": "lafa_far", "params": {"max_neighbours": 40, "epsilon_quantile": None}},
                ]
            },
            "evaluation": {"max_texts": 4},
        }
    )
    summary = explain_corpus(settings)
    stages = {s["stage"]: s for s in summary["stages"]}
    assert "layer_precision" in stages
    client = MlflowClient(summary["tracking_uri"])
    children = _children(client, summary["mlflow_run_id"])
    precision = client.get_metric_history(children["layer_precision"].info.run_id, "neighbour_precision")
    assert sorted(m.step for m in precision) == [0, 1, 2]
    best = children["layer_precision"].data.metrics["best_layer"]
    index_ref = ArtifactRef.from_dict(stages["build_index"]["refs"]["index"])
    assert read_index(index_ref)[1]["layer"] == str(int(best))
    lafa = children["attribute-lafa"].data.metrics
    assert lafa["neighbours_max"] == 3
    # simple_grad is configured too: LAFA reads its attributions of all 16 texts instead of computing them,
    # and computes only a neighbour's explanation for a class it was not explained for (none here).
    assert lafa["base_scores_stored"] >= 16 and lafa["base_computations"] < 16
    assert lafa["texts_without_neighbours"] == lafa["fallbacks"]
    assert children["attribute-lafa_far"].data.metrics["neighbours_max"] == 15  # M capped at corpus size - 1
    assert {"aopc", "log_odds"} <= set(children["evaluate-lafa"].data.metrics)
    simple = read_artifact(ArtifactRef.from_dict(stages["attribute-simple_grad"]["refs"]["attributions"])).to_pandas()
    smoothed = read_artifact(ArtifactRef.from_dict(stages["attribute-lafa"]["refs"]["attributions"])).to_pandas()
    assert len(simple) == len(smoothed)
    assert not np.allclose(simple["score"], smoothed["score"])


def test_index_from_another_layer_is_refused(
    harness, tmp_path: Path, corpus_csv: Path, tiny_classifier_dir: Path
) -> None:
    settings = _settings(
        tmp_path / "work",
        corpus_csv,
        tiny_classifier_dir,
        encode={"layer": 1},
        attribution={"methods": [{"name": "lafa", "params": {"layer": 2}}]},
    )
    with pytest.raises(ValueError, match="asks for neighbours in layer 2, but the index .* was built on layer 1"):
        explain_corpus(settings)


def test_every_registered_method_runs_from_config(
    harness, tmp_path: Path, corpus_csv: Path, tiny_classifier_dir: Path
) -> None:
    from xattr.methods import available_methods

    methods = [
        {"name": "simple_grad"},
        {"name": "grad_input", "label": "grad_input_signed", "params": {"reduction": "sum"}},
        {"name": "integrated_gradients", "params": {"steps": 4, "baseline": "zeros"}},
        {"name": "smooth_grad", "params": {"samples": 3}},
        {"name": "shap_grad", "params": {"samples": 3}},
        {"name": "shap_grad", "label": "shap_grad_ref", "params": {"samples": 3, "references": "neighbours"}},
        {"name": "shap_deep", "params": {"max_references": 3}},
        {"name": "random"},
        {"name": "lafa", "params": {"base": "smooth_grad", "base_params": {"samples": 2}, "kernel": "indicator"}},
        {"name": "occlusion", "params": {"window": 2}},
        {"name": "lime", "params": {"samples": 8}},
        {"name": "lrp"},
        {"name": "partial_lrp"},
        {"name": "lrp_rollout"},
        {"name": "mask_lrp", "params": {"mask": "all"}},
        {"name": "raw_attention", "params": {"layer": 0}},
        {"name": "rollout"},
        {"name": "gae"},
        {"name": "cam"},
        {"name": "grad_cam"},
        {"name": "attcat"},
    ]
    # ldav needs a model trained with LDAV: tests/integration/test_train_flow.py runs it from config
    assert {m["name"] for m in methods} | {"grad_input", "ldav"} == set(available_methods())
    settings = _settings(
        tmp_path / "work",
        corpus_csv,
        tiny_classifier_dir,
        attribution={"methods": methods},
        evaluation={"max_texts": 4},
    )
    summary = explain_corpus(settings)
    labels = [m.get("label", m["name"]) for m in methods]
    assert set(summary["metrics"]) == set(labels)
    for label in labels:
        assert {"aopc", "log_odds"} <= set(summary["metrics"][label])
    client = MlflowClient(summary["tracking_uri"])
    children = _children(client, summary["mlflow_run_id"])
    assert children["attribute-shap_grad_ref"].data.metrics["neighbours_max"] == 10
    assert "neighbours_max" not in children["attribute-shap_grad"].data.metrics


def test_model_fine_tune_trains_on_the_corpus_as_a_recorded_stage_and_reuses_the_model(
    harness, tmp_path: Path, corpus_csv: Path, tiny_classifier_dir: Path
) -> None:
    fine_tune = {"base_model": str(tiny_classifier_dir), "epochs": 1, "batch_size": 8, "max_length": 16}
    settings = _settings(tmp_path / "work", corpus_csv, tiny_classifier_dir)
    settings = settings.model_copy(
        update={"model": settings.model.model_validate({"fine_tune": fine_tune, "task": "classification"})}
    )
    first = explain_corpus(settings)
    trained = Path(first["fine_tune"]["path"])
    assert trained.parent == tmp_path / "work" / "models" and (trained / "model.safetensors").is_file()
    assert first["fine_tune"]["reused"] is False and first["fine_tune"]["train_rows"] == 14  # 10% held out
    client = MlflowClient(first["tracking_uri"])
    children = _children(client, first["mlflow_run_id"])
    assert set(children) == STAGES | {"fine_tune"}
    assert children["fine_tune"].data.params["model_path"] == str(trained)
    # The explained model is the one just trained, not the base model.
    untrained = explain_corpus(_settings(tmp_path / "base", corpus_csv, tiny_classifier_dir))
    assert untrained["metrics"]["simple_grad"]["aopc"] != first["metrics"]["simple_grad"]["aopc"]
    second = explain_corpus(settings)
    # The viewer's verdict uses the rows held out of the fine-tune, not the corpus it was trained on.
    held = first["fine_tune"]["metrics"]
    rows = first["fine_tune"]["validation_rows"]
    page = Path(first["viewer"]).read_text()
    assert f"accuracy {held['accuracy']:.3f} vs {held['majority_accuracy']:.3f} for always predicting" in page
    assert f"on the {rows} validation rows held out of the fine-tune" in page
    assert second["fine_tune"]["path"] == str(trained) and second["fine_tune"]["reused"] is True
    assert second["cache_hits"] == len(STAGES) + 1
    assert second["metrics"] == first["metrics"]


def test_model_needs_a_path_or_a_fine_tune_section(tmp_path: Path, corpus_csv: Path) -> None:
    base = {"workdir": str(tmp_path), "corpus": {"path": str(corpus_csv)}}
    with pytest.raises(ValueError, match="give either model.path"):
        ExplainSettings.model_validate({**base, "model": {}})
    with pytest.raises(ValueError, match="give either model.path"):
        ExplainSettings.model_validate({**base, "model": {"path": "m", "fine_tune": {}}})
    settings = ExplainSettings.model_validate({**base, "model": {"fine_tune": {}}})
    with pytest.raises(ValueError, match="model.path is unknown until model.fine_tune has run"):
        settings.model.spec()
