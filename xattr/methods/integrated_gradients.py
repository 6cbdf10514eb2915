"""Integrated Gradients: gradients averaged along the straight path from a reference to the input.

Also holds :func:`repeated_gradients`, the batched ``(text x point)`` gradient loop that
Integrated Gradients and SmoothGrad share: every text of a batch is evaluated at several
embedding points (path steps, noisy copies), and all ``(text, point)`` rows are stacked and cut
into chunks of at most ``rows_per_pass`` rows, one forward and one backward pass per chunk.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Literal

import torch
from pydantic import Field, model_validator

from xattr.methods.base import AttributionMethod, MethodParams, register_method
from xattr.methods.context import MethodContext
from xattr.methods.gradients import embedding_gradients, reduce_over_hidden, word_embeddings
from xattr.methods.references import constant_reference, text_reference
from xattr.models.encoding import Batch, EncodedText, encode_texts
from xattr.models.loading import LoadedModel
from xattr.types import Reduction

#: The reference an Integrated Gradients path starts from.
Baseline = Literal["zeros", "pad", "text"]

#: Builds the embeddings of one chunk from its rows' batch rows and point indices, both ``(chunk,)``.
PointBuilder = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def repeated_gradients(
    loaded: LoadedModel,
    batch: Batch,
    targets: torch.Tensor,
    points: int,
    rows_per_pass: int,
    build: PointBuilder,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Gradients of each row's target output at ``points`` embedding points per row.

    The ``batch * points`` rows are enumerated text by text (row ``r`` point ``k`` is flat row
    ``r * points + k``) and cut into consecutive chunks of at most ``rows_per_pass`` rows, so a
    chunk may hold the last points of one text and the first points of the next. ``build`` is
    called once per chunk, in this order, so each text's points are requested in increasing
    ``k`` (a per-text random stream can be consumed in order). Rows do not interact in an
    encoder in eval mode, so each row's gradient is its own whatever else shares the pass.

    Args:
        loaded: The model (eval mode).
        batch: Padded inputs ``(batch, seq)`` on the model's device.
        targets: ``(batch,)`` output index per row.
        points: Embedding points per row (at least 1).
        rows_per_pass: Most ``(row, point)`` pairs per forward/backward pass (at least 1).
        build: ``build(rows, ks)`` returns the ``(chunk, seq, hidden)`` embeddings at which to
            differentiate, for batch rows ``rows`` and point indices ``ks``.

    Yields:
        ``(rows, ks, grad)`` per chunk: ``rows`` and ``ks`` ``(chunk,)`` long tensors and
        ``grad = dF/dH`` ``(chunk, seq, hidden)``.
    """
    if points < 1 or rows_per_pass < 1:
        raise ValueError(f"points and rows_per_pass must be at least 1, got {points} and {rows_per_pass}")
    device = batch.input_ids.device
    total = batch.input_ids.shape[0] * points
    for start in range(0, total, rows_per_pass):
        flat = torch.arange(start, min(start + rows_per_pass, total), device=device)  # (chunk,)
        rows, ks = flat // points, flat % points
        chunk = Batch(
            tuple(batch.indices[r] for r in rows.tolist()),
            batch.input_ids[rows],
            batch.attention_mask[rows],
            batch.token_type_ids[rows],
        )
        embeddings = build(rows, ks)  # (chunk, seq, hidden)
        _, grad = embedding_gradients(loaded, chunk, targets[rows], embeddings)  # (chunk, seq, hidden)
        yield rows, ks, grad


def summed_gradients(
    gradients: Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], *, like: torch.Tensor
) -> torch.Tensor:
    """Per row, the sum over its points of the gradients that :func:`repeated_gradients` yields.

    Args:
        gradients: ``(rows, ks, grad)`` chunks from :func:`repeated_gradients`.
        like: ``(batch, seq, hidden)``, the shape, dtype and device of the sum (the word embeddings).

    Returns:
        ``(batch, seq, hidden)``.
    """
    total = torch.zeros_like(like)  # (batch, seq, hidden)
    for rows, _, grad in gradients:
        total.index_add_(0, rows, grad)
    return total


def reference_embeddings(
    loaded: LoadedModel,
    batch: Batch,
    embeddings: torch.Tensor,
    baseline: Baseline,
    reference: EncodedText | None = None,
) -> torch.Tensor:
    """``H'``: the reference embeddings of each row, ``(batch, seq, hidden)``.

    Special tokens and padding keep the input's own embedding (see :mod:`xattr.methods.references`).

    Args:
        loaded: The model.
        batch: Padded inputs.
        embeddings: ``(batch, seq, hidden)`` word embeddings ``H0`` of the batch.
        baseline: ``zeros``, ``pad`` or ``text``.
        reference: The encoded reference text (required for ``text``).
    """
    if baseline in ("zeros", "pad"):
        return constant_reference(loaded, batch, embeddings, baseline)
    if reference is None:
        raise ValueError("the text baseline needs an encoded reference text")
    rows = [text_reference(loaded, batch, embeddings, r, reference) for r in range(embeddings.shape[0])]
    return torch.stack(rows)  # (batch, seq, hidden)


class IntegratedGradientsParams(MethodParams):
    """Parameters of :class:`IntegratedGradients`."""

    steps: int = Field(25, ge=1, description="N: points of the right Riemann sum along the path")
    baseline: Baseline = Field(
        "pad", description="reference H' at content tokens: zeros, the [PAD] embedding, or baseline_text"
    )
    baseline_text: str | None = Field(None, description="reference text (required when baseline is text)")
    rows_per_pass: int = Field(256, ge=1, description="(text x step) rows per forward/backward pass")
    reduction: Reduction = Field(
        "sum_of_squares", description="sum_of_squares (LAFA Sec. 4) or sum (signed; sums to F(x) - F(H'))"
    )

    @model_validator(mode="after")
    def _baseline_text_iff_text(self) -> IntegratedGradientsParams:
        if self.baseline == "text" and (self.baseline_text is None or not self.baseline_text.strip()):
            raise ValueError("baseline 'text' needs a non-empty baseline_text")
        if self.baseline != "text" and self.baseline_text is not None:
            raise ValueError(f"baseline_text is only used with baseline 'text', not {self.baseline!r}")
        return self


@register_method(
    "integrated_gradients",
    summary="gradients averaged on the path from a reference, times (input - reference)",
    paper="Sundararajan et al. 2017; LAFA (Zhang et al. 2022) Sec. 4",
    signed="reduction",
    cost="{steps} fwd + {steps} bwd",
)
class IntegratedGradients(AttributionMethod[IntegratedGradientsParams]):
    """Integrated Gradients (Sundararajan et al. 2017) as written in LAFA Section 4.

    With ``H0`` the word embeddings and ``H'`` the reference, the right Riemann sum with ``N``
    steps is ``S_IG(H0) = (H0 - H') / N * sum_{k=1..N} S(H' + k/N (H0 - H'))`` and the score
    ``M_i = sum_j S_IG(H0)_ij^2`` (``reduction="sum_of_squares"``). With ``reduction="sum"``
    the score is the signed ``sum_j S_IG(H0)_ij``; by completeness these sum over the tokens to
    ``F(H0) - F(H')`` as ``N`` grows. Special tokens keep their own embedding in ``H'``, so
    they score 0. The step points ``k/N`` and weights ``1/N`` are those of Captum's
    ``method="riemann_right"`` (which rounds them to float32; they are exact here).
    """

    multiplies_by_inputs = True

    def _reference_text(self, loaded: LoadedModel) -> EncodedText | None:
        text = self.params.baseline_text
        if text is None:
            return None
        (encoded,) = encode_texts(loaded.tokenizer, [text], max_length=loaded.max_length)
        return encoded

    def attribute_batch(
        self, loaded: LoadedModel, batch: Batch, targets: torch.Tensor, context: MethodContext
    ) -> torch.Tensor:
        """Scores ``(batch, seq)`` from the right Riemann sum of the path integral."""
        p = self.params
        with torch.no_grad():
            h0 = word_embeddings(loaded, batch.input_ids).detach()  # (batch, seq, hidden)
            ref = reference_embeddings(loaded, batch, h0, p.baseline, self._reference_text(loaded)).detach()
        delta = h0 - ref  # (batch, seq, hidden)
        alphas = (torch.arange(1, p.steps + 1, dtype=torch.float64, device=h0.device) / p.steps).to(h0.dtype)

        def build(rows: torch.Tensor, ks: torch.Tensor) -> torch.Tensor:
            return ref[rows] + alphas[ks].view(-1, 1, 1) * delta[rows]  # (chunk, seq, hidden)

        grad_sum = summed_gradients(
            repeated_gradients(loaded, batch, targets, p.steps, p.rows_per_pass, build), like=h0
        )
        attributions = delta * (grad_sum / p.steps)  # (batch, seq, hidden)
        return reduce_over_hidden(attributions, p.reduction)
