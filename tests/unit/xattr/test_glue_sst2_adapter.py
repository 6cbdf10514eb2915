from __future__ import annotations

from pathlib import Path

import pytest

from xattr.data.glue_sst2 import GlueSst2Error, read_glue_sst2

SHARED_DATA = Path(__file__).resolve().parents[3] / ".." / "shared" / "data"

SAMPLE = (
    "sentence\tlabel\n"
    "it 's a charming and often affecting journey . \t1\n"
    "unflinchingly bleak and desperate \t0\n"
    'the " best " film \t1\n'
)


def _write(tmp_path: Path, text: str, name: str = "sample.tsv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_reads_canonical_columns(tmp_path: Path) -> None:
    frame = read_glue_sst2(_write(tmp_path, SAMPLE))
    assert list(frame.columns) == ["doc_id", "text", "text_pair", "label", "label_set", "group"]
    assert frame["doc_id"].tolist() == ["sample-1", "sample-2", "sample-3"]
    assert frame["text"].tolist() == [
        "it 's a charming and often affecting journey .",
        "unflinchingly bleak and desperate",
        'the " best " film',
    ]
    assert frame["label"].tolist() == [1.0, 0.0, 1.0]
    assert frame["text_pair"].isna().all() and frame["label_set"].isna().all() and frame["group"].isna().all()


def test_column_order_from_header(tmp_path: Path) -> None:
    frame = read_glue_sst2(_write(tmp_path, "label\tsentence\n0\tdull\n1\tfun\n"))
    assert frame["text"].tolist() == ["dull", "fun"]
    assert frame["label"].tolist() == [0.0, 1.0]


def test_bad_label_names_file_and_row(tmp_path: Path) -> None:
    path = _write(tmp_path, SAMPLE + "meh \t2\n")
    with pytest.raises(GlueSst2Error, match=r"sample\.tsv.*row 4: label '2' is not 0 or 1"):
        read_glue_sst2(path)
    path = _write(tmp_path, "sentence\tlabel\nok \tpos\n", name="words.tsv")
    with pytest.raises(GlueSst2Error, match=r"words\.tsv.*row 1: label 'pos'"):
        read_glue_sst2(path)


def test_missing_column_names_file(tmp_path: Path) -> None:
    with pytest.raises(GlueSst2Error, match=r"nolabel\.tsv.*column 'label' not found"):
        read_glue_sst2(_write(tmp_path, "sentence\tscore\nfine \t1\n", name="nolabel.tsv"))


def test_short_row_and_empty_sentence_name_row(tmp_path: Path) -> None:
    with pytest.raises(GlueSst2Error, match=r"row 2: 1 tab-separated field"):
        read_glue_sst2(_write(tmp_path, "sentence\tlabel\nfine \t1\nno tab here\n"))
    with pytest.raises(GlueSst2Error, match=r"row 1: empty sentence"):
        read_glue_sst2(_write(tmp_path, "sentence\tlabel\n \t1\n"))


def test_missing_and_empty_file(tmp_path: Path) -> None:
    with pytest.raises(GlueSst2Error, match="does not exist"):
        read_glue_sst2(tmp_path / "absent.tsv")
    with pytest.raises(GlueSst2Error, match="no rows"):
        read_glue_sst2(_write(tmp_path, "sentence\tlabel\n"))
    with pytest.raises(GlueSst2Error, match="no header"):
        read_glue_sst2(_write(tmp_path, ""))


def test_real_glue_dev() -> None:
    dev = SHARED_DATA / "sst2_glue" / "glue_dev.tsv"
    if not dev.is_file():
        pytest.skip(f"shared GLUE SST-2 data not present at {dev}")
    frame = read_glue_sst2(dev)
    assert len(frame) == 872
    assert (frame["label"] == 0).sum() == 428 and (frame["label"] == 1).sum() == 444
    assert frame["doc_id"].is_unique
