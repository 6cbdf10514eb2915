"""Head masks read back from a head_statistics artifact are checked against the model before a run gets them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from storage import ArtifactStore
from tasks.head_statistics import checked_head_masks, read_head_masks
from xattr.heads.masks import HeadMaskError, check_masks_fit
from xattr.heads.statistics import HeadStatistics
from xattr.heads.table import statistics_table
from xattr.methods import MethodContext, Requirements, attribute_corpus
from xattr.methods.base import AttributionMethod, MethodParams
from xattr.models.encoding import encode_texts
from xattr.models.loading import load_model


class Probe(AttributionMethod[MethodParams]):
    """Every token scores the number of kept heads its context holds."""

    name = "probe"
    summary = "test only"
    paper = "test only"

    @classmethod
    def requirements(cls, params: MethodParams) -> Requirements:
        return Requirements(head_masks=True)

    def attribute_batch(self, loaded, batch, targets, context):
        return torch.full(batch.input_ids.shape, float(context.head_masks.union.sum()))


def _artifact(tmp_path: Path, layers: int, heads: int):
    stats = HeadStatistics.empty(layers, heads, window=1)
    stats.relation_arcs[:] = [4, 0, 0, 0]
    stats.relation_offsets[0].update({1: 2, -1: 2})
    stats.relation_hits[layers - 1, 0, 0] = 4  # alpha 1.0 vs lambda 0.5: syntactic
    stats.queries = 10
    stats.position_hits[0, heads - 1, 1] = 9  # +1 for 90% of the queries: positional
    return ArtifactStore(tmp_path, "run").write(
        "head_statistics",
        "head_statistics",
        f"statistics-{layers}x{heads}",
        statistics_table(stats, 0.1, 0.8),
        metadata={"source": f"model-{layers}x{heads}"},
    )


def test_masks_reach_the_method_when_the_shape_matches(tmp_path: Path, tiny_classifier_dir: Path) -> None:
    loaded = load_model(tiny_classifier_dir, device="cpu")
    masks = checked_head_masks("probe", loaded, _artifact(tmp_path, 2, 2))
    context = MethodContext(head_masks=masks)
    assert context.head_masks is masks
    encoded = encode_texts(loaded.tokenizer, ["the movie"], max_length=16)
    (result,) = attribute_corpus(Probe(), loaded, encoded, [[0]], context=context)
    np.testing.assert_array_equal(result.scores, 2.0)  # the two kept heads it was given
    np.testing.assert_array_equal(masks.syntactic, [[False, False], [True, False]])
    np.testing.assert_array_equal(masks.positional, [[False, True], [False, False]])
    assert masks.source == "model-2x2"


def test_masks_of_another_model_are_refused_naming_both_shapes(tmp_path: Path, tiny_classifier_dir: Path) -> None:
    loaded = load_model(tiny_classifier_dir, device="cpu")
    ref = _artifact(tmp_path, 12, 12)
    assert read_head_masks(ref).shape == (12, 12)
    with pytest.raises(HeadMaskError, match=r"from model-12x12 have shape \(12, 12\).* has 2 layers x 2 heads"):
        checked_head_masks("probe", loaded, ref)
    with pytest.raises(HeadMaskError, match=r"from model-12x12 have shape \(12, 12\).* has 2 layers x 2 heads"):
        check_masks_fit(read_head_masks(ref), loaded)


def test_missing_masks_are_refused(tiny_classifier_dir: Path) -> None:
    loaded = load_model(tiny_classifier_dir, device="cpu")
    with pytest.raises(ValueError, match="method 'probe' needs head masks"):
        checked_head_masks("probe", loaded, None)
    encoded = encode_texts(loaded.tokenizer, ["the movie"], max_length=16)
    with pytest.raises(ValueError, match="probe needs head masks in its MethodContext"):
        attribute_corpus(Probe(), loaded, encoded, [[0]])
