"""The columnar token_attributions table equals a token-by-token reference; corpus ids are built once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from tasks.corpus_io import CorpusView
from tests.conftest import write_tiny_tokenizer
from xattr.methods.runner import attribution_table
from xattr.models.encoding import EncodedCorpus, encode_texts
from xattr.types import TokenAttribution


def _reference(view: CorpusView, tokenizer: object, results: list[TokenAttribution], label: str) -> pd.DataFrame:
    """One Python row per token (the former implementation's output)."""
    rows = []
    for r in results:
        enc = view.encoded[r.position]
        tokens = tokenizer.convert_ids_to_tokens(list(enc.input_ids))
        for i in range(len(enc)):
            rows.append(
                (
                    view.frame["doc_id"].iloc[r.position],
                    label,
                    r.target,
                    i,
                    tokens[i],
                    enc.word_index[i],
                    enc.offsets[i][0],
                    enc.offsets[i][1],
                    np.float32(r.scores[i]),
                )
            )
    columns = ["doc_id", "method", "target", "token_index", "token", "word_index", "char_start", "char_end", "score"]
    frame = pd.DataFrame(rows, columns=columns)
    for name in ("target", "token_index", "word_index", "char_start", "char_end"):
        frame[name] = frame[name].astype(np.int32)
    frame["score"] = frame["score"].astype(np.float32)
    return frame


def test_table_equals_token_by_token_reference(tmp_path: Path) -> None:
    tokenizer = write_tiny_tokenizer(tmp_path / "tok")
    texts = ["the movie was great", "not fun , 16gb ram", "awful", "very good film and boring plot !", "zzz unknown"]
    frame = pd.DataFrame({"doc_id": [f"d{i}" for i in range(len(texts))], "text": texts})
    view = CorpusView(frame, encode_texts(tokenizer, texts, None, max_length=16))
    rng = np.random.default_rng(0)
    # Out of corpus order, one text twice (two targets), one text not explained.
    results = [
        TokenAttribution(p, t, rng.normal(size=len(view.encoded[p])))
        for p, t in [(3, 0), (0, 1), (0, 0), (4, 1), (1, 0)]
    ]
    table = attribution_table(view.doc_ids, view.encoded, tokenizer, results, "simple_grad")
    assert table.schema.field("doc_id").type == pa.string() and table.schema.field("score").type == pa.float32()
    pd.testing.assert_frame_equal(table.to_pandas(), _reference(view, tokenizer, results, "simple_grad"))
    # From the columns the encode stage writes, held in part (texts 0, 1, 3, 4), the same table.
    held = [0, 1, 3, 4]
    columns = EncodedCorpus.from_texts([view.encoded[p] for p in held], np.asarray(held), len(texts))
    pd.testing.assert_frame_equal(
        attribution_table(view.doc_ids, columns, tokenizer, results, "simple_grad").to_pandas(), table.to_pandas()
    )
    empty = attribution_table(view.doc_ids, view.encoded, tokenizer, [], "simple_grad")
    assert empty.num_rows == 0 and empty.schema == table.schema


def test_doc_ids_are_built_once(tmp_path: Path) -> None:
    view = CorpusView(pd.DataFrame({"doc_id": ["a", "b"]}), [])
    assert view.doc_ids == ["a", "b"]
    assert view.doc_ids is view.doc_ids  # rebuilt per call made the attribute stage n x O(n)


def test_stored_scores_of_a_dataset_are_exactly_the_wanted_explanations(tmp_path: Path) -> None:
    from storage import ArtifactStore
    from tasks.attribute import stored_scores

    tokenizer = write_tiny_tokenizer(tmp_path / "tok")
    texts = ["the movie was great", "not fun", "awful", "very good film and boring plot !", "zzz unknown"]
    doc_ids = [f"d{i}" for i in range(len(texts))]
    encoded = EncodedCorpus.from_texts(encode_texts(tokenizer, texts, None, max_length=16))
    rng = np.random.default_rng(0)
    # two targets for text 1, none for text 2 (a multi-label text with no label)
    explained = [(0, 0), (1, 0), (1, 1), (3, 1), (4, 0)]
    results = [TokenAttribution(p, t, rng.normal(size=encoded.length(p)).astype(np.float32)) for p, t in explained]
    store = ArtifactStore(tmp_path / "art", "run")
    parts = [
        store.write("token_attributions", "attribute-m", "attributions", table, part=number)
        for number, table in enumerate(
            [
                attribution_table(doc_ids, encoded, tokenizer, results[:3], "m"),
                attribution_table(doc_ids, encoded, tokenizer, results[3:], "m"),
            ]
        )
    ]
    dataset = store.write_dataset("attribute-m", "attributions", parts)
    got = stored_scores(dataset, doc_ids, [(1, 1), (3, 1), (4, 0), (4, 1), (2, 0), (1, 1)])
    assert sorted(got) == [(1, 1), (3, 1), (4, 0)]  # (4, 1) and (2, 0) were never explained
    by_key = {(r.position, r.target): r.scores for r in results}
    for key, scores in got.items():
        np.testing.assert_array_equal(scores.numpy(), by_key[key])
    assert stored_scores(parts[0], doc_ids, [(0, 0)])[(0, 0)].numpy().tolist() == by_key[(0, 0)].tolist()
