"""The head-statistics stage inside explain_corpus and via `xattr heads`, on a tiny model and the real parser."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from prefect.testing.utilities import prefect_test_harness
from typer.testing import CliRunner

from flows.cli import app
from flows.explain_corpus import explain_corpus
from flows.head_statistics import head_statistics_flow
from flows.settings import ExplainSettings
from storage import ArtifactRef, artifact_metadata, read_artifact
from tasks.head_statistics import read_head_masks
from xattr.heads.table import masks_from_table

pytestmark = pytest.mark.integration

TEXTS = [
    "the movie was great",
    "i love this film",
    "the acting was really bad",
    "a boring plot ruined the movie",
    "the new laptop is very fast",
    "she hates cheap laptops",
    "this film has a great plot",
    "the price was not good",
]


@pytest.fixture(scope="module")
def harness():
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="module")
def corpus_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "reviews.csv"
    pd.DataFrame({"text": TEXTS, "label": [i % 2 for i in range(len(TEXTS))]}).to_csv(path, index=False)
    return path


def _settings(workdir: Path, corpus: Path, model: Path, **extra: object) -> ExplainSettings:
    return ExplainSettings.model_validate(
        {
            "workdir": str(workdir),
            "corpus": {"path": str(corpus), "label_column": "label"},
            "model": {"path": str(model)},
            "evaluation": {"max_texts": 4},
            **extra,
        }
    )


def _stage(summary: dict, name: str) -> dict:
    return next(s for s in summary["stages"] if s["stage"] == name)


def test_masked_method_gets_the_mined_masks_once_and_the_heatmap_is_logged(
    harness, mask_probe, tmp_path: Path, corpus_csv: Path, tiny_classifier_dir: Path
) -> None:
    settings = _settings(
        tmp_path / "work",
        corpus_csv,
        tiny_classifier_dir,
        attribution={
            "methods": [{"name": "mask_probe"}, {"name": "mask_probe", "label": "probe2"}, {"name": "random"}]
        },
        heads={"xi_synt": 0.05, "xi_pos": 0.3, "window": 2},
    )
    summary = explain_corpus(settings)
    stages = [s["stage"] for s in summary["stages"]]
    assert stages.count("head_statistics") == 1
    ref = ArtifactRef.from_dict(_stage(summary, "head_statistics")["refs"]["statistics"])
    table = read_artifact(ref)
    metadata = artifact_metadata(ref)
    assert (metadata["layers"], metadata["heads"], metadata["xi_synt"], metadata["xi_pos"]) == ("2", "2", "0.05", "0.3")
    masks = read_head_masks(ref)
    assert masks.shape == (2, 2)
    recomputed = masks_from_table(table, xi_synt=0.05, xi_pos=0.3)
    np.testing.assert_array_equal(masks.syntactic, recomputed.syntactic)
    np.testing.assert_array_equal(masks.positional, recomputed.positional)
    frame = table.to_pandas()
    assert set(frame.loc[frame.kind == "position", "key"]) == {"-2", "-1", "+1", "+2"}
    assert frame.loc[frame.kind == "relation", "count"].sum() > 0  # the real parser found core arcs

    for label in ("mask_probe", "probe2"):
        scores = read_artifact(ArtifactRef.from_dict(_stage(summary, f"attribute-{label}")["refs"]["attributions"]))
        assert set(scores.column("score").to_pylist()) == {float(masks.union.sum())}

    client = MlflowClient(summary["tracking_uri"])
    run = client.get_run(summary["mlflow_run_id"])
    children = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{summary['mlflow_run_id']}'")
    heads_run = next(c for c in children if c.info.run_name == "head_statistics")
    assert [f.path for f in client.list_artifacts(heads_run.info.run_id, "files")] == ["files/head_masks.png"]
    logged = Path(client.download_artifacts(heads_run.info.run_id, "files/head_masks.png", str(tmp_path)))
    assert logged.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert heads_run.data.metrics["kept_heads"] == float(masks.union.sum())

    again = explain_corpus(settings)
    assert _stage(again, "head_statistics")["cached"]
    assert _stage(again, "head_statistics")["refs"] == _stage(summary, "head_statistics")["refs"]


def test_no_head_statistics_without_a_masked_method(
    harness, tmp_path: Path, corpus_csv: Path, tiny_classifier_dir: Path
) -> None:
    summary = explain_corpus(
        _settings(tmp_path / "work", corpus_csv, tiny_classifier_dir, attribution={"methods": [{"name": "random"}]})
    )
    assert "head_statistics" not in {s["stage"] for s in summary["stages"]}


def test_heads_flow_and_command(harness, tmp_path: Path, corpus_csv: Path, tiny_classifier_dir: Path) -> None:
    settings = _settings(tmp_path / "work", corpus_csv, tiny_classifier_dir, heads={"xi_synt": 0.0, "xi_pos": 0.2})
    result = head_statistics_flow(settings)
    assert Path(result["heatmap"]).read_bytes()[:4] == b"\x89PNG"
    assert not result["cached"]
    config = tmp_path / "config.yaml"
    config.write_text(
        f"workdir: {tmp_path / 'work'}\ncorpus: {{path: {corpus_csv}, label_column: label}}\n"
        f"model: {{path: {tiny_classifier_dir}}}\nheads: {{xi_synt: 0.0, xi_pos: 0.2}}\n"
    )
    output = CliRunner().invoke(app, ["heads", str(config)], env={"COLUMNS": "300"})
    assert output.exit_code == 0, output.output
    assert "Kept heads" in output.output and "(served from cache)" in output.output
    assert result["heatmap"] in output.output.replace("\n", "")
    kept = int(result["metrics"]["kept_heads"])
    assert f"Kept heads: {kept} (" in output.output


def test_heads_command_names_an_unparseable_corpus(harness, tmp_path: Path, tiny_classifier_dir: Path) -> None:
    corpus = tmp_path / "numbers.csv"
    pd.DataFrame({"text": ["1 2 3", "4 5", "7"]}).to_csv(corpus, index=False)
    config = tmp_path / "config.yaml"
    config.write_text(
        f"workdir: {tmp_path / 'work'}\ncorpus: {{path: {corpus}}}\nmodel: {{path: {tiny_classifier_dir}}}\n"
    )
    output = CliRunner().invoke(app, ["heads", str(config)], env={"COLUMNS": "300"})
    assert output.exit_code == 1
    assert "parsed 3 sentences and found no nsubj, dobj, amod, advmod dependency arc" in output.output
