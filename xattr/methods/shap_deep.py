"""SHAP-Deep as printed in LAFA: the gradient at each reference times the input's difference from it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from pydantic import Field

from xattr.methods.base import register_method
from xattr.methods.shap_grad import CONSTANT, ReferenceMethod, ReferenceParams, ReferencePlan
from xattr.models.encoding import Batch, EncodedText


def shap_deep_references(texts: Sequence[EncodedText], max_references: int) -> list[EncodedText]:
    """The reference texts :class:`ShapDeep` uses: the first ``max_references``, nearest first."""
    return list(texts[:max_references])


class ShapDeepParams(ReferenceParams):
    """Parameters of :class:`ShapDeep`."""

    references: Literal["zero", "pad", "neighbours"] = Field(
        "neighbours",
        description="neighbours: the text's nearest-neighbour texts (SHAP + Ref.), zero (SHAP + Zero) or pad ([PAD])",
    )
    max_references: int = Field(10, ge=1, description="N: at most this many neighbour texts, nearest first")


@register_method(
    "shap_deep",
    summary="gradient at each reference (zero, [PAD] or neighbour texts) times input minus reference, averaged",
    paper="Lundberg and Lee 2017; Shrikumar et al. 2017; LAFA (Zhang et al. 2022) Sec. 4, SHAP-Deep",
    signed="reduction",
    cost="up to {max_references} references x (1 fwd + 1 bwd)",
)
class ShapDeep(ReferenceMethod[ShapDeepParams]):
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

    multiplies_by_inputs = True

    def constant_reference(self) -> str:
        """[PAD] for ``references: pad``, else zeros (also the fallback of a row without neighbours)."""
        return "pad" if self.params.references == "pad" else "zeros"

    def reference_plan(
        self, batch: Batch, texts: dict[int, list[EncodedText]]
    ) -> tuple[ReferencePlan, dict[int, list[EncodedText]]]:
        """One point per (row, reference): the row's first ``max_references`` texts, or its constant one."""
        rows, choices = [], []
        for row, references in texts.items():
            texts[row] = shap_deep_references(references, self.params.max_references)
            n = max(len(texts[row]), 1)
            rows.append(torch.full((n,), row, dtype=torch.long))
            choices.append(torch.arange(n) if texts[row] else torch.full((1,), CONSTANT, dtype=torch.long))
        return ReferencePlan(torch.cat(rows), torch.cat(choices), None), texts
