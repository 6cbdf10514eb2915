"""The class-drivers stage streams a sharded corpus shard by shard and writes the table of the whole corpus at once."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from prefect.logging import disable_run_logger

import tasks.encode_corpus
import tasks.explanations
from storage import ArtifactStore, read_artifact
from tasks.corpus_io import part_ranges, read_corpus
from tasks.encode_corpus import encode_corpus_stage
from tasks.explanations import class_drivers_stage
from tasks.load_corpus import load_corpus_stage
from tasks.models import loaded_model
from tasks.results import RunContext
from tasks.shards import plan_shards, shard_dataset_stage
from tests.conftest import WORDS, RecordingProgress, save_tiny_model
from xattr.data.corpus import CorpusColumns
from xattr.models import predict_logits
from xattr.models.loading import ModelSpec
from xattr.reporting.class_drivers import ClassDriverSettings, class_drivers

N = 60


@pytest.fixture(autouse=True)
def quiet_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tasks.encode_corpus, "StageProgress", RecordingProgress)
    monkeypatch.setattr(tasks.explanations, "StageProgress", RecordingProgress)


def _parts(store: ArtifactStore, kind: str, stage: str, table: pa.Table, cuts: list[int]):
    """``table`` written as a dataset of parts ``cuts[k]:cuts[k + 1]`` (rows)."""
    spans = zip(cuts, cuts[1:], strict=False)
    refs = [store.write(kind, stage, kind, table.slice(a, b - a), part=k) for k, (a, b) in enumerate(spans)]
    return store.write_dataset(stage, kind, refs)


@pytest.fixture(scope="module")
def sharded(tmp_path_factory: pytest.TempPathFactory):
    """A 60-text corpus in shards of 13, its tokens, 3-class predictions and signed attributions, as datasets."""
    tmp = tmp_path_factory.mktemp("class-drivers-stage")
    rng = np.random.default_rng(5)
    texts = [" ".join(rng.choice(WORDS, size=rng.integers(3, 16))) for _ in range(N)]
    path = tmp / "corpus.csv"
    pd.DataFrame({"id": [f"d{i}" for i in range(N)], "text": texts, "label": [i % 3 for i in range(N)]}).to_csv(
        path, index=False
    )
    context = RunContext(tmp / "artifacts", "run")
    spec = ModelSpec(str(save_tiny_model(tmp / "model", num_labels=3, seed=2)), max_length=12, device="cpu")
    with disable_run_logger():
        corpus = load_corpus_stage.fn(
            path, CorpusColumns(text="text", id="id", label="label"), spec, "error", "error", context
        ).refs["corpus"]
        parts = [encode_corpus_stage.fn(corpus, spec, -1, 4, context, shard=s).refs for s in plan_shards(corpus, 13)]
        tokens = shard_dataset_stage.fn("encode_corpus", parts, context).refs["tokens"]
    loaded = loaded_model(spec)
    view = read_corpus(corpus, loaded, tokens=tokens, columns=["text", "text_pair"])
    assert any(e.truncated for e in view.encoded)  # some words lose their tokens: they are no drivers
    # The random tiny model predicts one class: spread the stored predictions over the three.
    logits = predict_logits(loaded, view.encoded) + rng.normal(scale=5.0, size=(N, 3))
    assert len(np.unique(logits.argmax(axis=1))) == 3
    store = ArtifactStore(context.artifacts_root, context.run_id)
    predictions = _parts(
        store,
        "predictions",
        "predict",
        pa.table({"doc_id": view.doc_ids, "logits": pa.array(logits.tolist(), pa.list_(pa.float64()))}),
        [0, 25, 26, 60],
    )
    ids, token_index, word_index = [], [], []
    for i, enc in enumerate(view.encoded):
        for t, w in enumerate(enc.word_index):
            ids.append(view.doc_ids[i])
            token_index.append(t)
            word_index.append(w)
    count = len(ids)
    pieces = pa.table(
        {
            "doc_id": pa.array(ids, pa.string()),
            "method": pa.array(["m"] * count),
            "target": pa.array(logits.argmax(axis=1)[[int(d[1:]) for d in ids]], pa.int32()),
            "token_index": pa.array(token_index, pa.int32()),
            "token": pa.array(["t"] * count),
            "word_index": pa.array(word_index, pa.int32()),
            "char_start": pa.array([0] * count, pa.int32()),
            "char_end": pa.array([1] * count, pa.int32()),
            "score": pa.array(rng.normal(size=count).astype(np.float32)),
        }
    )
    # Attribution parts of other sizes than the shards: the stage hands each shard its documents' rows.
    starts = [ids.index(f"d{i}") for i in (0, 7, 30, 31)] + [count]
    attributions = _parts(store, "token_attributions", "attr", pieces, starts)
    return corpus, tokens, predictions, attributions, spec, context, view, logits


@pytest.mark.parametrize("batch_size", [1, 3])
def test_the_stage_over_shards_writes_the_table_of_the_whole_corpus_in_memory(sharded, batch_size: int) -> None:
    corpus, tokens, predictions, attributions, spec, context, view, logits = sharded
    assert len(part_ranges(tokens)) == 5  # the stage reads 5 chunks
    # batch_size 1 and 3: the masked texts of a class (8 and 24 per call) span shards.
    settings = ClassDriverSettings(top_k=3, min_count=2, resamples=100, seed=4, batch_size=batch_size)
    loaded = loaded_model(spec)
    whole = class_drivers(
        loaded, view.encoded, view.frame, read_artifact(attributions).to_pandas(), logits, settings, method="m"
    )
    assert whole["masked"].sum() == 9 and set(whole["class_id"]) == {0, 1, 2}
    with disable_run_logger():
        here = RunContext(context.artifacts_root, f"streamed-{batch_size}")
        streamed = class_drivers_stage.fn(corpus, predictions, attributions, spec, "m", settings, here, tokens)
        here = RunContext(context.artifacts_root, f"tokenised-{batch_size}")
        tokenised = class_drivers_stage.fn(corpus, predictions, attributions, spec, "m", settings, here)
    for result in (streamed, tokenised):
        table = read_artifact(result.refs["class_drivers"]).to_pandas()
        pd.testing.assert_frame_equal(table, whole, check_exact=True)


def test_the_stage_reports_progress_over_both_passes(sharded, monkeypatch: pytest.MonkeyPatch) -> None:
    corpus, tokens, predictions, attributions, spec, context, _, _ = sharded
    by_label: dict[str, list[tuple[int, int]]] = {}

    def progress(label: str, **_: object):
        return lambda done, total: by_label.setdefault(label, []).append((done, total))

    monkeypatch.setattr(tasks.explanations, "StageProgress", progress)
    settings = ClassDriverSettings(top_k=2, min_count=2, resamples=50, batch_size=2)
    with disable_run_logger():
        here = RunContext(context.artifacts_root, "progress")
        result = class_drivers_stage.fn(corpus, predictions, attributions, spec, "m", settings, here, tokens)
    table = read_artifact(result.refs["class_drivers"]).to_pandas()
    assert by_label["class_drivers: texts read"] == [(13, N), (26, N), (39, N), (52, N), (60, N)]
    masked = by_label["class_drivers: masked texts predicted"]
    assert masked[-1] == (int(table.loc[table["masked"], "texts"].sum()),) * 2
    assert [d for d, _ in masked] == sorted(d for d, _ in masked)
