"""SHAP-Gradient (expected gradients): gradients averaged over random points between references and input.

Also holds the machinery shared with SHAP-Deep (:mod:`xattr.methods.shap_deep`): the
:class:`ReferenceMethod` base (references from the context, fallbacks), the plan of which
reference each evaluation point uses, and the chunked evaluation of gradients at those points for
a whole batch (texts x samples in passes of at most ``rows_per_pass`` rows).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

import torch
from pydantic import Field

from xattr.methods.base import AttributionMethod, MethodParams, register_method, row_generator
from xattr.methods.context import MethodContext, Requirements
from xattr.methods.gradients import embedding_gradients, reduce_over_hidden, word_embeddings
from xattr.methods.references import constant_reference, text_reference
from xattr.models.encoding import Batch, EncodedText
from xattr.models.loading import LoadedModel
from xattr.neighbours.selection import NeighbourRequest
from xattr.types import Reduction

#: Reference choice meaning "the row's constant reference" (zeros or [PAD]) instead of a neighbour text.
CONSTANT = -1


def row_ids(batch: Batch, row: int) -> list[int]:
    """The row's own word-piece ids with the padding cut off (the seed material of :func:`row_generator`)."""
    n = int(batch.attention_mask[row].sum())
    return [int(t) for t in batch.input_ids[row, :n].tolist()]


def shap_grad_draws(
    seed: int, input_ids: Sequence[int], samples: int, n_references: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The random draws of one text for :class:`ShapGrad`.

    From ``row_generator(seed, input_ids)`` (CPU, so every device gets the same draws): first
    ``alphas_k ~ U(0, 1)``, then, with ``M = n_references > 0`` reference texts, one offset
    ``o ~ U{0, ..., M-1}``; sample ``k`` uses reference ``(k + o) mod M``. This is stratified
    sampling of the references: each is used ``floor(N/M)`` or ``ceil(N/M)`` times, all of them
    once ``N >= M``, and the random offset spreads the extra samples over the references instead
    of always giving them to the nearest ones. The alphas do not depend on ``M``.

    Args:
        seed: The method's seed.
        input_ids: The text's word-piece ids, special tokens included, no padding.
        samples: ``N``.
        n_references: ``M``; 0 means the constant (zero) reference for every sample.

    Returns:
        ``(alphas, choices)``: ``(N,)`` float64 in ``[0, 1)`` and ``(N,)`` long reference indices
        (:data:`CONSTANT` for the constant reference).
    """
    generator = row_generator(seed, input_ids)
    alphas = torch.rand(samples, generator=generator, dtype=torch.float64)  # (samples,)
    if n_references <= 0:
        return alphas, torch.full((samples,), CONSTANT, dtype=torch.long)
    offset = int(torch.randint(n_references, (1,), generator=generator).item())
    return alphas, (torch.arange(samples) + offset) % n_references


@dataclass(frozen=True)
class ReferencePlan:
    """The evaluation points of a batch: for each, its row, its reference and its alpha.

    Attributes:
        rows: ``(points,)`` long, the batch row of each point (rows in order, points of a row adjacent).
        choices: ``(points,)`` long, index into the row's reference texts, or :data:`CONSTANT`.
        alphas: ``(points,)`` float64 weight of the input in ``alpha * H0 + (1 - alpha) * H_k``, or
            ``None`` to evaluate every gradient at the reference ``H_k`` itself (SHAP-Deep).
    """

    rows: torch.Tensor
    choices: torch.Tensor
    alphas: torch.Tensor | None


def averaged_reference_gradients(
    loaded: LoadedModel,
    batch: Batch,
    targets: torch.Tensor,
    embeddings: torch.Tensor,
    plan: ReferencePlan,
    constant: torch.Tensor,
    texts: Mapping[int, Sequence[EncodedText]],
    *,
    multiply_by_inputs: bool,
    rows_per_pass: int,
) -> torch.Tensor:
    """Per row, the mean over its points ``k`` of ``S(P_k)`` or ``S(P_k) * (H0 - H_k)``.

    ``P_k = alpha_k H0 + (1 - alpha_k) H_k`` when the plan has alphas, else ``P_k = H_k``. The
    points of all rows are evaluated together, ``rows_per_pass`` at a time; reference texts are
    aligned to the input (:func:`~xattr.methods.references.text_reference`) in the pass that needs
    them, so memory stays at a few ``(rows_per_pass, seq, hidden)`` tensors.

    Args:
        loaded: The model (eval mode).
        batch: Padded inputs, ``(batch, seq)``.
        targets: ``(batch,)`` output index per row.
        embeddings: ``(batch, seq, hidden)`` word embeddings ``H0`` of the batch.
        plan: The evaluation points.
        constant: ``(batch, seq, hidden)`` constant reference, used by :data:`CONSTANT` choices.
        texts: Per batch row, its reference texts (rows using only the constant may be absent).
        multiply_by_inputs: Multiply each gradient by ``H0 - H_k``.
        rows_per_pass: Points per forward and backward pass.

    Returns:
        ``(batch, seq, hidden)``; rows without points are zero.
    """
    h0 = embeddings.detach()  # (batch, seq, hidden)
    device = h0.device
    total = torch.zeros_like(h0)  # (batch, seq, hidden)
    counts = torch.bincount(plan.rows, minlength=h0.shape[0]).clamp(min=1)  # (batch,)
    for start in range(0, len(plan.rows), rows_per_pass):
        rows = plan.rows[start : start + rows_per_pass]  # (chunk,)
        choices = plan.choices[start : start + rows_per_pass]  # (chunk,)
        aligned: dict[tuple[int, int], torch.Tensor] = {}
        refs_list = []
        with torch.no_grad():
            for row, choice in zip(rows.tolist(), choices.tolist(), strict=True):
                if choice == CONSTANT:
                    refs_list.append(constant[row].detach())
                    continue
                if (row, choice) not in aligned:
                    aligned[(row, choice)] = text_reference(loaded, batch, h0, row, texts[row][choice])
                refs_list.append(aligned[(row, choice)])
        refs = torch.stack(refs_list)  # (chunk, seq, hidden)
        index = rows.to(device)
        inputs = h0[index]  # (chunk, seq, hidden)
        if plan.alphas is None:
            points = refs
        else:
            alpha = plan.alphas[start : start + rows_per_pass].to(device=device, dtype=h0.dtype).view(-1, 1, 1)
            points = alpha * inputs + (1.0 - alpha) * refs  # (chunk, seq, hidden)
        sub = Batch(
            tuple(batch.indices[r] for r in rows.tolist()),
            batch.input_ids[index],
            batch.attention_mask[index],
            batch.token_type_ids[index],
        )
        _, grad = embedding_gradients(loaded, sub, targets[index], embeddings=points)  # (chunk, seq, hidden)
        total.index_add_(0, index, grad * (inputs - refs) if multiply_by_inputs else grad)
    return total / counts.to(device=device, dtype=h0.dtype).view(-1, 1, 1)


#: The neighbour search of SHAP's neighbour references: the ten nearest texts, no distance cut-off.
NEIGHBOUR_REFERENCES = NeighbourRequest(max_neighbours=10, epsilon_quantile=None)


class ReferenceParams(MethodParams):
    """Parameters every SHAP method has (each narrows ``references`` to the kinds it supports)."""

    references: str = Field(description="the references: a constant one (zero, pad) or neighbours")
    rows_per_pass: int = Field(
        256, ge=1, description="evaluation points (text x reference) per forward and backward pass"
    )
    reduction: Reduction = Field("sum_of_squares", description="sum_of_squares (LAFA Sec. 4) or sum (signed)")


R = TypeVar("R", bound=ReferenceParams)


class ReferenceMethod(AttributionMethod[R]):
    """Base of the SHAP methods: gradients at points planned from references, averaged per text.

    With ``references: neighbours`` a text's references are its nearest-neighbour texts from the
    context (the method asks for :data:`NEIGHBOUR_REFERENCES`); a text without any uses the
    constant reference and is counted in ``fallbacks``. Subclasses plan the evaluation points
    (:meth:`reference_plan`) and say which constant reference (:meth:`constant_reference`) and
    whether gradients are multiplied by ``H0 - H_k`` (:meth:`multiply_by_inputs`); the points are
    evaluated by :func:`averaged_reference_gradients` and reduced per token.
    """

    @classmethod
    def requirements(cls, params: R) -> Requirements:
        """Neighbours (the ten nearest texts) for ``references: neighbours``, nothing otherwise."""
        return Requirements(neighbours=NEIGHBOUR_REFERENCES) if params.references == "neighbours" else Requirements()

    @abstractmethod
    def reference_plan(
        self, batch: Batch, texts: dict[int, list[EncodedText]]
    ) -> tuple[ReferencePlan, dict[int, list[EncodedText]]]:
        """The evaluation points of a batch from each row's neighbour texts (empty lists without neighbours).

        Returns:
            The plan, and per batch row the reference texts its choices index.
        """

    def constant_reference(self) -> str:
        """The constant reference of :data:`CONSTANT` choices: ``zeros`` (default) or ``pad``."""
        return "zeros"

    def multiply_by_inputs(self) -> bool:
        """Whether each gradient is multiplied by ``H0 - H_k``."""
        return self.multiplies_by_inputs

    def row_references(self, batch: Batch, context: MethodContext) -> dict[int, list[EncodedText]]:
        """Per batch row, its neighbour texts, nearest first (all empty without ``references: neighbours``)."""
        neighbours = self.params.references == "neighbours"
        texts: dict[int, list[EncodedText]] = {}
        for row, position in enumerate(batch.indices):
            texts[row] = context.reference_texts(position) if neighbours else []
            if neighbours and not texts[row]:
                self.count_fallback(context)
        return texts

    def attribute_batch(
        self, loaded: LoadedModel, batch: Batch, targets: torch.Tensor, context: MethodContext
    ) -> torch.Tensor:
        """Scores ``(batch, seq)``: the reduction of the averaged reference gradients."""
        plan, texts = self.reference_plan(batch, self.row_references(batch, context))
        with torch.no_grad():
            h0 = word_embeddings(loaded, batch.input_ids)  # (batch, seq, hidden)
            constant = constant_reference(loaded, batch, h0, self.constant_reference())  # (batch, seq, hidden)
        attributions = averaged_reference_gradients(
            loaded,
            batch,
            targets,
            h0,
            plan,
            constant,
            texts,
            multiply_by_inputs=self.multiply_by_inputs(),
            rows_per_pass=self.params.rows_per_pass,
        )  # (batch, seq, hidden)
        return reduce_over_hidden(attributions, self.params.reduction)


class ShapGradParams(ReferenceParams):
    """Parameters of :class:`ShapGrad`."""

    samples: int = Field(25, ge=1, description="N: random points (alpha, reference) per text")
    references: Literal["zero", "neighbours"] = Field(
        "zero", description="zero (SHAP + Zero) or neighbours: the text's nearest-neighbour texts (SHAP + Ref.)"
    )
    multiply_by_inputs: bool = Field(
        False, description="multiply each gradient by (H0 - H_k): Captum GradientShap; False is LAFA as printed"
    )
    seed: int = Field(0, description="seed of the alphas and reference offsets (combined with each text's ids)")


@register_method(
    "shap_grad",
    summary="gradient averaged over random points between references (zero or neighbour texts) and the input",
    paper="Lundberg and Lee 2017; LAFA (Zhang et al. 2022) Sec. 4, SHAP-Gradient",
    signed="reduction",
    cost="{samples} fwd + {samples} bwd",
)
class ShapGrad(ReferenceMethod[ShapGradParams]):
    """SHAP-Gradient (Lundberg and Lee 2017; expected gradients) as written in LAFA Section 4.

    ``S_ShapGrad(H0) = 1/N sum_k S(alpha_k H0 + (1 - alpha_k) H_k)`` with ``alpha_k ~ U(0, 1)``
    and ``H_k`` a reference, then ``M_i = sum_j S_ShapGrad(H0)_ij^2``. With
    ``multiply_by_inputs`` the sum is over ``(H0 - H_k) * S(...)`` instead, Captum's
    ``GradientShap`` (SHAP's ``GradientExplainer``), whose signed sum over tokens approximates
    ``F(H0) - E[F(H_k)]``; LAFA prints the plain gradient average.

    References ("SHAP + Zero" and "SHAP + Ref." of LAFA Tables 2-3): ``zero`` puts the zero vector
    on content word pieces; ``neighbours`` uses the text's nearest-neighbour texts (from the
    method's context), aligned to the input by
    :func:`~xattr.methods.references.text_reference`, one per sample, stratified as described in
    :func:`shap_grad_draws`. Special tokens keep their own embedding in every reference. A row
    without neighbour texts uses the zero reference and is counted in ``fallbacks``.

    Draws come from :func:`~xattr.methods.base.row_generator` seeded by ``seed`` and the text's
    ids, so batched results equal one-by-one results and a seed reproduces a run; the targets of
    a multi-label text share the same draws.
    """

    def multiply_by_inputs(self) -> bool:
        """The ``multiply_by_inputs`` parameter (Captum's GradientShap) or not (LAFA as printed)."""
        return self.params.multiply_by_inputs

    def reference_plan(
        self, batch: Batch, texts: dict[int, list[EncodedText]]
    ) -> tuple[ReferencePlan, dict[int, list[EncodedText]]]:
        """``samples`` points per row: alphas and stratified reference choices (:func:`shap_grad_draws`)."""
        p = self.params
        rows, choices, alphas = [], [], []
        for row, references in texts.items():
            row_alphas, row_choices = shap_grad_draws(p.seed, row_ids(batch, row), p.samples, len(references))
            rows.append(torch.full((p.samples,), row, dtype=torch.long))
            choices.append(row_choices)
            alphas.append(row_alphas)
        return ReferencePlan(torch.cat(rows), torch.cat(choices), torch.cat(alphas)), texts
