"""explain_corpus with an approximate index: the index type reaches FAISS and recall@10 reaches MLflow."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from prefect.testing.utilities import prefect_test_harness

from flows.explain_corpus import explain_corpus
from flows.settings import ExplainSettings
from storage import ArtifactRef, embedding_matrix, read_artifact, read_index
from xattr.neighbours.index import measure_recall

pytestmark = pytest.mark.integration

WORDS = ["good", "bad", "film", "plot", "acting", "great", "boring", "fun", "awful", "love", "hate", "movie"]


def test_hnsw_index_recall_is_logged_as_a_stage_metric(tmp_path: Path, tiny_classifier_dir: Path) -> None:
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(WORDS, size=int(rng.integers(2, 7)))) for _ in range(60)]
    corpus = tmp_path / "corpus.csv"
    pd.DataFrame({"id": [f"d{i}" for i in range(60)], "text": texts}).to_csv(corpus, index=False)
    settings = ExplainSettings.model_validate(
        {
            "workdir": str(tmp_path / "work"),
            "corpus": {"path": str(corpus), "id_column": "id"},
            "model": {"path": str(tiny_classifier_dir)},
            "index": {"type": "hnsw", "neighbours": 5, "hnsw_m": 4, "ef_search": 8, "recall_queries": 40},
            "attribution": {"methods": [{"name": "simple_grad"}]},
            "evaluation": {"max_texts": 4},
        }
    )
    with prefect_test_harness(server_startup_timeout=120):
        summary = explain_corpus(settings)

    stage = next(s for s in summary["stages"] if s["stage"] == "build_index")
    index, manifest = read_index(ArtifactRef.from_dict(stage["refs"]["index"]))
    assert isinstance(index, faiss.IndexHNSWFlat) and index.hnsw.efSearch == 8
    embeddings = next(s for s in summary["stages"] if s["stage"] == "encode_corpus")["refs"]["embeddings"]
    table = read_artifact(ArtifactRef.from_dict(embeddings))
    vectors = embedding_matrix(table)
    # The recall of the saved index, recomputed independently, is the logged one.
    expected = measure_recall(index, vectors, k=10, queries=40, seed=0)
    assert manifest["recall_at_10"] == pytest.approx(expected)

    client = MlflowClient(summary["tracking_uri"])
    parent = client.get_run(summary["mlflow_run_id"])
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{summary['mlflow_run_id']}'"
    )
    build = next(c for c in children if c.info.run_name == "build_index")
    assert build.data.metrics["recall_at_10"] == pytest.approx(expected)
    assert build.data.params["index_type"] == "hnsw" and build.data.params["index.hnsw_m"] == "4"
    assert parent.data.params["index.type"] == "hnsw"
