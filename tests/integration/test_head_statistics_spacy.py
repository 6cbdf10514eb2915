"""Head statistics with the real spaCy parser on 20 sentences, against a one-text-at-a-time reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xattr.heads.parsing import CORE_RELATIONS, load_parser
from xattr.heads.statistics import mine_head_statistics
from xattr.models.encoding import encode_texts
from xattr.models.loading import load_model

pytestmark = pytest.mark.integration

SENTENCES = [
    "The old man bought a red car yesterday.",
    "She quickly read the long letter.",
    "Our team won the final game easily.",
    "The children love sweet cakes.",
    "He rarely visits his younger brother.",
    "This movie has a terrible plot.",
    "The cheap laptop broke after two weeks.",
    "They built a small house near the river.",
    "I really enjoyed the beautiful music.",
    "The new manager hired three engineers.",
    "My neighbour grows fresh tomatoes.",
    "The dog happily chased the white ball.",
    "Students often forget simple rules.",
    "The company released a faster processor.",
    "We finally found the hidden key.",
    "A strong wind destroyed the wooden bridge.",
    "The chef cooked a delicious meal.",
    "Critics strongly praised the brave film.",
    "Nobody answered the urgent call.",
    "The tired runner slowly crossed the line.",
]


def test_real_parser_statistics_equal_a_per_text_reference(tiny_classifier_dir) -> None:
    parser = load_parser()
    loaded = load_model(tiny_classifier_dir, device="cpu", dtype=torch.float64)
    stats = mine_head_statistics(loaded, SENTENCES, parser=parser, batch_size=6, window=2)
    assert all(stats.relation_arcs > 0), dict(zip(CORE_RELATIONS, stats.relation_arcs, strict=True))
    assert stats.texts == 20 and stats.parse_seconds > 0 and stats.model_seconds > 0

    # Reference: one text at a time, eager attention, pieces of a word found by character overlap.
    model = loaded.model
    model.set_attn_implementation("eager")
    hits = np.zeros_like(stats.relation_hits)
    arcs = np.zeros(len(CORE_RELATIONS), dtype=int)
    positions = np.zeros_like(stats.position_hits)
    queries = 0
    for text, doc in zip(SENTENCES, parser.pipe(SENTENCES), strict=True):
        (enc,) = encode_texts(loaded.tokenizer, [text], max_length=64)
        with torch.no_grad():
            att = torch.stack(model(input_ids=torch.tensor([enc.input_ids]), output_attentions=True).attentions)
        n = len(enc)
        top = att[:, 0, :, :, 1 : n - 1].argmax(dim=-1) + 1  # (layers, heads, n): best non-special key
        for i in range(1, n - 1):
            queries += 1
            for j, offset in enumerate(stats.offsets):
                positions[:, :, j] += (top[:, :, i] - i == offset).numpy()

        def pieces(token, enc=enc, n=n):
            return [p for p in range(1, n - 1) if token.idx <= enc.offsets[p][0] < token.idx + len(token)]

        for token in doc:
            if token.dep_ in CORE_RELATIONS and token.head.i != token.i:
                k = CORE_RELATIONS.index(token.dep_)
                arcs[k] += 1
                landed = top[:, :, pieces(token)[0]].numpy()
                hits[:, :, k] += np.isin(landed, pieces(token.head))
    np.testing.assert_array_equal(stats.relation_arcs, arcs)
    np.testing.assert_array_equal(stats.relation_hits, hits)
    np.testing.assert_array_equal(stats.position_hits, positions)
    assert stats.queries == queries
