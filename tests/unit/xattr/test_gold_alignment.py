"""Gold spans to token masks, pieces to words, and AUC/Pearson against scipy on the aligned vectors."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import pearsonr

from xattr.methods.runner import TokenAttribution
from xattr.metrics.gold_alignment import gold_agreement, token_gold_mask, word_scores
from xattr.models.encoding import encode_texts


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
    assert undefined == {"gold_auc_undefined": 0, "gold_pearson_undefined": 0}


def test_gold_agreement_counts_undefined(encoded) -> None:
    values, undefined = gold_agreement(
        [encoded], [TokenAttribution(0, 1, np.arange(8.0))], spans={0: []}, word_gold={0: [1.0] * 5}
    )
    assert values == [] and undefined == {"gold_auc_undefined": 1, "gold_pearson_undefined": 1}


def test_gold_agreement_reports_only_the_gold_given(encoded) -> None:
    _, undefined = gold_agreement([encoded], [TokenAttribution(0, 1, np.arange(8.0))], word_gold={0: [1.0] * 5})
    assert undefined == {"gold_pearson_undefined": 1}
