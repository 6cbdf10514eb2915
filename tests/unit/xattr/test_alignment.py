from __future__ import annotations

from xattr.models.alignment import align_tokens_to_words, word_spans
from xattr.models.encoding import encode_texts


def test_word_spans_are_whitespace_words() -> None:
    assert word_spans("  16GB RAM,  i7-1165G7 ") == [(2, 6), (7, 11), (13, 22)]


def test_pieces_map_to_their_word_and_specials_to_minus_one() -> None:
    offsets = [(0, 0), (0, 2), (2, 4), (5, 8), (0, 0), (0, 3), (0, 0)]
    seq = [None, 0, 0, 0, None, 1, None]
    spans = [word_spans("16gb ram"), word_spans("new")]
    assert align_tokens_to_words(offsets, seq, spans) == [-1, 0, 0, 1, -1, 2, -1]


def test_encode_texts_aligns_real_tokenizer_output(tiny_tokenizer) -> None:
    (enc,) = encode_texts(tiny_tokenizer, ["The laptop 16GB RAM, great!"], max_length=64)
    tokens = tiny_tokenizer.convert_ids_to_tokens(enc.input_ids)
    assert tokens == ["[CLS]", "the", "laptop", "16", "##gb", "ram", ",", "great", "!", "[SEP]"]
    assert enc.word_index == (-1, 0, 1, 2, 2, 3, 3, 4, 4, -1)
    assert enc.special == (True,) + (False,) * 8 + (True,)
    assert not enc.truncated


def test_pairs_number_second_segment_words_after_the_first(tiny_tokenizer) -> None:
    (enc,) = encode_texts(tiny_tokenizer, ["bad movie"], ["not good"], max_length=64)
    assert tiny_tokenizer.convert_ids_to_tokens(enc.input_ids) == [
        "[CLS]",
        "bad",
        "movie",
        "[SEP]",
        "not",
        "good",
        "[SEP]",
    ]
    assert enc.word_index == (-1, 0, 1, -1, 2, 3, -1)
    assert enc.segments == (-1, 0, 0, -1, 1, 1, -1)
    assert enc.token_type_ids == (0, 0, 0, 0, 1, 1, 1)


def test_truncation_is_flagged_and_keeps_the_final_separator(tiny_tokenizer) -> None:
    long, short = encode_texts(tiny_tokenizer, ["the movie was very very good and fun", "bad"], max_length=5)
    assert long.truncated and not short.truncated
    assert len(long) == 5
    assert tiny_tokenizer.convert_ids_to_tokens(long.input_ids) == ["[CLS]", "the", "movie", "was", "[SEP]"]
