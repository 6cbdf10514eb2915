"""lrp, partial_lrp, lrp_rollout and mask_lrp as registered methods; Mask-LRP's masks and ablations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xattr.heads.masks import HeadMaskError, HeadMasks
from xattr.lrp import (
    attention_gradients,
    gates_from_groups,
    head_groups,
    propagate_relevance,
    relevance_rollout,
)
from xattr.methods import MethodContext, attribute_corpus, get_method, method_requirements
from xattr.models.encoding import Batch, encode_texts
from xattr.models.loading import from_modules

METHODS = ["lrp", "partial_lrp", "lrp_rollout", "mask_lrp"]
TEXTS = ["the movie was great", "bad acting and a boring plot , not fun", "awful", "new laptop intel core i7 16gb ram"]


def _batch(inputs: dict[str, torch.Tensor]) -> Batch:
    ids = inputs["input_ids"]
    types = inputs.get("token_type_ids", torch.zeros_like(ids))
    return Batch(tuple(range(ids.shape[0])), ids, inputs["attention_mask"], types)


def _masks(layers: int, heads: int, synt: list[tuple[int, int]], pos: list[tuple[int, int]]) -> HeadMasks:
    s = np.zeros((layers, heads), dtype=bool)
    p = np.zeros((layers, heads), dtype=bool)
    for i, j in synt:
        s[i, j] = True
    for i, j in pos:
        p[i, j] = True
    return HeadMasks(s, p, source="test")


def _mask_lrp(masks: HeadMasks | None, loaded, batch: Batch, targets: torch.Tensor, **params) -> torch.Tensor:
    """Mask-LRP scores of one batch with ``masks`` in the method's context."""
    return get_method("mask_lrp", params).attribute_batch(loaded, batch, targets, MethodContext(head_masks=masks))


@pytest.mark.parametrize("kind", ["bert", "distilbert", "roberta"])
def test_mask_lrp_with_every_head_kept_equals_lrp_rollout_exactly(kind, make_encoder, make_inputs) -> None:
    model = make_encoder(kind)
    loaded = from_modules(model, tokenizer=None)
    batch = _batch(make_inputs(kind, [6, 4]))
    targets = torch.tensor([1, 0])
    reference = get_method("lrp_rollout").attribute_batch(loaded, batch, targets, MethodContext())
    ones, zeros = np.ones((2, 4), dtype=bool), np.zeros((2, 4), dtype=bool)
    for masks, params in [
        (HeadMasks(ones, zeros), {}),
        (HeadMasks(ones, ones), {}),
        (HeadMasks(zeros, ones), {"mask": "positional"}),
        (None, {"mask": "all"}),
        (HeadMasks(zeros, zeros), {"corruption": 1.0}),
    ]:
        ours = _mask_lrp(masks, loaded, batch, targets, **params)
        assert torch.equal(ours, reference), params
    # and lrp_rollout is the rollout of the engine's gradients and relevances (Eq. 10-11)
    inputs = make_inputs(kind, [6, 4])
    relevance = propagate_relevance(model, inputs, targets, attention_relevance=True)
    expected = relevance_rollout(attention_gradients(model, inputs, targets), relevance.attention)
    assert torch.equal(reference, expected)


def test_an_all_zero_layer_passes_no_relevance_through_its_heads(make_encoder, make_inputs, without_biases) -> None:
    model = without_biases(make_encoder("bert"))
    inputs = make_inputs("bert", [7, 5])
    targets = torch.tensor([0, 1])
    groups = np.zeros((2, 4), dtype=np.int64)
    groups[0] = -1  # layer 0 keeps no head
    gates = gates_from_groups(groups)
    masked = propagate_relevance(model, inputs, targets, gates=gates, attention_relevance=True, head_relevance=True)
    full = propagate_relevance(model, inputs, targets, attention_relevance=True, head_relevance=True)
    before, after = masked.head_relevance[0]
    assert torch.count_nonzero(after) == 0
    assert torch.count_nonzero(masked.attention[0]) == 0
    assert before.abs().min() > 0
    # the top layer is untouched, and the input lost exactly what layer 0's heads carried
    np.testing.assert_array_equal(masked.attention[1].numpy(), full.attention[1].numpy())
    lost = full.head_relevance[0][0].sum(1)
    np.testing.assert_allclose(masked.input.sum((1, 2)).numpy(), (full.input.sum((1, 2)) - lost).numpy(), atol=1e-9)
    assert lost.abs().min() > 1e-3
    # and the rollout of Mask-LRP then has nothing from layer 0: (I + Abar^(2)) only
    loaded = from_modules(model, tokenizer=None)
    scores = _mask_lrp(_masks(2, 4, [(1, 0), (1, 1), (1, 2), (1, 3)], []), loaded, _batch(inputs), targets)
    grads = attention_gradients(model, inputs, targets)
    abar = (grads[1] * masked.attention[1]).clamp(min=0).mean(1)
    expected = (torch.eye(7).double() + abar)[:, 0, :]
    np.testing.assert_allclose(scores.numpy(), expected.numpy(), rtol=1e-12, atol=1e-15)


def test_section_4_3_normalisation_restores_conservation(make_encoder, make_inputs, without_biases) -> None:
    """Kept heads carry what all heads carried: input relevance sums to 1 again (one group, biases zero)."""
    model = without_biases(make_encoder("bert"))
    inputs = make_inputs("bert", [7, 6])
    targets = torch.tensor([2, 1])
    groups = np.array([[0, -1, 0, -1], [-1, 0, -1, -1]])
    relevance = propagate_relevance(
        model, inputs, targets, gates=gates_from_groups(groups), layer_outputs=True, head_relevance=True
    )
    for layer, (before, after) in enumerate(relevance.head_relevance):
        np.testing.assert_allclose(after.sum(1).numpy(), before.sum(1).numpy(), rtol=1e-10)
        assert torch.count_nonzero(after[:, groups[layer] < 0]) == 0
    np.testing.assert_allclose(relevance.input.sum((1, 2)).numpy(), np.ones(2), atol=1e-6)
    # two groups (syntactic, positional): each is rescaled by |S_k| / sum|S_k'| * S / S_k
    two = np.array([[0, 1, -1, 1], [1, -1, 0, 0]])
    relevance = propagate_relevance(model, inputs, targets, gates=gates_from_groups(two), head_relevance=True)
    for layer, (before, after) in enumerate(relevance.head_relevance):
        b = before.numpy()
        total = b.sum(1)
        sums = np.stack([b[:, two[layer] == k].sum(1) for k in (0, 1)], 1)
        den = np.abs(sums).sum(1, keepdims=True)
        factor = np.abs(sums) / den * total[:, None] / sums
        expected = np.where(two[layer] >= 0, b * factor[:, np.clip(two[layer], 0, None)], 0.0)
        np.testing.assert_allclose(after.numpy(), expected, rtol=1e-10, atol=1e-15)


def test_mask_choices_and_ablations_build_the_documented_head_sets() -> None:
    masks = _masks(3, 4, synt=[(0, 1), (2, 3), (1, 1)], pos=[(0, 1), (0, 2), (1, 0)])
    union = head_groups(masks, (3, 4))
    np.testing.assert_array_equal(union >= 0, masks.union)
    assert union[0, 1] == 0 and union[2, 3] == 0 and union[0, 2] == 1 and union[1, 0] == 1
    np.testing.assert_array_equal(head_groups(masks, (3, 4), mask="syntactic") >= 0, masks.syntactic)
    np.testing.assert_array_equal(head_groups(masks, (3, 4), mask="positional") >= 0, masks.positional)
    assert (head_groups(masks, (3, 4), mask="all") == 0).all()
    random = head_groups(masks, (3, 4), mask="random", seed=7)
    assert (random >= 0).sum() == masks.union.sum()
    np.testing.assert_array_equal(random, head_groups(masks, (3, 4), mask="random", seed=7))
    assert not np.array_equal(random, head_groups(masks, (3, 4), mask="random", seed=8))
    # corruption switches on round(rate x dropped) dropped heads, as their own group
    corrupted = head_groups(masks, (3, 4), corruption=0.5, seed=1)
    assert (corrupted >= 0).sum() == 5 + round(0.5 * 7)
    np.testing.assert_array_equal(corrupted[masks.union], union[masks.union])
    assert set(np.unique(corrupted[~masks.union])) == {-1, 2}
    assert (head_groups(masks, (3, 4), corruption=1.0) >= 0).all()
    np.testing.assert_array_equal(corrupted, head_groups(masks, (3, 4), corruption=0.5, seed=1))


def test_bad_masks_and_parameters_are_refused(make_encoder, make_inputs) -> None:
    loaded = from_modules(make_encoder("bert"), tokenizer=None)
    batch = _batch(make_inputs("bert", [4]))
    with pytest.raises(HeadMaskError, match=r"\(6, 12\).*2 layers x 4 heads"):
        _mask_lrp(
            HeadMasks(np.ones((6, 12), bool), np.zeros((6, 12), bool), source="minilm"),
            loaded,
            batch,
            torch.tensor([0]),
        )
    with pytest.raises(ValueError, match="needs head masks"):
        _mask_lrp(None, loaded, batch, torch.tensor([0]))
    with pytest.raises(ValueError, match="corruption"):
        get_method("mask_lrp", {"corruption": 1.5})
    with pytest.raises(ValueError, match="mask"):
        get_method("mask_lrp", {"mask": "heads"})
    # only Mask-LRP asks for head masks, and not when it keeps every head
    assert not method_requirements("lrp").head_masks and not method_requirements("lrp_rollout").head_masks
    assert (
        method_requirements("mask_lrp").head_masks and not method_requirements("mask_lrp", {"mask": "all"}).head_masks
    )


def test_partial_lrp_and_lrp_read_the_engine(make_encoder, make_inputs) -> None:
    model = make_encoder("roberta")
    loaded = from_modules(model, tokenizer=None)
    inputs = make_inputs("roberta", [6, 5])
    targets = torch.tensor([0, 2])
    relevance = propagate_relevance(model, inputs, targets, attention_relevance=True)
    partial = get_method("partial_lrp").attribute_batch(loaded, _batch(inputs), targets, MethodContext())
    np.testing.assert_array_equal(partial.numpy(), relevance.attention[-1].mean(1)[:, 0, :].numpy())
    full = get_method("lrp").attribute_batch(loaded, _batch(inputs), targets, MethodContext())
    np.testing.assert_array_equal(full.numpy(), relevance.input.sum(-1).numpy())


@pytest.mark.parametrize(
    ("method", "params"),
    [(m, {}) for m in METHODS]
    + [
        ("lrp", {"linear_rule": "positive"}),
        ("mask_lrp", {"linear_rule": "positive", "mask": "random", "corruption": 0.3}),
    ],
)
def test_corpus_run_batched_equals_one_by_one(method, params, amplified_classifier) -> None:
    loaded = amplified_classifier
    layers = loaded.num_layers
    heads = loaded.model.config.num_attention_heads
    masks = _masks(layers, heads, synt=[(0, 0), (1, 1)], pos=[(1, 0)])
    encoded = encode_texts(loaded.tokenizer, TEXTS, max_length=64)
    targets = [[0], [1], [1], [0]]

    def run(batch_size: int):
        context = MethodContext(head_masks=masks if method_requirements(method, params).head_masks else None)
        return attribute_corpus(
            get_method(method, params), loaded, encoded, targets, context=context, batch_size=batch_size
        )

    batched, alone = run(4), run(1)
    for a, b in zip(batched, alone, strict=True):
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-9, atol=1e-13)
        assert np.abs(a.scores).max() > 0
