"""Head masks read back from a head_statistics artifact are checked against the model before binding."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch

from storage import ArtifactStore
from tasks.head_statistics import bind_head_masks, read_head_masks
from xattr.heads.masks import HeadMaskError
from xattr.heads.statistics import HeadStatistics
from xattr.heads.table import statistics_table
from xattr.methods.base import AttributionMethod
from xattr.models.loading import load_model


class Probe(AttributionMethod):
    name = "probe"
    summary = "test only"
    paper = "test only"
    uses_head_masks: ClassVar[bool] = True

    def attribute_batch(self, loaded, batch, targets):
        return torch.zeros(batch.input_ids.shape)


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


def test_masks_bind_when_the_shape_matches(tmp_path: Path, tiny_classifier_dir: Path) -> None:
    loaded = load_model(tiny_classifier_dir, device="cpu")
    method = Probe()
    masks = bind_head_masks(method, loaded, _artifact(tmp_path, 2, 2))
    assert method._head_masks is masks
    np.testing.assert_array_equal(masks.syntactic, [[False, False], [True, False]])
    np.testing.assert_array_equal(masks.positional, [[False, True], [False, False]])
    assert masks.source == "model-2x2"


def test_masks_of_another_model_are_refused_naming_both_shapes(tmp_path: Path, tiny_classifier_dir: Path) -> None:
    loaded = load_model(tiny_classifier_dir, device="cpu")
    ref = _artifact(tmp_path, 12, 12)
    assert read_head_masks(ref).shape == (12, 12)
    with pytest.raises(HeadMaskError, match=r"from model-12x12 have shape \(12, 12\).* has 2 layers x 2 heads"):
        bind_head_masks(Probe(), loaded, ref)


def test_missing_masks_are_refused(tiny_classifier_dir: Path) -> None:
    loaded = load_model(tiny_classifier_dir, device="cpu")
    with pytest.raises(ValueError, match="method 'probe' needs head masks"):
        bind_head_masks(Probe(), loaded, None)
