"""Sharded encode/attribute stages: equal results, per-shard caching, only changed methods recomputed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from prefect.testing.utilities import prefect_test_harness

from flows.explain_corpus import explain_corpus
from flows.settings import ExplainSettings, SettingsError, load_settings
from storage import ArtifactRef, read_artifact

pytestmark = pytest.mark.integration

TEXTS = [
    "the movie was great",
    "bad acting and a boring plot",
    "not fun",
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
METHODS = [
    {"name": "simple_grad"},
    {"name": "random"},
    {"name": "lafa", "params": {"max_neighbours": 3, "epsilon_quantile": 0.5, "kernel": "rbf"}},
]


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


def settings_for(workdir: Path, corpus: Path, model: Path, shard_size: int | None, methods=METHODS) -> ExplainSettings:
    return ExplainSettings.model_validate(
        {
            "workdir": str(workdir),
            "corpus": {"path": str(corpus), "id_column": "id", "label_column": "label"},
            "model": {"path": str(model)},
            "attribution": {"methods": methods, "batch_size": 4},
            "evaluation": {"max_texts": 8},
            "sharding": {"shard_size": shard_size},
        }
    )


def attributions(summary: dict, label: str) -> pd.DataFrame:
    stage = next(s for s in summary["stages"] if s["stage"] == f"attribute-{label}")
    return read_artifact(ArtifactRef.from_dict(stage["refs"]["attributions"])).to_pandas()


def assert_same_results(sharded: dict, whole: dict, labels: list[str]) -> None:
    """Token attributions row for row (scores to float32 rounding), and the same metrics."""
    for label in labels:
        a, b = attributions(sharded, label), attributions(whole, label)
        keys = ["doc_id", "method", "target", "token_index", "token", "word_index", "char_start", "char_end"]
        pd.testing.assert_frame_equal(a[keys], b[keys])
        # Shards batch texts differently; padding changes float32 sums in the last bits only.
        np.testing.assert_allclose(a["score"], b["score"], rtol=1e-4, atol=1e-6)
        for metric in ("aopc", "log_odds"):
            assert sharded["metrics"][label][metric] == pytest.approx(whole["metrics"][label][metric], abs=1e-4)
        # The summary's top words, read shard by shard, against one pass over the whole run's rows.
        assert whole["top_words"][label]["top"]
        for ranking, words in whole["top_words"][label].items():
            streamed = sharded["top_words"][label][ranking]
            assert [(w["word"], w["texts"]) for w in streamed] == [(w["word"], w["texts"]) for w in words]
            assert [w["mean_share"] for w in streamed] == pytest.approx([w["mean_share"] for w in words], rel=1e-4)


def test_sharded_run_equals_whole_run_and_reuses_every_shard(
    harness, tmp_path: Path, corpus_csv: Path, tiny_classifier_dir: Path
) -> None:
    whole = explain_corpus(settings_for(tmp_path / "whole", corpus_csv, tiny_classifier_dir, None))
    settings = settings_for(tmp_path / "sharded", corpus_csv, tiny_classifier_dir, 5)
    first = explain_corpus(settings)

    names = [s["stage"] for s in first["stages"]]
    assert [n for n in names if n.startswith("encode_corpus")] == [
        *(f"encode_corpus-shard-{i:05d}" for i in range(4)),
        "encode_corpus",
    ]
    for label in ("simple_grad", "random", "lafa"):
        shard_stages = [s for s in first["stages"] if s["stage"].startswith(f"attribute-{label}-shard-")]
        rows = [read_artifact(ArtifactRef.from_dict(s["refs"]["attributions"])) for s in shard_stages]
        assert [set(t.column("doc_id").to_pylist()) for t in rows] == [
            {f"doc-{i}" for i in range(start, min(start + 5, 16))} for start in (0, 5, 10, 15)
        ]
    assert_same_results(first, whole, ["simple_grad", "random", "lafa"])
    # LAFA neighbours come from the whole corpus: some text in a shard has a neighbour outside it.
    assert not np.allclose(attributions(first, "lafa")["score"], attributions(first, "simple_grad")["score"])

    again = explain_corpus(settings)
    assert again["cache_hits"] == len(again["stages"]) == len(first["stages"])
    assert sorted(p.name for p in Path(again["artifacts_dir"]).iterdir()) == ["summary"]

    changed_methods = [*METHODS[:2], {**METHODS[2], "params": {**METHODS[2]["params"], "kernel": "cosine"}}]
    third = explain_corpus(settings_for(tmp_path / "sharded", corpus_csv, tiny_classifier_dir, 5, changed_methods))
    recomputed = {s["stage"] for s in third["stages"] if not s["cached"]}
    recomputed_lafa = {*(f"attribute-lafa-shard-{i:05d}" for i in range(4)), "attribute-lafa", "evaluate-lafa"}
    assert recomputed == recomputed_lafa | {"compare_methods", "viewer"}  # they read the new artifacts


def test_shard_size_must_be_positive(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    for bad in (0, -3):
        config.write_text(f"corpus: {{path: x.csv}}\nmodel: {{path: m}}\nsharding: {{shard_size: {bad}}}\n")
        with pytest.raises(SettingsError, match=rf"sharding.shard_size: .*positive number of texts, got {bad}"):
            load_settings(config)


def test_thread_runner_runs_shards_in_parallel_with_the_same_results(
    harness, tmp_path: Path, corpus_csv: Path, tiny_classifier_dir: Path
) -> None:
    from flows.explain_corpus import explain_corpus_with_runner
    from flows.settings import RunnerSettings

    whole = explain_corpus(settings_for(tmp_path / "whole", corpus_csv, tiny_classifier_dir, None))
    settings = settings_for(tmp_path / "threads", corpus_csv, tiny_classifier_dir, 4).model_copy(
        update={"runner": RunnerSettings(type="thread", workers=2)}
    )
    threaded = explain_corpus_with_runner(settings)
    assert sum("-shard-" in s["stage"] for s in threaded["stages"]) == 4 * 4
    assert_same_results(threaded, whole, ["simple_grad", "random", "lafa"])


def test_shards_running_in_parallel_on_one_model_give_the_whole_run_for_hooked_methods(
    harness, tmp_path: Path, corpus_csv: Path, tiny_classifier_dir: Path
) -> None:
    # LRP attaches hooks to the (shared, cached) model and the attention family switches its attention
    # implementation: shards explained at the same time in worker threads must not see each other's.
    methods = [{"name": "lrp"}, {"name": "lrp_rollout"}, {"name": "raw_attention"}]
    labels = [m["name"] for m in methods]
    whole = explain_corpus(settings_for(tmp_path / "whole", corpus_csv, tiny_classifier_dir, None, methods))
    sharded = explain_corpus(settings_for(tmp_path / "sharded", corpus_csv, tiny_classifier_dir, 3, methods))
    assert_same_results(sharded, whole, labels)


def test_sharded_lafa_reads_base_attributions_computed_once_for_the_corpus(
    harness, tmp_path: Path, corpus_csv: Path, tiny_classifier_dir: Path
) -> None:
    lafa = [METHODS[2]]
    whole = explain_corpus(settings_for(tmp_path / "whole", corpus_csv, tiny_classifier_dir, None, lafa))
    sharded = explain_corpus(settings_for(tmp_path / "sharded", corpus_csv, tiny_classifier_dir, 5, lafa))
    names = [s["stage"] for s in sharded["stages"]]
    # Without simple_grad configured, its attributions of every text run once, as their own sharded stage ...
    base = [*(f"attribute-lafa-base-shard-{i:05d}" for i in range(4)), "attribute-lafa-base"]
    assert [n for n in names if n.startswith("attribute-lafa-base")] == base
    assert names.index("attribute-lafa-base") < names.index("attribute-lafa-shard-00000")
    assert not any(n.startswith("attribute-lafa-base") for n in (s["stage"] for s in whole["stages"]))
    assert "lafa-base" not in sharded["metrics"]  # not evaluated: it is LAFA's input, not a configured method
    assert_same_results(sharded, whole, ["lafa"])
    # ... and with simple_grad configured, LAFA reads simple_grad's: no extra stage.
    both = explain_corpus(settings_for(tmp_path / "both", corpus_csv, tiny_classifier_dir, 5, [METHODS[0], *lafa]))
    assert not any("lafa-base" in s["stage"] for s in both["stages"])
    assert [s["stage"] for s in both["stages"]].count("attribute-simple_grad") == 1
    assert_same_results(both, whole, ["lafa"])
