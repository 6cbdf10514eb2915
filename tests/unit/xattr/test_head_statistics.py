"""Head statistics (Mask-LRP Eq. 6-8) on hand-built parses and hand-built attention maps."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import spacy
import torch
from spacy.tokens import Doc

from xattr.heads.masks import HeadMasks
from xattr.heads.parsing import core_arcs, token_pieces
from xattr.heads.plot import head_mask_codes, head_masks_png
from xattr.heads.statistics import HeadStatisticsError, mine_head_statistics
from xattr.heads.table import masks_from_table, statistics_table
from xattr.models.encoding import encode_texts
from xattr.models.loading import from_modules

VOCAB = spacy.blank("en").vocab
TEXT_1 = "the film was really good"
TEXT_2 = "movies love faster laptops"


def doc_1() -> Doc:
    # nsubj film -> was, advmod really -> good.
    return Doc(
        VOCAB,
        words=["the", "film", "was", "really", "good"],
        heads=[1, 2, 2, 4, 2],
        deps=["det", "nsubj", "ROOT", "advmod", "acomp"],
    )


def doc_2() -> Doc:
    # nsubj movies -> love, amod faster -> laptops, dobj laptops -> love (multi-piece words).
    return Doc(
        VOCAB,
        words=["movies", "love", "faster", "laptops"],
        heads=[1, 1, 3, 1],
        deps=["nsubj", "ROOT", "amod", "dobj"],
    )


class FakeParser:
    """Returns hand-built parses for known texts (spaCy's ``pipe`` interface)."""

    def __init__(self, docs: dict[str, Doc]) -> None:
        self.docs = docs
        self.seen: list[str] = []

    def pipe(self, texts, *, batch_size: int = 64):
        for text in texts:
            self.seen.append(text)
            yield self.docs[text]


def maps_for(n: int, arcs: dict[int, int], layer1_head0_special: bool = True) -> torch.Tensor:
    """Hand-built ``(layers=2, heads=2, n, n)`` attention for a text of ``n`` pieces ([CLS] ... [SEP]).

    L0H0: each query to its right neighbour (left neighbour for the last word piece).
    L0H1 and L1H1: a dependent to its syntactic head's given piece, other queries to themselves.
    L1H0: 0.9 on [SEP], then the left neighbour (right neighbour for the first word piece).
    """
    att = torch.zeros(2, 2, n, n, dtype=torch.float64)
    last = n - 2
    for i in range(n):
        right = i + 1 if i + 1 <= last else i - 1
        att[0, 0, i, right] = 1.0
        target = arcs.get(i, i)
        att[0, 1, i, target] = 1.0
        att[1, 1, i, target] = 1.0
        left = i - 1 if i - 1 >= 1 else i + 1
        att[1, 0, i, n - 1] = 0.9
        att[1, 0, i, left] = 0.1 if layer1_head0_special else 1.0
    return att


class FakeAttentionModel(torch.nn.Module):
    """Returns the hand-built maps of each row (identified by its length) as attention weights."""

    def __init__(self, maps: dict[int, torch.Tensor], implementation: str = "eager", attentions: bool = True) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
        self.config = SimpleNamespace(
            num_hidden_layers=2,
            num_attention_heads=2,
            _attn_implementation=implementation,
            max_position_embeddings=64,
            num_labels=2,
            problem_type=None,
            id2label={0: "a", 1: "b"},
        )
        self.maps = maps
        self.attentions = attentions
        self.batches: list[int] = []

    def forward(self, input_ids, attention_mask, token_type_ids, output_attentions=False):
        lengths = attention_mask.sum(dim=1).tolist()
        seq = input_ids.shape[1]
        self.batches.append(len(lengths))
        out = torch.zeros(2, len(lengths), 2, seq, seq, dtype=torch.float64)
        if not self.attentions:
            return SimpleNamespace(attentions=None, logits=torch.zeros(len(lengths), 2))
        for row, n in enumerate(lengths):
            out[:, row, :, :n, :n] = self.maps[int(n)]
        attentions = tuple(out[layer] for layer in range(2))
        return SimpleNamespace(attentions=attentions, logits=torch.zeros(len(lengths), 2))


@pytest.fixture
def toy(tiny_tokenizer):
    # Pieces: [CLS] the film was really good [SEP]              (7)
    #         [CLS] movie ##s love fast ##er laptop ##s [SEP]   (9)
    maps = {7: maps_for(7, {2: 3, 4: 5}), 9: maps_for(9, {1: 3, 4: 7, 6: 3})}
    model = FakeAttentionModel(maps)
    loaded = from_modules(model, tiny_tokenizer, task="classification")
    parser = FakeParser({TEXT_1: doc_1(), TEXT_2: doc_2()})
    return loaded, parser


def test_core_arcs_align_multi_piece_words(tiny_tokenizer) -> None:
    (enc,) = encode_texts(tiny_tokenizer, [TEXT_2], max_length=64)
    assert tiny_tokenizer.convert_ids_to_tokens(enc.input_ids) == [
        "[CLS]", "movie", "##s", "love", "fast", "##er", "laptop", "##s", "[SEP]",
    ]  # fmt: skip
    arcs = core_arcs(doc_2(), enc, 0)
    # (relation index in nsubj, dobj, amod, advmod; dependent's first piece; head's pieces)
    assert [(a.relation, a.dependent, a.head_start, a.head_end) for a in arcs] == [
        (0, 1, 3, 4),
        (2, 4, 6, 8),
        (1, 6, 3, 4),
    ]


def test_token_pieces_when_parser_and_tokenizer_split_differently(tiny_tokenizer) -> None:
    # Tokenizer: [CLS] ram 16 ##gb [SEP]; parser tokens "ram", "16", "gb", and one token "ram 16gb".
    (enc,) = encode_texts(tiny_tokenizer, ["ram 16gb"], max_length=64)
    assert token_pieces(enc, 0, [(0, 3), (4, 6), (6, 8)]) == [(1, 2), (2, 3), (3, 4)]
    assert token_pieces(enc, 0, [(0, 8)]) == [(1, 4)]
    # A token of the pair segment does not take pieces of the first one.
    assert token_pieces(enc, 1, [(0, 3)]) == [(0, 0)]


def test_token_pieces_of_truncated_words_are_empty(tiny_tokenizer) -> None:
    (enc,) = encode_texts(tiny_tokenizer, [TEXT_1], max_length=4)  # [CLS] the film [SEP]
    assert token_pieces(enc, 0, [(0, 3), (4, 8), (9, 12)]) == [(1, 2), (2, 3), (0, 0)]
    assert core_arcs(doc_1(), enc, 0) == []  # film -> was: the head was cut off


def test_hand_computed_alpha_lambda_positions_and_masks(toy) -> None:
    loaded, parser = toy
    stats = mine_head_statistics(loaded, [TEXT_1, TEXT_2], parser=parser, window=3, batch_size=2)
    assert stats.relations == ("nsubj", "dobj", "amod", "advmod")
    assert stats.offsets == (-3, -2, -1, 1, 2, 3)
    assert stats.relation_arcs.tolist() == [2, 1, 1, 1]
    assert stats.queries == 12 and stats.texts == 2
    # Offsets dependent -> head pieces: nsubj +1 and +2; dobj -3; amod +2 and +3 (two-piece head); advmod +1.
    assert [dict(c) for c in stats.relation_offsets] == [{1: 1, 2: 1}, {-3: 1}, {2: 1, 3: 1}, {1: 1}]
    np.testing.assert_array_equal(stats.baseline(), [0.5, 1.0, 1.0, 1.0])
    alpha = stats.alpha()
    np.testing.assert_array_equal(alpha[0, 0], [0.5, 0.0, 0.0, 1.0])  # positional head hits nsubj/advmod at +1
    np.testing.assert_array_equal(alpha[0, 1], [1.0, 1.0, 1.0, 1.0])
    np.testing.assert_array_equal(alpha[1, 0], [0.0, 0.0, 0.0, 0.0])
    np.testing.assert_array_equal(alpha[1, 1], [1.0, 1.0, 1.0, 1.0])
    positions = stats.position_frequency()
    # L0H0: +1 for 4 of 5 and 6 of 7 queries, -1 for the last piece of each text.
    np.testing.assert_allclose(positions[0, 0], [0, 0, 2 / 12, 10 / 12, 0, 0])
    # L0H1: +1 twice (text 1), +2, +3, -3 (text 2); the other queries attend to themselves (offset 0).
    np.testing.assert_allclose(positions[0, 1], [1 / 12, 0, 0, 2 / 12, 1 / 12, 1 / 12])
    # L1H0: [SEP] is excluded as a key, so the left neighbour wins (right for the first piece).
    np.testing.assert_allclose(positions[1, 0], [0, 0, 10 / 12, 2 / 12, 0, 0])
    masks = stats.masks(0.1, 0.8)
    np.testing.assert_array_equal(masks.syntactic, [[False, True], [False, True]])
    np.testing.assert_array_equal(masks.positional, [[True, False], [True, False]])
    np.testing.assert_array_equal(masks.union, [[True, True], [True, True]])
    # Eq. 7 is strict: a margin of exactly xi is not enough; nsubj's margin on L0H1 is 0.5.
    assert not stats.masks(0.5, 0.8).syntactic.any()
    assert stats.masks(0.49, 0.8).syntactic.sum() == 2
    assert not stats.masks(0.1, 10 / 12).positional.any()
    assert parser.seen == [TEXT_1, TEXT_2]


def test_special_keys_can_be_kept(toy) -> None:
    loaded, parser = toy
    stats = mine_head_statistics(loaded, [TEXT_1, TEXT_2], parser=parser, ignore_special_keys=False)
    # L1H0 now always lands on [SEP] (offsets +5..+1 and +7..+1): +1, +2, +3 once per text in the window.
    np.testing.assert_allclose(stats.position_frequency()[1, 0], [0, 0, 0, 2 / 12, 2 / 12, 2 / 12])
    assert not stats.masks().positional[1, 0]


def test_batched_equals_one_by_one_with_padding(toy) -> None:
    loaded, parser = toy
    texts = [TEXT_2, TEXT_1, TEXT_1, TEXT_2, TEXT_1]
    batched = mine_head_statistics(loaded, texts, parser=parser, batch_size=4)
    assert max(loaded.model.batches[-2:]) == 4
    single = [mine_head_statistics(loaded, [t], parser=parser, batch_size=1) for t in texts]
    np.testing.assert_array_equal(batched.relation_hits, sum(s.relation_hits for s in single))
    np.testing.assert_array_equal(batched.position_hits, sum(s.position_hits for s in single))
    assert batched.queries == sum(s.queries for s in single)


def test_table_round_trip_and_recomputed_thresholds(toy) -> None:
    loaded, parser = toy
    stats = mine_head_statistics(loaded, [TEXT_1, TEXT_2], parser=parser)
    table = statistics_table(stats, 0.1, 0.8)
    frame = table.to_pandas()
    assert sorted(frame["kind"].unique()) == ["mask", "offset", "position", "relation"]
    row = frame[(frame.kind == "relation") & (frame.layer == 0) & (frame["head"] == 0) & (frame.key == "nsubj")]
    assert row[["frequency", "baseline", "count"]].values.tolist() == [[0.5, 0.5, 2]]
    amod = frame[(frame.kind == "offset") & (frame.key.str.startswith("amod:"))]
    assert amod[["key", "frequency", "count"]].values.tolist() == [["amod:+2", 1.0, 1], ["amod:+3", 1.0, 1]]
    stored = masks_from_table(table)
    expected = stats.masks(0.1, 0.8)
    np.testing.assert_array_equal(stored.syntactic, expected.syntactic)
    np.testing.assert_array_equal(stored.positional, expected.positional)
    strict = masks_from_table(table, xi_synt=0.5, xi_pos=0.9)
    assert not strict.syntactic.any() and not strict.positional.any()
    np.testing.assert_array_equal(masks_from_table(table, xi_synt=0.49).syntactic, stats.masks(0.49).syntactic)


def test_heatmap_png_and_codes() -> None:
    masks = HeadMasks(np.array([[True, False, True]]), np.array([[True, True, False]]))
    assert head_mask_codes(masks).tolist() == [[3, 1, 2]]
    png = head_masks_png(masks, title="toy")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert width >= 300 and height >= 200


def test_blank_corpus_is_refused(toy) -> None:
    loaded, parser = toy
    with pytest.raises(HeadStatisticsError, match="none of the 3 texts has anything to parse"):
        mine_head_statistics(loaded, ["", "  ", "\n"], parser=parser)


def test_corpus_without_core_arcs_is_refused(toy) -> None:
    loaded, _ = toy
    flat = Doc(VOCAB, words=["the", "film", "was"], heads=[1, 2, 2], deps=["det", "dep", "ROOT"])
    with pytest.raises(HeadStatisticsError, match=r"parsed 1 sentences and found no nsubj, dobj, amod, advmod"):
        mine_head_statistics(loaded, ["the film was"], parser=FakeParser({"the film was": flat}))


def test_model_without_attention_weights_is_refused(tiny_tokenizer) -> None:
    model = FakeAttentionModel({}, attentions=False)
    loaded = from_modules(model, tiny_tokenizer, task="classification")
    with pytest.raises(HeadStatisticsError, match='attn_implementation="eager"'):
        mine_head_statistics(loaded, [TEXT_1], parser=FakeParser({TEXT_1: doc_1()}))


def test_sdpa_model_that_cannot_switch_is_refused(tiny_tokenizer) -> None:
    model = FakeAttentionModel({}, implementation="sdpa")
    loaded = from_modules(model, tiny_tokenizer, task="classification")
    with pytest.raises(HeadStatisticsError, match="uses 'sdpa' attention.*attn_implementation=\"eager\""):
        mine_head_statistics(loaded, [TEXT_1], parser=FakeParser({TEXT_1: doc_1()}))


def test_sdpa_bert_is_switched_to_eager_and_restored(tiny_tokenizer) -> None:
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tiny_tokenizer), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=64, attn_implementation="sdpa",
    )  # fmt: skip
    model = BertForSequenceClassification(config).double().eval()
    loaded = from_modules(model, tiny_tokenizer, task="classification")
    stats = mine_head_statistics(loaded, [TEXT_1, TEXT_2], parser=FakeParser({TEXT_1: doc_1(), TEXT_2: doc_2()}))
    assert model.config._attn_implementation == "sdpa"
    assert stats.relation_arcs.sum() == 5 and stats.queries == 12
    # Reference: eager attention computed one text at a time, maxima counted by hand.
    model.set_attn_implementation("eager")
    hits = np.zeros((2, 2, 4), dtype=int)
    for text, doc in ((TEXT_1, doc_1()), (TEXT_2, doc_2())):
        (enc,) = encode_texts(tiny_tokenizer, [text], max_length=64)
        with torch.no_grad():
            att = model(input_ids=torch.tensor([enc.input_ids]), output_attentions=True).attentions
        n = len(enc)
        for arc in core_arcs(doc, enc, 0):
            for layer in range(2):
                for head in range(2):
                    row = att[layer][0, head, arc.dependent, 1 : n - 1]
                    top = int(torch.argmax(row)) + 1
                    hits[layer, head, arc.relation] += arc.head_start <= top < arc.head_end
    np.testing.assert_array_equal(stats.relation_hits, hits)
