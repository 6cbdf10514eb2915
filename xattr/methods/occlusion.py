"""Occlusion: how much the output drops when a sliding window of tokens is replaced."""

from __future__ import annotations

import torch
from pydantic import Field

from xattr.methods.base import AttributionMethod, MethodParams, register_method
from xattr.methods.context import MethodContext
from xattr.methods.substitution import (
    TokenReplacement,
    content_positions,
    original_outputs,
    substituted_outputs,
)
from xattr.models.encoding import Batch
from xattr.models.loading import LoadedModel


class OcclusionParams(MethodParams):
    """Parameters of :class:`Occlusion`."""

    window: int = Field(1, ge=1, description="sliding window size in tokens (stride 1)")
    replacement: TokenReplacement = Field("mask", description="token replacing the window")
    rows_per_pass: int = Field(256, ge=1, description="occluded copies per forward pass")


@register_method(
    "occlusion",
    summary="mean output drop when a sliding window of tokens covering the token is replaced",
    paper="Zeiler and Fergus 2014; Captum Occlusion",
    signed=True,
)
class Occlusion(AttributionMethod[OcclusionParams]):
    """Occlusion (Zeiler and Fergus 2014) over word pieces, as Captum's ``Occlusion``.

    A window of ``window`` consecutive content tokens slides over the text with stride 1; each
    position is replaced by the ``replacement`` token and the drop ``F(x) - F(x with window
    replaced)`` of the explained output is credited to every token of the window. A token's score
    is the mean drop over the windows covering it (Captum's weighting), so with ``window: 1`` it is
    exactly the effect of removing that token alone. Signed: positive when the token supports the
    output. Special tokens are never occluded and score 0; windows slide over the remaining tokens
    in order (across the middle [SEP] of a pair), and a text shorter than the window is occluded
    whole. Hand-written rather than Captum's per-text loop so that the occluded copies of many
    texts share forward passes; the tests check it equals Captum text by text.
    """

    def attribute_batch(
        self, loaded: LoadedModel, batch: Batch, targets: torch.Tensor, context: MethodContext
    ) -> torch.Tensor:
        """Scores ``(batch, seq)``; special and padding positions score 0."""
        windows: list[tuple[int, list[int]]] = []
        for row, positions in enumerate(content_positions(loaded, batch)):
            width = min(self.params.window, len(positions))
            windows += [(row, positions[s : s + width]) for s in range(len(positions) - width + 1) if width]
        base = original_outputs(loaded, batch, targets)  # (batch,)
        outputs = substituted_outputs(
            loaded, batch, targets, windows, self.params.replacement, self.params.rows_per_pass
        )  # (windows,)
        total = torch.zeros(batch.input_ids.shape, dtype=base.dtype, device=base.device)  # (batch, seq)
        count = torch.zeros_like(total)
        for (row, positions), value in zip(windows, outputs, strict=True):
            total[row, positions] += base[row] - value
            count[row, positions] += 1
        return torch.where(count > 0, total / count.clamp(min=1), torch.zeros_like(total))
