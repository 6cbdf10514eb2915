"""Mask-LRP's issue-18 variants: the code's unmasked rollout, re-thresholded head masks, conservation shares."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xattr.heads.masks import HeadMaskError, HeadMasks
from xattr.heads.statistics import HeadStatistics
from xattr.heads.table import masks_from_table, statistics_table
from xattr.lrp import attention_gradients, gates_from_groups, propagate_relevance, rollout
from xattr.methods import MethodContext, get_method
from xattr.models.encoding import Batch
from xattr.models.loading import from_modules


def _batch(inputs: dict[str, torch.Tensor]) -> Batch:
    ids = inputs["input_ids"]
    return Batch(tuple(range(ids.shape[0])), ids, inputs["attention_mask"], inputs.get("token_type_ids"))


def _weights(gradients, relevances):
    return [(g * r).clamp(min=0).mean(1) for g, r in zip(gradients, relevances, strict=True)]


def test_unmasked_rollout_takes_r_of_a_before_the_gate(make_encoder, make_inputs) -> None:
    """The code's reading: R(A) of a layer is what an ungated layer would split from the relevance arriving there."""
    model = make_encoder("bert")
    loaded = from_modules(model, tokenizer=None)
    inputs = make_inputs("bert", [7, 5])
    targets = torch.tensor([1, 0])
    syntactic = np.array([[True, False, False, True], [False, True, False, False]])
    masks = HeadMasks(syntactic, np.zeros((2, 4), dtype=bool))
    context = MethodContext(head_masks=masks)
    ours = get_method("mask_lrp", {"rollout_relevance": "unmasked"}).attribute_batch(
        loaded, _batch(inputs), targets, context
    )
    grads = attention_gradients(model, inputs, targets)
    groups = np.where(syntactic, 0, -1)
    # Layer 1 (top): nothing above it is gated, so its R(A) is plain LRP's.
    full = propagate_relevance(model, inputs, targets, attention_relevance=True)
    # Layer 0: the relevance arriving is gated by layer 1; a layer-0 gate keeping every head splits it unchanged.
    top_gated = groups.copy()
    top_gated[0] = 0
    below = propagate_relevance(model, inputs, targets, gates=gates_from_groups(top_gated), attention_relevance=True)
    expected = rollout(_weights(grads, [below.attention[0], full.attention[1]]))
    np.testing.assert_allclose(ours.numpy(), expected.numpy(), rtol=1e-10, atol=1e-14)
    # the paper's reading differs: dropped heads carry no R(A)
    masked = propagate_relevance(model, inputs, targets, gates=gates_from_groups(groups), attention_relevance=True)
    paper = get_method("mask_lrp").attribute_batch(loaded, _batch(inputs), targets, context)
    np.testing.assert_allclose(paper.numpy(), rollout(_weights(grads, masked.attention)).numpy(), rtol=1e-10)
    assert not torch.allclose(paper, ours)
    assert torch.count_nonzero(masked.attention[0][:, ~syntactic[0]]) == 0


def test_unmasked_rollout_with_an_empty_bottom_layer_is_lrp_rollout(make_encoder, make_inputs) -> None:
    """Layer 1 keeps every head and layer 0 none: the unmasked rollout is exactly LRP-rollout, the masked one is not."""
    model = make_encoder("bert")
    loaded = from_modules(model, tokenizer=None)
    inputs = make_inputs("bert", [6, 4])
    targets = torch.tensor([0, 1])
    syntactic = np.zeros((2, 4), dtype=bool)
    syntactic[1] = True
    context = MethodContext(head_masks=HeadMasks(syntactic, np.zeros((2, 4), dtype=bool)))
    reference = get_method("lrp_rollout").attribute_batch(loaded, _batch(inputs), targets, MethodContext())
    unmasked = get_method("mask_lrp", {"rollout_relevance": "unmasked"})
    assert torch.equal(unmasked.attribute_batch(loaded, _batch(inputs), targets, context), reference)
    masked = get_method("mask_lrp").attribute_batch(loaded, _batch(inputs), targets, context)
    assert not torch.allclose(masked, reference)


def test_head_masks_re_thresholded_from_their_scores() -> None:
    margin = np.array([[0.2, 0.05, np.nan], [-0.1, 0.1, 0.3]])
    share = np.array([[0.5, 0.9, 0.1], [0.8, 0.85, 0.2]])
    masks = HeadMasks(margin > 0.1, share > 0.8, "hand", margin, share)
    np.testing.assert_array_equal(masks.at_thresholds(0.1, 0.8).union, masks.union)
    lower = masks.at_thresholds(0.0, 0.4)
    np.testing.assert_array_equal(lower.syntactic, [[True, True, False], [False, True, True]])
    np.testing.assert_array_equal(lower.positional, [[True, True, False], [True, True, False]])
    only_pos = masks.at_thresholds(xi_pos=0.3)
    np.testing.assert_array_equal(only_pos.syntactic, masks.syntactic)
    np.testing.assert_array_equal(only_pos.positional, share > 0.3)
    with pytest.raises(HeadMaskError, match="no syntactic margins"):
        HeadMasks(margin > 0.1, share > 0.8).at_thresholds(0.0)


def test_scores_survive_the_head_statistics_table() -> None:
    """Masks read back from the stored table carry margins and shares that re-threshold like the counts."""
    stats = HeadStatistics.empty(2, 3, relations=("nsubj", "dobj"), window=1)
    stats.relation_hits[:] = [[[5, 1], [2, 8], [0, 0]], [[9, 9], [3, 3], [1, 6]]]
    stats.relation_arcs[:] = [10, 10]
    stats.relation_offsets[0].update({1: 6, 2: 4})
    stats.relation_offsets[1].update({-1: 5, 1: 5})
    stats.position_hits[:] = [[[1, 9], [5, 5], [3, 2]], [[0, 10], [8, 1], [2, 2]]]
    stats.queries = 10
    mined = stats.masks(0.1, 0.8)
    # hand: lambda = (0.6, 0.5); margins max(alpha - lambda); shares max over offsets / 10 queries
    np.testing.assert_allclose(mined.syntactic_margin, [[-0.1, 0.3, -0.5], [0.4, -0.2, 0.1]])
    np.testing.assert_allclose(mined.positional_share, [[0.9, 0.5, 0.3], [1.0, 0.8, 0.2]])
    np.testing.assert_array_equal(mined.syntactic, [[False, True, False], [True, False, False]])
    back = masks_from_table(statistics_table(stats, 0.1, 0.8))
    np.testing.assert_allclose(back.syntactic_margin, mined.syntactic_margin)
    np.testing.assert_allclose(back.positional_share, mined.positional_share)
    for xi_synt, xi_pos in [(0.0, 0.4), (-0.3, 0.85), (0.35, 0.1)]:
        a, b = back.at_thresholds(xi_synt, xi_pos), stats.masks(xi_synt, xi_pos)
        np.testing.assert_array_equal(a.syntactic, b.syntactic)
        np.testing.assert_array_equal(a.positional, b.positional)


def test_mask_lrp_thresholds_that_keep_every_head_give_lrp_rollout(make_encoder, make_inputs) -> None:
    model = make_encoder("bert")
    loaded = from_modules(model, tokenizer=None)
    inputs = make_inputs("bert", [6, 5])
    targets = torch.tensor([1, 0])
    margin = np.array([[0.3, -0.2, 0.0, 0.05], [0.2, 0.1, -0.5, 0.4]])
    share = np.array([[0.9, 0.1, 0.3, 0.2], [0.6, 0.5, 0.95, 0.7]])
    context = MethodContext(head_masks=HeadMasks(margin > 0.1, share > 0.8, "t", margin, share))
    reference = get_method("lrp_rollout").attribute_batch(loaded, _batch(inputs), targets, MethodContext())
    method = get_method("mask_lrp", {"xi_synt": -1.0})
    assert torch.equal(method.attribute_batch(loaded, _batch(inputs), targets, context), reference)
    assert method.diagnostics(context) == {"kept_heads": 8.0, "empty_layers": 0.0}
    default = get_method("mask_lrp")
    scores = default.attribute_batch(loaded, _batch(inputs), targets, context)
    assert not torch.allclose(scores, reference)
    assert default.diagnostics(context) == {"kept_heads": 4.0, "empty_layers": 0.0}  # (0,0) (1,0) (1,3); (1,2)


def test_conservation_shares_per_layer(make_encoder, make_inputs, without_biases) -> None:
    """Biases zero: every share is 1 when all heads are kept; an empty layer 0 loses what its heads carried."""
    model = without_biases(make_encoder("bert"))
    loaded = from_modules(model, tokenizer=None)
    inputs = make_inputs("bert", [7, 5])
    targets = torch.tensor([0, 1])
    ones, zeros = np.ones((2, 4), dtype=bool), np.zeros((2, 4), dtype=bool)
    context = MethodContext(head_masks=HeadMasks(ones, zeros))
    method = get_method("mask_lrp", {"conservation": True})
    method.attribute_batch(loaded, _batch(inputs), targets, context)
    found = method.diagnostics(context)
    for key in ("relevance_share/layer_0", "relevance_share/layer_1", "relevance_share/input"):
        assert found[key] == pytest.approx(1.0, abs=1e-6), key
    top_only = zeros.copy()
    top_only[1] = True
    context = MethodContext(head_masks=HeadMasks(top_only, zeros))
    method.attribute_batch(loaded, _batch(inputs), targets, context)
    found = method.diagnostics(context)
    groups = np.where(top_only, 0, -1)
    reference = propagate_relevance(model, inputs, targets, gates=gates_from_groups(groups), head_relevance=True)
    full = propagate_relevance(model, inputs, targets, head_relevance=True)
    lost = full.head_relevance[0][0].sum(1)  # what layer 0's heads carried, which no residual path replaces
    assert found["empty_layers"] == 1.0 and found["kept_heads"] == 4.0
    assert found["relevance_share/layer_1"] == pytest.approx(1.0, abs=1e-6)
    assert found["relevance_share/input"] == pytest.approx(float((1 - lost).mean()), abs=1e-6)
    assert found["relevance_share/input"] == pytest.approx(float(reference.input.sum((1, 2)).mean()), abs=1e-9)
