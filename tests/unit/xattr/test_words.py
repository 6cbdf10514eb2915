from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from xattr.reporting.words import (
    add_share_totals,
    normalise_word,
    top_word_lists,
    top_words,
    word_scores,
    word_share_totals,
    word_sums,
)


def _attributions(rows: list[tuple[str, int, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "doc_id": [r[0] for r in rows],
            "method": "m",
            "target": 0,
            "word_index": [r[1] for r in rows],
            "score": [r[2] for r in rows],
        }
    )


def test_pieces_sum_into_normalised_words_and_specials_drop() -> None:
    corpus = pd.DataFrame({"doc_id": ["a"], "text": ["Intel i7, 16GB RAM"], "text_pair": [None]})
    # [CLS] intel i7 , 16 ##gb ram [SEP]
    attributions = _attributions(
        [
            ("a", -1, 9.0),
            ("a", 0, 1.0),
            ("a", 1, 2.0),
            ("a", 1, 0.5),
            ("a", 2, 1.0),
            ("a", 2, 3.0),
            ("a", 3, 4.0),
            ("a", -1, 9.0),
        ]
    )
    scores = word_scores(attributions, corpus)
    assert scores[["word", "score"]].values.tolist() == [["intel", 1.0], ["i7", 2.5], ["16gb", 4.0], ["ram", 4.0]]


def test_pair_words_are_numbered_after_the_first_text() -> None:
    corpus = pd.DataFrame({"doc_id": ["a"], "text": ["good film"], "text_pair": ["Not bad!"]})
    scores = word_scores(_attributions([("a", 2, 1.0), ("a", 3, -2.0)]), corpus)
    assert scores["word"].tolist() == ["not", "bad"]


def test_top_words_rank_by_mean_share_with_min_count() -> None:
    scores = pd.DataFrame(
        {
            "doc_id": ["a", "a", "b", "b", "c"],
            "target": 0,
            "word": ["i9", "the", "i9", "used", "rare"],
            "score": [3.0, 1.0, 1.0, -3.0, 5.0],
        }
    )
    unsigned = top_words(scores, k=5, min_count=2)
    assert unsigned["word"].tolist() == ["i9"]
    assert unsigned["mean_share"].tolist() == pytest.approx([(0.75 + 0.25) / 2])
    signed = top_words(scores, k=5, min_count=1, signed=True)
    assert signed["word"].tolist() == ["rare", "i9", "the", "used"]
    assert signed["mean_share"].tolist() == pytest.approx([1.0, 0.5, 0.25, -0.75])


def test_normalise_word() -> None:
    assert normalise_word("RAM,") == "ram"
    assert normalise_word("(i7-1165G7)") == "i7-1165g7"
    assert normalise_word("...") == ""


def test_top_word_lists_add_signed_rankings_for_signed_methods() -> None:
    # Shares: a: good +0.75, bad -0.25; b: good +0.25, bad -0.75.
    scores = pd.DataFrame(
        {
            "doc_id": ["a", "a", "b", "b"],
            "target": 0,
            "word": ["good", "bad", "good", "bad"],
            "score": [3.0, -1.0, 1.0, -3.0],
        }
    )
    signed = top_word_lists(scores, signed=True, min_count=2)
    assert [(w["word"], w["mean_share"], w["texts"]) for w in signed["top"]] == [("bad", 0.5, 2), ("good", 0.5, 2)]
    assert [(w["word"], w["mean_share"]) for w in signed["positive"]] == [("good", 0.5), ("bad", -0.5)]
    assert [(w["word"], w["mean_share"]) for w in signed["negative"]] == [("bad", 0.5), ("good", -0.5)]
    unsigned = top_word_lists(scores, signed=False, k=1, min_count=2)
    assert unsigned == {"top": [{"word": "bad", "mean_share": 0.5, "texts": 2}]}
    assert top_word_lists(scores, signed=False, min_count=3) == {"top": []}


def test_word_sums_equal_grouping_on_the_columns_themselves() -> None:
    """Integer-coded keys: the same groups, order, dtypes and sums as a plain groupby on the columns."""
    rng = np.random.default_rng(1)
    n = 3000
    pieces = pd.DataFrame(
        {
            "doc_id": pd.array([f"d{i}" for i in rng.integers(0, 200, n)], dtype="string[pyarrow]"),
            "method": rng.choice(["ig", "lafa"], n),
            "target": rng.integers(0, 2, n),
            "word_index": rng.integers(-1, 12, n),
            "score": rng.normal(size=n),
            "token_index": np.arange(n),
        }
    )
    keys = ["doc_id", "method", "target", "word_index"]
    reference = pieces[pieces["word_index"] >= 0].groupby(keys, as_index=False, sort=False)["score"].sum()
    pd.testing.assert_frame_equal(word_sums(pieces), reference, check_exact=True)


def test_share_totals_of_shards_add_up_to_the_corpus_ranking() -> None:
    """Top words from per-shard totals (documents split in two) equal those of every document at once."""
    rng = np.random.default_rng(3)
    vocabulary = ["good", "bad", "plot", "film", "dull", "fun"]
    rows = [
        (f"d{d}", 0, vocabulary[int(rng.integers(0, 6))], float(rng.normal()))
        for d in range(60)
        for _ in range(int(rng.integers(1, 8)))
    ]
    scores = pd.DataFrame(rows, columns=["doc_id", "target", "word", "score"])
    first = scores["doc_id"].isin([f"d{d}" for d in range(25)])
    totals = add_share_totals([word_share_totals(scores[first]), word_share_totals(scores[~first])])
    for signed in (False, True):
        whole = top_word_lists(scores, signed=signed, k=6, min_count=3)
        shards = top_word_lists(signed=signed, k=6, min_count=3, totals=totals)
        assert whole.keys() == shards.keys()
        for key in whole:
            assert [(w["word"], w["texts"]) for w in whole[key]] == [(w["word"], w["texts"]) for w in shards[key]]
            assert [w["mean_share"] for w in shards[key]] == pytest.approx(
                [w["mean_share"] for w in whole[key]], rel=1e-14
            )
    # The reference: word "good"'s mean share by hand (per text: |score| / sum of |scores|, summed per text).
    share = scores.assign(
        share=scores["score"].abs() / scores.groupby("doc_id")["score"].transform(lambda s: s.abs().sum())
    )
    per_text = share[share["word"] == "good"].groupby("doc_id")["share"].sum()
    row = totals[totals["word"] == "good"].iloc[0]
    assert row["share"] / row["texts"] == pytest.approx(per_text.mean(), rel=1e-12) and row["texts"] == len(per_text)


def _reference_word_table(attributions: pd.DataFrame, corpus: pd.DataFrame) -> pd.DataFrame:
    """A second implementation of ``word_table``: one Python lookup per word (the code before the arrays)."""
    from xattr.models.alignment import word_spans

    summed = word_sums(attributions)
    spans = {}
    for doc_id, text, pair in zip(corpus["doc_id"], corpus["text"], corpus["text_pair"], strict=True):
        segments = [text] + ([pair] if isinstance(pair, str) else [])
        spans[doc_id] = [(k, s, e, seg[s:e]) for k, seg in enumerate(segments) for s, e in word_spans(seg)]
    located = [spans[d][w] for d, w in zip(summed["doc_id"], summed["word_index"], strict=True)]
    for at, (name, values) in enumerate(
        [
            ("segment", [x[0] for x in located]),
            ("char_start", [x[1] for x in located]),
            ("char_end", [x[2] for x in located]),
            ("surface", [x[3] for x in located]),
            ("word", [normalise_word(x[3]) for x in located]),
        ]
    ):
        summed.insert(4 + at, name, values)
    return summed


def test_word_table_equals_a_per_word_lookup_on_mixed_texts() -> None:
    from xattr.reporting.words import corpus_words, word_table

    rng = np.random.default_rng(3)
    vocabulary = ["Good", "film,", "“Great”", "RAM", "...", "i7", "naïve", "x", "(ok)", "16GB"]
    texts = [" ".join(rng.choice(vocabulary, size=rng.integers(1, 9))) for _ in range(60)]
    pairs = [None if i % 3 else " ".join(rng.choice(vocabulary, size=3)) for i in range(60)]
    corpus = pd.DataFrame({"doc_id": [f"d{i}" for i in range(60)], "text": texts, "text_pair": pairs})
    rows = []
    for i in rng.permutation(60)[:45]:
        count = len(texts[i].split()) + (len(pairs[i].split()) if pairs[i] else 0)
        rows += [(f"d{i}", -1, 1.0)] + [(f"d{i}", int(w), float(rng.normal())) for w in rng.integers(0, count, 6)]
    attributions = _attributions(rows)
    expected = _reference_word_table(attributions, corpus)
    pd.testing.assert_frame_equal(word_table(attributions, corpus), expected)
    shared = corpus_words(corpus)
    pd.testing.assert_frame_equal(word_table(attributions, corpus, words=shared), expected)
    assert expected["segment"].max() == 1 and (expected["word"] == "").any()  # pair words and punctuation met


def test_word_table_names_a_document_or_word_it_cannot_place() -> None:
    from xattr.reporting.words import word_table

    corpus = pd.DataFrame({"doc_id": ["a"], "text": ["good film"], "text_pair": [None]})
    with pytest.raises(KeyError, match="b"):
        word_table(_attributions([("b", 0, 1.0)]), corpus)
    with pytest.raises(IndexError, match="word 2 of document 'a', which has 2 words"):
        word_table(_attributions([("a", 2, 1.0)]), corpus)
