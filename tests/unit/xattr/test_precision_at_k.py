"""Precision@k on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from xattr.metrics import corpus_precision_at_k, gold_token_mask, precision_at_k


def test_hand_computed_top_three() -> None:
    scores = np.array([0.9, 0.1, 0.8, 0.7, 0.2, 0.6])
    gold = np.array([False, False, True, False, True, True])
    # top 3 by score: positions 0, 2, 3 -> one gold token (2) of an answer of three.
    p = precision_at_k(scores, gold, k=3)
    assert (p.value, p.hits, p.denominator, p.ranked) == (pytest.approx(1 / 3), 1, 3, True)
    # top 4: 0, 2, 3, 5 -> two hits; answer normalisation divides by min(4, 3) = 3, k by 4.
    assert precision_at_k(scores, gold, k=4).value == pytest.approx(2 / 3)
    assert precision_at_k(scores, gold, k=4, normalise="k").value == pytest.approx(2 / 4)


def test_candidates_leave_out_special_tokens() -> None:
    scores = np.array([5.0, 0.3, 0.2, 0.9, 4.0])
    gold = np.array([False, False, True, True, False])
    candidates = np.array([False, True, True, True, False])  # [CLS] and [SEP] are not ranked
    # Without the candidates the specials take the top 2; with them the top 2 are 3 and 1.
    assert precision_at_k(scores, gold, k=2).value == 0.0
    assert precision_at_k(scores, gold, k=2, candidates=candidates).value == pytest.approx(1 / 2)


def test_fewer_tokens_than_k_and_ties() -> None:
    gold = np.array([False, True, False])
    p = precision_at_k(np.array([0.0, 0.0, 0.0]), gold, k=20)
    assert (p.value, p.ranked) == (1.0, False)
    assert precision_at_k(np.array([0.0, 0.0, 0.0]), gold, k=20, normalise="k").value == pytest.approx(1 / 3)
    # Ties go to the earlier token: with k=1 position 0 wins, so no hit.
    assert precision_at_k(np.array([1.0, 1.0, 0.0]), gold, k=1).value == 0.0


def test_corpus_pooling_and_bad_input() -> None:
    a = precision_at_k(np.array([1.0, 0.0, 0.5]), np.array([True, False, True]), k=1)  # 1 hit / 1
    b = precision_at_k(np.array([0.0, 1.0, 0.5, 0.2]), np.array([True, False, True, True]), k=2)  # 1 hit / 2
    assert corpus_precision_at_k([a, b]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="no token among the candidates"):
        precision_at_k(np.array([1.0, 2.0]), np.array([False, False]))
    with pytest.raises(ValueError, match="one length"):
        precision_at_k(np.array([1.0, 2.0]), np.array([True]))
    with pytest.raises(ValueError, match="NaN"):
        precision_at_k(np.array([np.nan, 2.0]), np.array([True, False]))


def test_gold_token_mask_from_character_spans() -> None:
    # [CLS] who ? [SEP] red ##dish car [SEP]; context "reddish car": "red"=(0,3) "##dish"=(3,7) "car"=(8,11)
    offsets = [(0, 0), (0, 3), (4, 5), (0, 0), (0, 3), (3, 7), (8, 11), (0, 0)]
    segments = [-1, 0, 0, -1, 1, 1, 1, -1]
    mask = gold_token_mask(offsets, segments, [(0, 7)])
    assert mask.tolist() == [False, False, False, False, True, True, False, False]
    assert gold_token_mask(offsets, segments, [(8, 11), (4, 6)]).tolist() == [False] * 5 + [True, True, False]
    with pytest.raises(ValueError, match="covers no token"):
        gold_token_mask(offsets, segments, [(20, 24)])
