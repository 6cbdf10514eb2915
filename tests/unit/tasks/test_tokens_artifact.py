"""Tokenise once: the encode stage's ``tokens`` artifact equals tokenising again, read by shard and by position."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch
from prefect.logging import disable_run_logger

import tasks.attribute
import tasks.encode_corpus
from storage import ArtifactStore, read_artifact
from tasks.attribute import attribute_stage
from tasks.corpus_io import corpus_chunks, part_ranges, read_corpus
from tasks.encode_corpus import encode_corpus_stage
from tasks.load_corpus import load_corpus_stage
from tasks.models import loaded_model
from tasks.results import RunContext
from tasks.shards import plan_shards, shard_dataset_stage
from tests.conftest import RecordingProgress
from xattr.data.corpus import CorpusColumns
from xattr.models.encoding import EncodedCorpus, collate, encode_corpus, encode_texts
from xattr.models.loading import ModelSpec

TEXTS = [
    "the movie was great",
    "bad acting and a boring plot , really bad and boring acting all the way through the film",
    "not fun",
    "very good film",
    "awful plot",
    "boring",
    "love this movie",
]
PAIRS = ["is it good ?", "no", "maybe", "yes", "no", "no", "yes !"]


@pytest.fixture(autouse=True)
def quiet_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tasks.encode_corpus, "StageProgress", RecordingProgress)
    monkeypatch.setattr(tasks.attribute, "StageProgress", RecordingProgress)


def _corpus(tmp_path: Path, model_dir: Path, texts: list[str], pairs: list[str] | None = None):
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "corpus.csv"
    labels = [i % 2 for i in range(len(texts))]
    frame = pd.DataFrame({"id": [f"d{i}" for i in range(len(texts))], "text": texts, "label": labels})
    if pairs is not None:
        frame["pair"] = pairs
    frame.to_csv(path, index=False)
    context = RunContext(tmp_path / "artifacts", "run")
    spec = ModelSpec(str(model_dir), max_length=12)
    columns = CorpusColumns(text="text", id="id", label="label", pair="pair" if pairs is not None else None)
    corpus = load_corpus_stage.fn(path, columns, spec, "error", "error", context).refs["corpus"]
    return corpus, context, spec


@pytest.mark.parametrize("pairs", [None, PAIRS])
def test_columns_round_trip_to_the_tokenizers_encoding(
    tiny_tokenizer: object, pairs: list[str] | None, tiny_classifier_dir: Path
) -> None:
    reference = encode_texts(tiny_tokenizer, TEXTS, pairs, max_length=12)
    assert any(e.truncated for e in reference) and any(not e.truncated for e in reference)
    columns = EncodedCorpus.from_texts(reference)
    assert len(columns) == len(reference) and list(columns) == reference
    back = EncodedCorpus.from_arrow(columns.to_arrow([f"d{i}" for i in range(len(TEXTS))]))
    assert [back[i] for i in range(len(TEXTS))] == reference
    # The padded batch built from the columns is the one built from the texts.
    for mine, theirs in zip(
        (collate(back, [4, 1, 2], 0), collate(back, [6], 0)),
        (collate(reference, [4, 1, 2], 0), collate(reference, [6], 0)),
        strict=True,
    ):
        assert mine.indices == theirs.indices
        for name in ("input_ids", "attention_mask", "token_type_ids"):
            assert torch.equal(getattr(mine, name), getattr(theirs, name))
    # Held in part: positions 1 and 5 of a corpus of 7, the others refused by name.
    part = EncodedCorpus.from_texts([reference[1], reference[5]], np.array([1, 5]), 7)
    assert len(part) == 7 and part[5] == reference[5] and part[-2] == reference[5]
    with pytest.raises(IndexError, match="corpus position 2 is not held"):
        part[2]
    # Attributing it: the held texts with targets are attributed; a target for a text not held is refused.
    from xattr.methods import attribute_corpus, get_method

    random, loaded = get_method("random"), loaded_model(ModelSpec(str(tiny_classifier_dir)))
    targets = [[], [0], [], [], [], [1, 0], []]
    held = attribute_corpus(random, loaded, part, targets)
    whole = attribute_corpus(random, loaded, reference, targets)
    assert [(r.position, r.target) for r in held] == [(1, 0), (5, 1), (5, 0)]
    for a, b in zip(held, whole, strict=True):
        np.testing.assert_array_equal(a.scores, b.scores)
    with pytest.raises(IndexError, match="corpus position 3 is not held"):
        attribute_corpus(random, loaded, part, [[], [0], [], [0], [], [], []])


@pytest.mark.parametrize("pairs", [None, PAIRS])
def test_tokenising_in_chunks_equals_one_call(tiny_tokenizer: object, pairs: list[str] | None) -> None:
    seen: list[tuple[int, int]] = []
    chunked = encode_corpus(
        tiny_tokenizer, TEXTS, pairs, max_length=12, chunk_texts=3, progress=lambda d, t: seen.append((d, t))
    )
    assert list(chunked) == encode_texts(tiny_tokenizer, TEXTS, pairs, max_length=12)
    assert seen == [(3, 7), (6, 7), (7, 7)]
    with pytest.raises(ValueError, match="row 4: pair text is missing while other rows have one"):
        encode_corpus(tiny_tokenizer, TEXTS, [*PAIRS[:4], None, *PAIRS[5:]], max_length=12, chunk_texts=3)


def test_stages_read_the_tokens_instead_of_tokenising(tmp_path: Path, tiny_classifier_dir: Path) -> None:
    with disable_run_logger():
        corpus, context, spec = _corpus(tmp_path, tiny_classifier_dir, TEXTS, PAIRS)
        whole = encode_corpus_stage.fn(corpus, spec, -1, 4, context)
        loaded = loaded_model(spec)
        tokens = whole.refs["tokens"]
        assert tokens.rows == len(TEXTS)
        again = read_corpus(corpus, loaded)  # tokenised here
        read = read_corpus(corpus, loaded, tokens=tokens)
        assert (
            list(read.encoded)
            == list(again.encoded)
            == encode_texts(loaded.tokenizer, TEXTS, PAIRS, max_length=loaded.max_length)
        )
        sample = read_corpus(corpus, loaded, only=[5, 0, 3], tokens=tokens)
        assert [sample.encoded[i] for i in (0, 3, 5)] == [again.encoded[i] for i in (0, 3, 5)]
        assert not sample.encoded.holds(1)
        shard_rows = read_corpus(corpus, loaded, rows=range(2, 5), tokens=tokens)
        assert list(shard_rows.encoded) == list(again.encoded)[2:5]
        # Attributions from the tokens equal those of a stage that tokenises.
        kwargs = {"predictions": whole.refs["predictions"]}
        a = attribute_stage.fn(corpus, spec, "simple_grad", "sg", {}, "predicted", 4, context, **kwargs, tokens=tokens)
        b = attribute_stage.fn(
            corpus, spec, "simple_grad", "sg", {}, "predicted", 4, RunContext(tmp_path / "b", "run"), **kwargs
        )
        assert read_artifact(a.refs["attributions"]).equals(read_artifact(b.refs["attributions"]))
        # A tokens artifact of another corpus (fewer documents) or another tokenizer length is refused.
        other, other_context, _ = _corpus(tmp_path / "other", tiny_classifier_dir, TEXTS[:-1], PAIRS[:-1])
        foreign = encode_corpus_stage.fn(other, spec, -1, 4, other_context).refs["tokens"]
        with pytest.raises(ValueError, match="does not hold the corpus' documents in order"):
            read_corpus(corpus, loaded, only=[0, 6], tokens=foreign)
        longer = loaded_model(ModelSpec(spec.source, max_length=16))
        with pytest.raises(ValueError, match="was written for another max_length"):
            read_corpus(corpus, longer, tokens=tokens)


def test_a_shards_texts_are_read_from_its_part_only(tmp_path: Path, tiny_classifier_dir: Path) -> None:
    with disable_run_logger():
        corpus, context, spec = _corpus(tmp_path, tiny_classifier_dir, TEXTS)
        shards = plan_shards(corpus, 3)
        parts = [encode_corpus_stage.fn(corpus, spec, -1, 4, context, shard=shard).refs for shard in shards]
        listed = shard_dataset_stage.fn("encode_corpus", parts, context).refs
        loaded = loaded_model(spec)
        whole = read_corpus(corpus, loaded)
        tokens = listed["tokens"]
        assert list(read_corpus(corpus, loaded, tokens=tokens).encoded) == list(whole.encoded)
        # Break the last part: reading the first shard's rows, or positions inside it, never opens it.
        last = Path(parts[-1]["tokens"].path)
        last.chmod(0o644)
        last.write_bytes(b"broken")
        assert list(read_corpus(corpus, loaded, rows=range(0, 3), tokens=tokens).encoded) == list(whole.encoded)[:3]
        assert read_corpus(corpus, loaded, only=[1, 4], tokens=tokens).encoded[4] == whole.encoded[4]
        with pytest.raises(Exception, match="sha256 mismatch"):
            read_corpus(corpus, loaded, only=[6], tokens=tokens)
    assert sorted(p.name for p in Path(tokens.path).iterdir()) == [
        "_manifest.json",
        "part-00000.parquet",
        "part-00001.parquet",
        "part-00002.parquet",
    ]


def _token_rows(doc_ids: list[str], lengths: list[int]) -> pa.Table:
    """A ``token_attributions`` table: ``lengths[i]`` rows of document ``doc_ids[i]``, scores numbered."""
    ids = [d for d, n in zip(doc_ids, lengths, strict=True) for _ in range(n)]
    index = [k for n in lengths for k in range(n)]
    return pa.table(
        {
            "doc_id": pa.array(ids, pa.string()),
            "method": pa.array(["m"] * len(ids)),
            "target": pa.array([0] * len(ids), pa.int32()),
            "token_index": pa.array(index, pa.int32()),
            "token": pa.array(["t"] * len(ids)),
            "word_index": pa.array(index, pa.int32()),
            "char_start": pa.array([0] * len(ids), pa.int32()),
            "char_end": pa.array([1] * len(ids), pa.int32()),
            "score": pa.array(np.arange(len(ids), dtype=np.float32)),
        }
    )


def test_corpus_chunks_follow_the_shards_and_hand_out_each_documents_rows(
    tmp_path: Path, tiny_classifier_dir: Path
) -> None:
    with disable_run_logger():
        corpus, context, spec = _corpus(tmp_path, tiny_classifier_dir, TEXTS)
        shards = plan_shards(corpus, 3)
        parts = [encode_corpus_stage.fn(corpus, spec, -1, 4, context, shard=shard).refs for shard in shards]
        tokens = shard_dataset_stage.fn("encode_corpus", parts, context).refs["tokens"]
    ids = [f"d{i}" for i in range(len(TEXTS))]
    lengths = [2, 0, 3, 1, 0, 4, 2]  # d1 and d4 have no rows
    store = ArtifactStore(context.artifacts_root, context.run_id)
    # The attributions in parts of another size than the shards (2, 3 and 2 documents): rows are handed out by document.
    cuts = [(0, 2), (2, 5), (5, 7)]
    refs = [
        store.write("token_attributions", "attr", "a", _token_rows(ids[a:b], lengths[a:b]), part=k)
        for k, (a, b) in enumerate(cuts)
    ]
    attributions = store.write_dataset("attr", "a", refs)
    whole = read_artifact(attributions).to_pandas()
    chunks = list(corpus_chunks(corpus, layout=tokens, columns=["text"], aligned={"a": (attributions, ["score"])}))
    assert [c.rows for c in chunks] == part_ranges(tokens) == [range(0, 3), range(3, 6), range(6, 7)]
    for chunk in chunks:
        assert chunk.frame["doc_id"].tolist() == ids[chunk.rows.start : chunk.rows.stop]
        assert chunk.frame["text"].tolist() == TEXTS[chunk.rows.start : chunk.rows.stop]
        expected = whole[whole["doc_id"].isin(chunk.frame["doc_id"])]
        got = chunk.tables["a"].to_pandas()
        assert got.columns.tolist() == ["doc_id", "score"]
        assert got["doc_id"].tolist() == expected["doc_id"].tolist()
        assert got["score"].tolist() == expected["score"].tolist()
    assert [c.rows for c in corpus_chunks(corpus)] == [range(0, 7)]
    # Rows of a document out of corpus order (d0 in a part after d3's) cannot be handed out: one line names it.
    late = [
        store.write("token_attributions", "bad", "a", _token_rows([d], [1]), part=k) for k, d in enumerate(["d3", "d0"])
    ]
    shuffled = store.write_dataset("bad", "a", late)
    with pytest.raises(ValueError, match="not in corpus order \\(first: doc_id 'd0'\\)"):
        list(corpus_chunks(corpus, layout=tokens, aligned={"a": (shuffled, None)}))
    foreign = store.write("token_attributions", "foreign", "a", _token_rows(["d0", "x9"], [1, 1]))
    with pytest.raises(ValueError, match="1 rows of documents that are not the corpus'.*'x9'"):
        list(corpus_chunks(corpus, aligned={"a": (foreign, None)}))
