"""WebNLG, AG News and IMDB adapters on inline samples; gold columns through load_corpus."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from storage.schemas import conform_table, schema_for
from xattr.data.ag_news import AgNewsError, clean_text, read_ag_news
from xattr.data.corpus import CorpusColumns, CorpusError, load_corpus
from xattr.data.gold_spans import find_phrase, merge_spans
from xattr.data.imdb import ImdbError, read_imdb
from xattr.data.webnlg import WebNlgError, read_relations, read_webnlg

REPO = Path(__file__).resolve().parents[3]
SHARED = REPO.parent / "shared" / "data"
if not SHARED.is_dir():
    SHARED = REPO.parent.parent / "shared" / "data"

WEBNLG = [
    {
        "text": "Peter Stöger is manager of 1 . FC Köln which has 50000 members .",
        "triple_list": [["1 . FC Köln", "manager", "Peter Stöger"], ["1 . FC Köln", "numberOfMembers", "50000"]],
    },
    {"text": "Alan Bean was born in Wheeler .", "triple_list": [["Alan Bean", "birthPlace", "Texas"]]},
]


def _webnlg(tmp_path: Path) -> Path:
    (tmp_path / "rel2id.json").write_text(json.dumps([{"manager": 0, "numberOfMembers": 1, "birthPlace": 2}]))
    path = tmp_path / "val_triples.json"
    path.write_text(json.dumps(WEBNLG, ensure_ascii=False), encoding="utf-8")
    return path


def test_find_phrase_whole_tokens_only() -> None:
    text = "FC Köln and FCs and 1 . FC Köln"
    assert find_phrase(text, "FC Köln") == [(0, 7), (24, 31)]
    assert [text[s:e] for s, e in find_phrase(text, "1 . FC")] == ["1 . FC"]
    assert find_phrase(text, "Köl") == [] and find_phrase(text, "  ") == []
    assert merge_spans([(5, 9), (0, 3), (2, 4), (9, 10)]) == [(0, 4), (5, 9), (9, 10)]


def test_read_webnlg_labels_and_entity_spans(tmp_path: Path) -> None:
    frame = read_webnlg(_webnlg(tmp_path))
    assert frame["label_set"].tolist() == [[0, 1], [2]]
    first = frame.iloc[0]
    spans = [(s["start"], s["end"]) for s in first["gold_spans"]]
    assert [first["text"][s:e] for s, e in spans] == ["Peter Stöger", "1 . FC Köln", "50000"]
    assert first["gold_unlocated"] == 0
    # "Texas" is not in the text: counted, never fatal; "Alan Bean" is still found.
    second = frame.iloc[1]
    assert second["gold_unlocated"] == 1
    assert [second["text"][s["start"] : s["end"]] for s in second["gold_spans"]] == ["Alan Bean"]
    assert read_relations(tmp_path / "rel2id.json") == ["manager", "numberOfMembers", "birthPlace"]
    star = tmp_path / "star.json"
    star.write_text(json.dumps([{"0": "a", "1": "b"}, {"a": 0, "b": 1}]))
    assert read_relations(star) == ["a", "b"]


def test_read_webnlg_bad_input(tmp_path: Path) -> None:
    path = _webnlg(tmp_path)
    with pytest.raises(WebNlgError, match="record 0: unknown relation 'manager'"):
        read_webnlg(path, relations=["birthPlace"])
    with pytest.raises(WebNlgError, match="does not exist"):
        read_webnlg(tmp_path / "nope.json")


def test_webnlg_frame_loads_as_a_corpus_with_gold(tmp_path: Path) -> None:
    frame = read_webnlg(_webnlg(tmp_path))
    file = tmp_path / "corpus.parquet"
    frame.to_parquet(file)
    loaded = load_corpus(file, CorpusColumns(label="label_set", multi_label=True, id="doc_id")).frame
    assert loaded["label_set"].tolist() == [[0, 1], [2]]
    assert loaded["gold_unlocated"].tolist() == [0, 1]
    assert [len(s) for s in loaded["gold_spans"]] == [3, 1]
    table = conform_table(pa.Table.from_pandas(loaded, preserve_index=False), schema_for("corpus"), artifact="c")
    assert table.column("gold_spans").to_pylist()[1] == [{"segment": 0, "start": 0, "end": 9}]


def test_load_corpus_counts_unlocatable_spans_and_checks_word_scores(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "text": ["a good film", "bad"],
            "gold_spans": [
                [{"segment": 0, "start": 2, "end": 6}, {"segment": 0, "start": 5, "end": 40}],
                [{"segment": 1, "start": 0, "end": 1}],
            ],
            "gold_word_scores": [[0.0, 1.0, 0.0], [1.0]],
        }
    )
    file = tmp_path / "c.parquet"
    frame.to_parquet(file)
    loaded = load_corpus(file, CorpusColumns()).frame
    assert loaded["gold_spans"].tolist() == [[{"segment": 0, "start": 2, "end": 6}], []]
    assert loaded["gold_unlocated"].tolist() == [1, 1]
    assert loaded["gold_word_scores"].tolist() == [[0.0, 1.0, 0.0], [1.0]]
    frame.loc[1, "gold_word_scores"] = [1.0, 0.5]
    frame.to_parquet(file)
    with pytest.raises(CorpusError, match="column 'gold_word_scores', row 2: 2 gold word scores but the text has 1"):
        load_corpus(file, CorpusColumns())


AG_CSV = (
    '"3","Fears for T N pension","Unions say they are #39;disappointed#39; \\\\n after talks &lt;b&gt;."\n'
    '"2","Win","Team wins."\n'
)


def test_read_ag_news(tmp_path: Path) -> None:
    path = tmp_path / "test.csv"
    path.write_text(AG_CSV)
    frame = read_ag_news(path)
    assert frame["label"].tolist() == [2.0, 1.0]
    assert frame["group"].tolist() == ["Business", "Sports"]
    assert frame["text"].tolist() == [
        "Fears for T N pension Unions say they are 'disappointed' after talks <b>.",
        "Win Team wins.",
    ]
    assert clean_text("a\\nb") == "a b"
    path.write_text('"5","x","y"\n')
    with pytest.raises(AgNewsError, match="row 1: class '5' is not 1-4"):
        read_ag_news(path)


def test_read_imdb_gzip(tmp_path: Path) -> None:
    path = tmp_path / "imdb.csv.gz"
    with gzip.open(path, "wt") as handle:
        handle.write('file,review_id,rating,label,text\nt/pos/1_9.txt,1,9,1,"Great.<br /><br />Loved it, ""really"""\n')
        handle.write("t/neg/2_1.txt,2,1,0,Awful\n")
    frame = read_imdb(path)
    assert frame["text"].tolist() == ['Great. Loved it, "really"', "Awful"]
    assert frame["label"].tolist() == [1.0, 0.0]
    assert frame["doc_id"].tolist() == ["imdb-1-1", "imdb-2-0"]
    with gzip.open(path, "wt") as handle:
        handle.write("file,review_id,rating,label,text\nx,1,9,2,Hm\n")
    with pytest.raises(ImdbError, match="row 1: '2' is not 0 or 1"):
        read_imdb(path)


def test_real_webnlg_dev_entities_are_all_found() -> None:
    path = SHARED / "webnlg" / "exact" / "val_triples.json"
    if not path.is_file():
        pytest.skip(f"shared WebNLG data not present at {path}")
    frame = read_webnlg(path)
    assert len(frame) == 500
    assert int(frame["gold_unlocated"].sum()) == 0
    assert all(len(s) > 0 for s in frame["gold_spans"])
