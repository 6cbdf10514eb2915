"""The evaluate stage scores QA explanations by Precision@20 against the corpus's answer spans."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from prefect.logging import disable_run_logger

from storage import read_artifact
from tasks.attribute import attribute_stage
from tasks.encode_corpus import encode_corpus_stage
from tasks.evaluate import evaluate_stage
from tasks.load_corpus import load_corpus_stage
from tasks.results import RunContext
from tests.unit.xattr.test_question_answering import _train, example
from xattr.data.corpus import CorpusColumns
from xattr.metrics import gold_token_mask, precision_at_k
from xattr.models.encoding import encode_texts
from xattr.models.loading import ModelSpec, load_model


@pytest.fixture(scope="module")
def qa_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _train(tmp_path_factory.mktemp("tiny-qa-evaluate"))


def test_precision_at_20_from_gold_spans_equals_a_direct_computation(qa_dir: Path, tmp_path: Path) -> None:
    rng = random.Random(7)
    rows = [example(rng, length=rng.randrange(22, 30)) for _ in range(12)]
    corpus_file = tmp_path / "qa.jsonl"
    lines = [
        json.dumps({"question": q, "context": c, "gold_spans": [{"segment": 1, "start": s, "end": e}]})
        for q, c, (s, e) in rows
    ]
    corpus_file.write_text("\n".join(lines) + "\n")
    context = RunContext(tmp_path / "artifacts", "run")
    spec = ModelSpec(str(qa_dir))
    columns = CorpusColumns(text="question", pair="context")
    with disable_run_logger():
        corpus = load_corpus_stage.fn(corpus_file, columns, spec, "error", "error", context).refs["corpus"]
        predictions = encode_corpus_stage.fn(corpus, spec, -1, 8, context).refs["predictions"]
        attributed = attribute_stage.fn(
            corpus, spec, "simple_grad", "simple_grad", {}, "predicted", 8, context, predictions=predictions
        )
        attributions = attributed.refs["attributions"]
        result = evaluate_stage.fn(
            corpus,
            attributions,
            spec,
            "simple_grad",
            (0.5,),
            "mask",
            None,
            0,
            8,
            context,
            metrics=None,
            predictions=predictions,
        )
    # Independent: the artifact's token scores against masks built from the raw character spans.
    loaded = load_model(qa_dir, device="cpu")
    encoded = encode_texts(loaded.tokenizer, [r[0] for r in rows], [r[1] for r in rows], max_length=loaded.max_length)
    table = read_artifact(attributions).to_pandas()
    doc_ids = read_artifact(corpus).column("doc_id").to_pylist()
    expected = []
    for doc_id, enc, (_, _, span) in zip(doc_ids, encoded, rows, strict=True):
        scores = table[table["doc_id"] == doc_id].sort_values("token_index")["score"].to_numpy(np.float64)
        gold = gold_token_mask(enc.offsets, enc.segments, [span])
        expected.append(precision_at_k(scores, gold, k=20, candidates=~np.asarray(enc.special)).value)
    assert result.metrics["precision_at_20"] == pytest.approx(float(np.mean(expected)), abs=1e-12)
    assert result.metrics["precision_at_20"] > 0.9  # the trained model's gradients point at the answer word
    assert "aopc" in result.metrics
