from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from xattr.data.corpus import CorpusColumns, CorpusError, load_corpus


def _csv(tmp_path: Path, rows: list[dict], name: str = "c.csv") -> Path:
    path = tmp_path / name
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_reads_csv_jsonl_and_parquet_identically(tmp_path: Path) -> None:
    rows = [{"id": "a", "t": "good film", "y": "pos", "g": "x"}, {"id": "b", "t": "bad film", "y": "neg", "g": None}]
    csv = _csv(tmp_path, rows)
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in rows))
    parquet = tmp_path / "c.parquet"
    pd.DataFrame(rows).to_parquet(parquet)
    cols = CorpusColumns(text="t", label="y", group="g", id="id")
    frames = [load_corpus(p, cols, label2id={"neg": 0, "pos": 1}).frame for p in (csv, jsonl, parquet)]
    for frame in frames:
        assert frame["doc_id"].tolist() == ["a", "b"]
        assert frame["text"].tolist() == ["good film", "bad film"]
        assert frame["label"].tolist() == [1.0, 0.0]
        assert frame["group"].tolist() == ["x", None]


def test_row_ids_default_to_row_numbers_and_pairs_are_kept(tmp_path: Path) -> None:
    path = _csv(tmp_path, [{"a": "x y", "b": "z"}, {"a": "p", "b": "q r"}])
    frame = load_corpus(path, CorpusColumns(text="a", pair="b")).frame
    assert frame["doc_id"].tolist() == ["row-000001", "row-000002"]
    assert frame["text_pair"].tolist() == ["z", "q r"]


def test_multi_label_strings_are_split_and_mapped(tmp_path: Path) -> None:
    path = _csv(tmp_path, [{"t": "a b", "y": "country|leader"}, {"t": "c", "y": "leader"}])
    frame = load_corpus(
        path, CorpusColumns(text="t", label="y", multi_label=True), label2id={"country": 0, "leader": 1}
    ).frame
    assert [list(v) for v in frame["label_set"]] == [[0, 1], [1]]


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "e.csv"
    path.write_text("text\n")
    with pytest.raises(CorpusError, match=r"e\.csv' has no rows"):
        load_corpus(path, CorpusColumns())


def test_missing_text_column_lists_columns(tmp_path: Path) -> None:
    path = _csv(tmp_path, [{"body": "x"}])
    with pytest.raises(CorpusError, match="text column 'text' not found; columns are: body"):
        load_corpus(path, CorpusColumns())


def test_empty_and_whitespace_texts_are_named_or_dropped(tmp_path: Path) -> None:
    path = _csv(tmp_path, [{"text": "ok"}, {"text": "   "}, {"text": None}, {"text": "fine"}])
    with pytest.raises(CorpusError, match="empty or whitespace-only text in rows 2, 3"):
        load_corpus(path, CorpusColumns())
    loaded = load_corpus(path, CorpusColumns(), empty_texts="drop")
    assert loaded.frame["text"].tolist() == ["ok", "fine"]
    assert loaded.dropped == {"empty_text": 2}
    assert loaded.rows_read == 4


def test_missing_labels_are_named_or_dropped(tmp_path: Path) -> None:
    path = _csv(tmp_path, [{"text": "a", "y": 1.5}, {"text": "b", "y": math.nan}])
    with pytest.raises(CorpusError, match="column 'y': missing or NaN label in rows 2"):
        load_corpus(path, CorpusColumns(label="y"))
    loaded = load_corpus(path, CorpusColumns(label="y"), missing_labels="drop")
    assert loaded.frame["label"].tolist() == [1.5]
    assert loaded.dropped == {"missing_label": 1}


def test_duplicate_ids_are_named(tmp_path: Path) -> None:
    path = _csv(tmp_path, [{"id": "a", "text": "x"}, {"id": "b", "text": "y"}, {"id": "a", "text": "z"}])
    with pytest.raises(CorpusError, match="duplicate document id 'a' in rows 1, 3"):
        load_corpus(path, CorpusColumns(id="id"))


def test_unknown_class_name_lists_known_classes(tmp_path: Path) -> None:
    path = _csv(tmp_path, [{"text": "x", "y": "meh"}])
    with pytest.raises(CorpusError, match="row 1: label 'meh' is not a known class; known classes: neg, pos"):
        load_corpus(path, CorpusColumns(label="y"), label2id={"neg": 0, "pos": 1})


def test_missing_file_and_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="does not exist"):
        load_corpus(tmp_path / "nope.csv", CorpusColumns())
    other = tmp_path / "c.txt"
    other.write_text("x")
    with pytest.raises(CorpusError, match="unknown format '.txt'"):
        load_corpus(other, CorpusColumns())


@pytest.mark.parametrize("bad", [0.5, 1.9, 7, -1, 2])
def test_class_labels_outside_the_models_classes_are_refused_with_file_column_row_and_value(
    tmp_path: Path, bad: float
) -> None:
    path = _csv(tmp_path, [{"t": "a", "y": 0}, {"t": "b", "y": 1}, {"t": "c", "y": bad}])
    with pytest.raises(CorpusError) as caught:
        load_corpus(path, CorpusColumns(text="t", label="y"), label2id={"neg": 0, "pos": 1}, classes=2)
    message = str(caught.value)
    assert f"corpus file {str(path)!r}, column 'y', row 3: label {float(bad)!r}" in message or (
        f"corpus file {str(path)!r}, column 'y', row 3: label {bad!r}" in message
    )
    assert "[0, 2)" in message and "neg, pos" in message


def test_class_names_and_whole_numbers_in_range_are_classes(tmp_path: Path) -> None:
    path = _csv(tmp_path, [{"t": "a", "y": "pos"}, {"t": "b", "y": "0"}, {"t": "c", "y": 1}])
    frame = load_corpus(path, CorpusColumns(text="t", label="y"), label2id={"neg": 0, "pos": 1}, classes=2).frame
    assert frame["label"].tolist() == [1.0, 0.0, 1.0]
    multi = _csv(tmp_path, [{"t": "a", "y": "pos|0"}, {"t": "b", "y": "neg|5"}], name="m.csv")
    with pytest.raises(CorpusError, match=r"column 'y', row 2: label '5' is not a class of the model"):
        load_corpus(
            multi, CorpusColumns(text="t", label="y", multi_label=True), label2id={"neg": 0, "pos": 1}, classes=2
        )


def test_regression_labels_are_any_finite_number(tmp_path: Path) -> None:
    path = _csv(tmp_path, [{"t": "a", "y": 0.5}, {"t": "b", "y": -7.25}])
    assert load_corpus(path, CorpusColumns(text="t", label="y")).frame["label"].tolist() == [0.5, -7.25]


def test_a_latin1_csv_names_its_row_and_reads_with_the_encoding_setting(tmp_path: Path) -> None:
    path = tmp_path / "latin.csv"
    path.write_bytes("text,label\ngood film,1\ncaf\u00e9 cr\u00e8me,0\n".encode("latin-1"))
    with pytest.raises(CorpusError) as caught:
        load_corpus(path, CorpusColumns(text="text", label="label"))
    message = str(caught.value)
    assert f"corpus file {str(path)!r}, line 3 (data row 2)" in message and "corpus.encoding" in message
    frame = load_corpus(path, CorpusColumns(text="text", label="label", encoding="latin-1")).frame
    assert frame["text"].tolist() == ["good film", "caf\u00e9 cr\u00e8me"]


def test_a_malformed_jsonl_line_is_named_by_its_number(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text('{"text": "good", "label": 1}\n{"text": "bad", "label": 0}\n{"text": "oops", "label": \n')
    with pytest.raises(CorpusError, match=rf"corpus file {str(path)!r}, line 3: not valid JSON"):
        load_corpus(path, CorpusColumns(text="text", label="label"))
    path.write_text('{"text": "good"}\n[1, 2]\n')
    with pytest.raises(CorpusError, match="line 2: expected a JSON object, got list"):
        load_corpus(path, CorpusColumns(text="text"))


def test_a_corpus_path_that_is_a_directory_says_so(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match=rf"corpus file {str(tmp_path)!r} is a directory"):
        load_corpus(tmp_path, CorpusColumns())


def test_texts_without_a_token_are_refused_or_dropped_like_empty_ones(tmp_path: Path) -> None:
    path = _csv(tmp_path, [{"t": "good film"}, {"t": "\u200b\u200b"}, {"t": "bad"}])

    def has_tokens(texts: list[str]) -> list[bool]:  # what a tokenizer that strips zero-width characters sees
        return [bool(t.replace("\u200b", "").strip()) for t in texts]

    with pytest.raises(CorpusError, match=r"column 't': text with no token the model knows in rows 2 "):
        load_corpus(path, CorpusColumns(text="t"), has_tokens=has_tokens)
    loaded = load_corpus(path, CorpusColumns(text="t"), has_tokens=has_tokens, empty_texts="drop")
    assert loaded.frame["text"].tolist() == ["good film", "bad"] and loaded.dropped == {"no_tokens": 1}


def test_a_dataset_file_that_is_a_directory_says_so(tmp_path: Path) -> None:
    from xattr.data.files import existing_file

    with pytest.raises(CorpusError, match=rf"SST file {str(tmp_path)!r} is a directory, not a file"):
        existing_file(tmp_path, what="SST file", error=CorpusError)
