"""SHAP-Deep as printed in LAFA: the gradient at each reference times the input's difference from it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from pydantic import Field

from xattr.methods.base import AttributionMethod, MethodParams, register_method
from xattr.methods.context import MethodContext, Requirements
from xattr.methods.shap_grad import CONSTANT, ReferencePlan, reference_requirements, reference_scores, row_references
from xattr.models.encoding import Batch, EncodedText
from xattr.models.loading import LoadedModel
from xattr.types import Reduction


def shap_deep_references(texts: Sequence[EncodedText], max_references: int) -> list[EncodedText]:
    """The reference texts :class:`ShapDeep` uses: the first ``max_references``, nearest first."""
    return list(texts[:max_references])


class ShapDeepParams(MethodParams):
    """Parameters of :class:`ShapDeep`."""

    references: Literal["zero", "pad", "neighbours"] = Field(
        "neighbours",
        description="neighbours: the text's nearest-neighbour texts (SHAP + Ref.), zero (SHAP + Zero) or pad ([PAD])",
    )
    max_references: int = Field(10, ge=1, description="N: at most this many neighbour texts, nearest first")
    reduction: Reduction = Field("sum_of_squares", description="sum_of_squares (LAFA Sec. 4) or sum (signed)")
    rows_per_pass: int = Field(256, ge=1, description="(text, reference) points per forward and backward pass")


@register_method
class ShapDeep(AttributionMethod[ShapDeepParams]):
    """SHAP-Deep as written in LAFA Section 4 (after Lundberg and Lee 2017, Shrikumar et al. 2017).

    ``S_ShapDeep(H0) = 1/N sum_k S(H_k) * (H0 - H_k)`` over references ``H_k``: the gradient
    taken AT the reference, times the input's difference from it, then
    ``M_i = sum_j S_ShapDeep(H0)_ij^2``. Each term is the first-order expansion of the output
    around the reference, ``F(H0) - F(H_k) ~ sum S(H_k) * (H0 - H_k)``: the DeepLIFT-rescale
    attribution of SHAP's ``DeepExplainer`` with every multiplier linearised at the reference, as
    for a model treated as linear from ``H_k``. It equals DeepLIFT, and Captum's ``DeepLiftShap``,
    exactly when the model is linear in its word embeddings. It is NOT Captum's ``DeepLiftShap``
    on a transformer, whose DeepLIFT rules change the backward pass of every nonlinearity into
    finite-difference multipliers between input and reference activations; LAFA prints the plain
    gradient at the reference, and that is what is computed here.

    References: ``neighbours`` ("SHAP + Ref."): the text's nearest-neighbour texts from the
    method's context, at most ``max_references``, nearest first, each aligned to the input by
    :func:`~xattr.methods.references.text_reference`; ``zero`` ("SHAP + Zero") and ``pad`` put the
    zero vector or the [PAD] embedding on content word pieces (one reference, ``N = 1``). Special
    tokens keep their own embedding in every reference, so they score zero. A row without
    neighbour texts uses the zero reference and is counted in ``fallbacks``. Nothing is random.
    """

    name = "shap_deep"
    summary = "gradient at each reference (zero, [PAD] or neighbour texts) times input minus reference, averaged"
    paper = "Lundberg and Lee 2017; Shrikumar et al. 2017; LAFA (Zhang et al. 2022) Sec. 4, SHAP-Deep"
    Params = ShapDeepParams
    multiplies_by_inputs = True

    @classmethod
    def requirements(cls, params: ShapDeepParams) -> Requirements:
        """Neighbours for ``references: neighbours`` (the ten nearest texts), nothing otherwise."""
        return reference_requirements(params.references)

    def reference_plan(
        self, batch: Batch, context: MethodContext
    ) -> tuple[ReferencePlan, dict[int, list[EncodedText]]]:
        """One point per (row, reference) and, per row using neighbours, its reference texts."""
        p = self.params
        texts = row_references(self, batch, context, neighbours=p.references == "neighbours")
        rows, choices = [], []
        for row, references in texts.items():
            texts[row] = shap_deep_references(references, p.max_references)
            n = max(len(texts[row]), 1)
            rows.append(torch.full((n,), row, dtype=torch.long))
            choices.append(torch.arange(n) if texts[row] else torch.full((1,), CONSTANT, dtype=torch.long))
        return ReferencePlan(torch.cat(rows), torch.cat(choices), None), texts

    def attribute_batch(
        self, loaded: LoadedModel, batch: Batch, targets: torch.Tensor, context: MethodContext
    ) -> torch.Tensor:
        """Scores ``(batch, seq)``: the reduction of ``S_ShapDeep(H0)``."""
        p = self.params
        plan, texts = self.reference_plan(batch, context)
        return reference_scores(
            loaded,
            batch,
            targets,
            plan,
            texts,
            constant="pad" if p.references == "pad" else "zeros",
            multiply_by_inputs=True,
            rows_per_pass=p.rows_per_pass,
            reduction=p.reduction,
        )
