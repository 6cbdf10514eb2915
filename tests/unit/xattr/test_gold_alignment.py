"""Gold spans to token masks, pieces to words, and AUC/Pearson against scipy on the aligned vectors."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import pearsonr

from xattr.metrics.gold_alignment import gold_agreement, token_gold_mask, word_gold_mask, word_scores
from xattr.models.encoding import encode_texts
from xattr.types import TokenAttribution


@pytest.fixture
def encoded(tiny_tokenizer):
    # [CLS] good love ##ly film was bad [SEP]
    (enc,) = encode_texts(tiny_tokenizer, ["good lovely film was bad"], max_length=64)
    assert tiny_tokenizer.convert_ids_to_tokens(enc.input_ids)[2:4] == ["love", "##ly"]
    return enc


def test_token_mask_marks_pieces_overlapping_a_span(encoded) -> None:
    positions, mask = token_gold_mask(encoded, [(0, 5, 11), (1, 0, 4)])  # "lovely"; a segment-1 span is ignored
    assert positions.tolist() == [1, 2, 3, 4, 5, 6]
    assert mask.tolist() == [0.0, 1.0, 1.0, 0.0, 0.0, 0.0]


def test_word_scores_sum_pieces(encoded) -> None:
    ids, summed = word_scores(encoded, np.array([9.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 9.0]), 5)
    assert ids.tolist() == [0, 1, 2, 3, 4] and summed.tolist() == [1.0, 5.0, 4.0, 5.0, 6.0]


def test_gold_agreement_against_independent_formulas(encoded) -> None:
    scores = np.array([9.0, 0.5, 2.0, 0.1, 0.3, 0.2, 1.0, 9.0])
    values, undefined = gold_agreement(
        [encoded],
        [TokenAttribution(0, 1, scores)],
        spans={0: [(0, 5, 11), (0, 21, 24)]},
        word_gold={0: [0.5, 1.0, 0.0, 0.0, 1.0]},
    )
    got = {v.metric: v.value for v in values}
    # Mask over pieces [good, love, ##ly, film, was, bad] = [0,1,1,0,0,1]; AUC = P(gold piece > other piece).
    gold = [2.0, 0.1, 1.0]
    other = [0.5, 0.3, 0.2]
    pairs = [(g > o) + 0.5 * (g == o) for g in gold for o in other]
    assert got["gold_auc"] == pytest.approx(sum(pairs) / len(pairs))
    words = [0.5, 2.1, 0.3, 0.2, 1.0]
    assert got["gold_pearson"] == pytest.approx(pearsonr(words, [0.5, 1.0, 0.0, 0.0, 1.0]).statistic)
    # Words [good, lovely, film, was, bad] sum to [0.5, 2.1, 0.3, 0.2, 1.0], gold [0, 1, 0, 0, 1]:
    # gold words 2.1 and 1.0 each outrank the three others -> word AUC 1.0 (piece AUC is below 1).
    assert got["gold_word_auc"] == 1.0 and got["gold_auc"] < 1.0
    assert undefined == {"gold_auc_undefined": 0, "gold_word_auc_undefined": 0, "gold_pearson_undefined": 0}


def test_gold_agreement_counts_undefined(encoded) -> None:
    values, undefined = gold_agreement(
        [encoded], [TokenAttribution(0, 1, np.arange(8.0))], spans={0: []}, word_gold={0: [1.0] * 5}
    )
    assert values == []
    assert undefined == {"gold_auc_undefined": 1, "gold_word_auc_undefined": 1, "gold_pearson_undefined": 1}


def test_gold_agreement_reports_only_the_gold_given(encoded) -> None:
    _, undefined = gold_agreement([encoded], [TokenAttribution(0, 1, np.arange(8.0))], word_gold={0: [1.0] * 5})
    assert undefined == {"gold_pearson_undefined": 1}


def test_word_mask_sums_pieces_and_marks_words_touching_a_span(encoded) -> None:
    scores = np.array([9.0, 0.5, 2.0, 0.1, 0.3, 0.2, 1.0, 9.0])
    summed, mask = word_gold_mask(encoded, scores, [(0, 5, 9)])  # "love" only: the whole word "lovely" is gold
    assert summed.tolist() == pytest.approx([0.5, 2.1, 0.3, 0.2, 1.0])
    assert mask.tolist() == [0.0, 1.0, 0.0, 0.0, 0.0]


def test_one_draw_per_word_random_is_at_chance_at_word_level_but_not_at_piece_level(tiny_tokenizer) -> None:
    """A per-word random score split over pieces scores multi-piece gold words low at piece level."""
    from sklearn.metrics import roc_auc_score

    (enc,) = encode_texts(tiny_tokenizer, ["lovely film lovely was lovely bad"], max_length=64)
    spans = [(0, 0, 6), (0, 12, 18), (0, 23, 29)]  # the three two-piece words "lovely"
    draws = np.array([0.5, 0.3, 0.55, 0.35, 0.6, 0.4])  # one score per word: gold words draw highest
    pieces = np.zeros(len(enc.input_ids))
    counts = np.bincount([w for w, sp in zip(enc.word_index, enc.special, strict=True) if not sp], minlength=6)
    for p, (w, sp) in enumerate(zip(enc.word_index, enc.special, strict=True)):
        if not sp:
            pieces[p] = draws[w] / counts[w]
    values, _ = gold_agreement([enc], [TokenAttribution(0, 1, pieces)], spans={0: spans})
    got = {v.metric: v.value for v in values}
    assert got["gold_word_auc"] == pytest.approx(roc_auc_score([1, 0, 1, 0, 1, 0], draws)) == 1.0
    positions, mask = token_gold_mask(enc, spans)
    piece_auc = roc_auc_score(mask, pieces[positions])
    assert got["gold_auc"] == pytest.approx(piece_auc)
    assert piece_auc < 0.5  # halved scores put the gold pieces below the one-piece words
