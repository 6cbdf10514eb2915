from __future__ import annotations

import math
from pathlib import Path

import pytest

from xattr.data.sst import SstError, SstTree, parse_tree, read_sst

SHARED_DATA = Path(__file__).resolve().parents[3] / ".." / "shared" / "data"

# Hand-written trees: roots 3 (positive), 1 (negative), 2 (neutral), 0 (very negative), 4 (very positive).
TREES = [
    "(3 (2 It) (4 (3 (2 a) (4 lovely)) (2 film)))",
    "(1 (2 -LRB-) (1 (0 awful) (2 -RRB-)))",
    "(2 (2 just) (2 (2 a\\/the) (2 film)))",
    "(0 (0 terrible) (2 \\*))",
    "(4 (4 great) (2 .))",
]


def _write(tmp_path: Path, lines: list[str], name: str = "mini.txt") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_parse_tree_leaves_labels_and_root() -> None:
    tree = parse_tree(TREES[0])
    assert tree == SstTree(label=3, tokens=("It", "a", "lovely", "film"), token_labels=(2, 2, 4, 2))


def test_parse_tree_single_leaf_and_whitespace() -> None:
    assert parse_tree("  (4   good )  ") == SstTree(label=4, tokens=("good",), token_labels=(4,))


def test_parse_tree_non_breaking_space_stays_inside_token() -> None:
    tree = parse_tree("(2 (2 and) (2 8\u00a01\\/2))")
    assert tree.tokens == ("and", "8\u00a01\\/2")


def test_parse_tree_keeps_ptb_escapes() -> None:
    tree = parse_tree(TREES[1])
    assert tree.tokens == ("-LRB-", "awful", "-RRB-")
    assert tree.token_labels == (2, 0, 2)
    assert tree.label == 1


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("(3 (2 a) (2 b)", "unbalanced"),
        ("(3 (2 a)) (2 b))", "unbalanced"),
        ("(3 (2 a) (2 b)))", "unbalanced"),
        ("(x (2 a))", "not an integer"),
        ("(3 (2.5 a))", "not an integer"),
        ("(7 a)", "outside 0..4"),
        ("(3 )", "no children"),
        ("", "empty"),
        ("3 (2 a)", "must start"),
        ("(3 a b)", "mixes"),
    ],
)
def test_parse_tree_malformed(line: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_tree(line)


def test_read_sst_fine_grained(tmp_path: Path) -> None:
    frame = read_sst(_write(tmp_path, TREES), fine_grained=True)
    assert list(frame.columns) == [
        "doc_id",
        "text",
        "text_pair",
        "label",
        "label_set",
        "group",
        "gold_words",
        "gold_scores",
        "gold_word_scores",
    ]
    assert frame["doc_id"].tolist() == ["mini-1", "mini-2", "mini-3", "mini-4", "mini-5"]
    assert frame["label"].tolist() == [3.0, 1.0, 2.0, 0.0, 4.0]
    assert frame["text"].tolist() == ["It a lovely film", "( awful )", "just a/the film", "terrible *", "great ."]
    assert frame["gold_words"].iloc[1] == ("(", "awful", ")")
    assert frame["gold_scores"].iloc[0] == (0.0, 0.0, 1.0, 0.0)
    assert frame["gold_scores"].iloc[1] == (0.0, 1.0, 0.0)
    assert frame["gold_word_scores"].iloc[0] == [0.0, 0.0, 1.0, 0.0]
    assert frame["text_pair"].isna().all() and frame["label_set"].isna().all() and frame["group"].isna().all()
    for words, text in zip(frame["gold_words"], frame["text"], strict=True):
        assert " ".join(words) == text


def test_read_sst_gold_scores_half_steps(tmp_path: Path) -> None:
    frame = read_sst(_write(tmp_path, ["(3 (1 bad) (3 (3 good) (2 x)))"]), fine_grained=True)
    assert frame["gold_scores"].iloc[0] == (0.5, 0.5, 0.0)


def test_read_sst_binary_drops_neutral(tmp_path: Path) -> None:
    frame = read_sst(_write(tmp_path, TREES))
    assert frame["doc_id"].tolist() == ["mini-1", "mini-2", "mini-4", "mini-5"]
    assert frame["label"].tolist() == [1.0, 0.0, 0.0, 1.0]


def test_read_sst_binary_keeps_neutral_as_missing(tmp_path: Path) -> None:
    frame = read_sst(_write(tmp_path, TREES), binary_drop_neutral=False)
    assert len(frame) == 5
    assert math.isnan(frame["label"].iloc[2])
    assert frame["label"].iloc[[0, 1, 3, 4]].tolist() == [1.0, 0.0, 0.0, 1.0]


def test_read_sst_skips_blank_lines_and_keeps_line_numbers(tmp_path: Path) -> None:
    frame = read_sst(_write(tmp_path, [TREES[0], "", TREES[3]]))
    assert frame["doc_id"].tolist() == ["mini-1", "mini-3"]


def test_read_sst_error_names_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path, [TREES[0], TREES[1], "(3 (2 a) (x b))"])
    with pytest.raises(SstError, match=r"mini\.txt.*line 3: .*not an integer"):
        read_sst(path)
    path = _write(tmp_path, [TREES[0], "(3 (2 a)"], name="other.txt")
    with pytest.raises(SstError, match=r"other\.txt.*line 2: unbalanced"):
        read_sst(path)


def test_read_sst_missing_and_empty_file(tmp_path: Path) -> None:
    with pytest.raises(SstError, match="does not exist"):
        read_sst(tmp_path / "absent.txt")
    with pytest.raises(SstError, match="no trees"):
        read_sst(_write(tmp_path, ["", "  "]))


def test_read_sst_real_dev() -> None:
    dev = SHARED_DATA / "sst_ptb" / "trees" / "dev.txt"
    if not dev.is_file():
        pytest.skip(f"shared SST data not present at {dev}")
    binary = read_sst(dev)
    assert len(binary) == 872
    assert (binary["label"] == 0).sum() == 428 and (binary["label"] == 1).sum() == 444
    fine = read_sst(dev, fine_grained=True)
    assert len(fine) == 1101
    assert sum(len(w) for w in fine["gold_words"]) == 21274
    assert not fine["text"].str.contains("-LRB-|-RRB-|\\\\/", regex=True).any()


def test_read_sst_word_scores_follow_whitespace_words(tmp_path: Path) -> None:
    # A leaf with a non-breaking space is one SST token but two whitespace words of the text.
    frame = read_sst(_write(tmp_path, ["(3 (4 8\xa01\\/2) (2 film))"]), fine_grained=True)
    assert frame["text"].iloc[0] == "8\xa01/2 film"
    assert frame["gold_word_scores"].iloc[0] == [1.0, 1.0, 0.0]
    assert len(frame["text"].iloc[0].split()) == 3
