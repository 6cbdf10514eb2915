"""LAFA: Locally Aggregated Feature Attribution (Zhang et al. 2022).

A text's base attribution (any gradient method) is smoothed with the base attributions of its
nearest neighbours in a hidden layer of the explained model itself (Eq. 4), aggregated through a
kernel between word-piece embeddings (Eq. 6-7, Algorithm 1). In a corpus run every neighbour's
base attribution is computed once and cached in the run's context: a text explained later, or
serving as a neighbour again, reuses it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, Literal

import torch
from pydantic import Field, model_validator

from xattr.methods.base import AttributionMethod, get_method, method_requirements, method_signed, register_method
from xattr.methods.context import MethodContext, Requirements
from xattr.methods.lafa_kernels import KernelName, KernelParams, kernel_matrix
from xattr.models.encoding import Batch, collate
from xattr.models.forward import pad_id
from xattr.models.loading import LoadedModel
from xattr.neighbours.selection import NeighbourFilter, NeighbourRequest


class LafaParams(KernelParams):
    """Parameters of :class:`Lafa` (defaults: LAFA Appendix A Case I and Appendix D-E), kernel ones included."""

    base: str = Field("simple_grad", description="base gradient method (registry name)")
    base_params: dict[str, Any] = Field(default_factory=dict, description="parameters of the base method")
    lam: float = Field(1.0, ge=0.0, description="lambda of Eq. 6: weight of the neighbours' term")
    kernel: KernelName = Field("cosine", description="rbf, cubic, cosine, laplacian, clipped_l2, indicator")
    max_neighbours: int = Field(10, ge=1, description="M: at most this many neighbours")
    epsilon_quantile: float | None = Field(
        0.05, gt=0.0, le=1.0, description="cut-off epsilon as this quantile of sampled pairwise distances"
    )
    neighbour_filter: NeighbourFilter = Field(
        "none", description="none, label or prediction: same-class neighbours only"
    )
    layer: int | None = Field(None, description="hidden layer the neighbour index must use (None: the flow's)")
    centre_embeddings: bool = Field(
        False,
        description="subtract the mean word-piece embedding (of the vocabulary) before the kernel (issue 18: the "
        "cosine kernel of an anisotropic embedding space is far from 0 between unrelated pieces; not the paper's)",
    )
    normalise: Literal["none", "l1"] = Field(
        "none",
        description="none (Eq. 7) or l1: each text's base scores M(X_i), the explained text's too, divided by "
        "their sum of absolute values over its content pieces, so no neighbour dominates by its gradient norm "
        "(not the paper's)",
    )

    @model_validator(mode="after")
    def _valid_base(self) -> LafaParams:
        if self.base == "lafa":
            raise ValueError("LAFA cannot be its own base method")
        get_method(self.base, self.base_params)
        return self


def lafa_aggregate(
    base_scores: torch.Tensor,
    embeddings: torch.Tensor,
    content: torch.Tensor,
    neighbour_scores: Sequence[torch.Tensor],
    neighbour_embeddings: Sequence[torch.Tensor],
    *,
    lam: float,
    kernel: str,
    kernel_params: KernelParams | None = None,
    centre: torch.Tensor | None = None,
    normalise: str = "none",
    record: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Eq. 6-7: ``M_LAFA(X0)_t = M(X0)_t + lam * E(w_t; Xsim)``.

    ``E(w; Xsim) = 1/|Xsim| sum_i sum_k m_ik k(h, h_ik) / T_i`` over the neighbours' content
    (non-special) word pieces, ``T_i`` their count, ``h`` word-piece embeddings (layer 0). Special
    tokens of ``X0`` get no neighbour term.

    Variants (not the paper's): ``centre`` ``(d,)`` is subtracted from every embedding before the
    kernel; ``normalise="l1"`` divides ``M(X0)`` (over its content pieces) and each neighbour's
    scores by their sum of absolute values first. ``record``, when given, receives the kernel
    matrix, the base scores and the neighbour term ``lam * E`` of the content pieces (spread
    diagnostics).

    Args:
        base_scores: ``(T0,)`` base attribution ``M(X0)``.
        embeddings: ``(T0, d)`` word-piece embeddings of ``X0``.
        content: ``(T0,)`` bool, non-special tokens of ``X0``.
        neighbour_scores: Per neighbour, ``(T_i,)`` base scores of its content tokens.
        neighbour_embeddings: Per neighbour, ``(T_i, d)`` embeddings of its content tokens.
        lam: ``lambda``.
        kernel: Kernel name (LAFA Appendix E).
        kernel_params: Kernel hyper-parameters.

    Returns:
        ``(T0,)`` smoothed scores; ``base_scores`` unchanged when there are no neighbours.
    """
    out = base_scores.clone()
    if normalise == "l1":
        out[content] = _l1_normalised(out[content])
        neighbour_scores = [_l1_normalised(s) for s in neighbour_scores]
    elif normalise != "none":
        raise ValueError(f"unknown normalise {normalise!r}; valid: none, l1")
    if not neighbour_scores or lam == 0.0:
        return out
    weights = torch.cat([s / len(s) for s in neighbour_scores]) / len(neighbour_scores)  # (sum T_i,)
    pool = torch.cat(list(neighbour_embeddings))  # (sum T_i, d)
    own = embeddings[content]
    if centre is not None:
        own, pool = own - centre, pool - centre
    k = kernel_matrix(kernel, own, pool, kernel_params or KernelParams())  # (T0 content, sum T_i)
    term = lam * (k @ weights)  # (T0 content,)
    if record is not None:
        record(k, out[content], term)
    out[content] = out[content] + term
    return out


def _l1_normalised(scores: torch.Tensor) -> torch.Tensor:
    """``scores / sum |scores|`` (unchanged when all are 0)."""
    total = scores.abs().sum()
    return scores / total if bool(total > 0) else scores.clone()


@register_method(
    "lafa",
    summary="base gradient attribution smoothed over nearest-neighbour texts through a word-embedding kernel",
    paper="Zhang et al. 2022, LAFA, Eq. 4-7, Algorithm 1, Appendix D-E",
    signed="base",
    cost="base method x (1 + up to {max_neighbours} neighbours) with base scores cached per run",
)
class Lafa(AttributionMethod[LafaParams]):
    """Locally Aggregated Feature Attribution (Zhang et al. 2022, Eq. 4-7, Algorithm 1).

    Step I: the text's neighbours in the explained model's hidden space, at most ``M`` within the
    distance cut-off ``epsilon`` (Eq. 4; selected by the attribute stage as :meth:`requirements`
    asks, and given in the context). Step II: base attributions ``M(X_i)`` of the text and its
    neighbours (Eq. 3 for SimpleGrad), each computed once per corpus run (cached in the context's
    workspace). Step III: Eq. 6-7. Neighbours are explained for the same output as the text. A
    text with no neighbour keeps its base attribution and is counted in ``fallbacks``.
    """

    def __init__(self, params: LafaParams | None = None) -> None:
        super().__init__(params)
        self.base_method = get_method(self.params.base, self.params.base_params)

    @classmethod
    def scores_signed(cls, params: LafaParams) -> bool:
        """Signed when the base method's scores are (LAFA aggregates them over neighbours)."""
        return method_signed(params.base, params.base_params)

    @classmethod
    def requirements(cls, params: LafaParams) -> Requirements:
        """The neighbour search of Eq. 4 (``M``, cut-off quantile, filter, layer) and what the base method needs."""
        request = NeighbourRequest(
            params.max_neighbours, params.epsilon_quantile, params.neighbour_filter, params.layer
        )
        return replace(method_requirements(params.base, params.base_params), neighbours=request)

    def diagnostics(self, context: MethodContext) -> dict[str, float]:
        """``fallbacks`` (texts without neighbours), ``base_computations`` (base attributions computed) and the
        kernel's spread over the texts with neighbours: ``kernel_mean`` and ``kernel_sd`` (mean over texts of the
        mean and standard deviation of ``k(h, h_ik)`` over all piece pairs) and ``term_to_base_sd`` (mean over
        texts of the standard deviation over pieces of ``lam * E`` divided by that of ``M(X0)``: near 0, Eq. 6
        is a near-constant offset that cannot change the ranking)."""
        out = super().diagnostics(context) | {
            "base_computations": float(context.counter(self.name, "base_computations"))
        }
        spread = context.workspace(self.name).get("spread")
        if spread and spread["texts"]:
            n = spread["texts"]
            out |= {key: spread[key] / n for key in ("kernel_mean", "kernel_sd")}
            if spread["ratio_texts"]:
                out["term_to_base_sd"] = spread["term_to_base_sd"] / spread["ratio_texts"]
        return out

    def _record_spread(self, context: MethodContext) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None]:
        spread = context.workspace(self.name).setdefault(
            "spread", {"texts": 0, "kernel_mean": 0.0, "kernel_sd": 0.0, "term_to_base_sd": 0.0, "ratio_texts": 0}
        )

        def record(k: torch.Tensor, base: torch.Tensor, term: torch.Tensor) -> None:
            spread["texts"] += 1
            spread["kernel_mean"] += float(k.mean())
            spread["kernel_sd"] += float(k.std(unbiased=False))
            base_sd = float(base.std(unbiased=False))
            if base.numel() > 1 and base_sd > 0:
                spread["term_to_base_sd"] += float(term.std(unbiased=False)) / base_sd
                spread["ratio_texts"] += 1

        return record

    def base_scores(
        self, loaded: LoadedModel, wanted: Sequence[tuple[int, int]], batch_size: int, context: MethodContext
    ) -> dict[tuple[int, int], torch.Tensor]:
        """The run's cache of base scores by (position, target), filled with those of ``wanted`` not computed yet."""
        cache: dict[tuple[int, int], torch.Tensor] = context.workspace(self.name).setdefault("base_scores", {})
        missing = sorted({w for w in wanted if w not in cache}, key=lambda w: len(context.text(w[0])))
        pid = pad_id(loaded)
        for start in range(0, len(missing), batch_size):
            chunk = missing[start : start + batch_size]
            batch = collate(context.corpus, [pos for pos, _ in chunk], pid).to(loaded.device)
            targets = torch.tensor([t for _, t in chunk], device=loaded.device)
            scores = self.base_method.attribute_batch(loaded, batch, targets, context).detach()  # (batch, seq)
            for row, key in enumerate(chunk):
                cache[key] = scores[row, : len(context.text(key[0]))]
            context.count(self.name, "base_computations", len(chunk))
        return cache

    def attribute_batch(
        self, loaded: LoadedModel, batch: Batch, targets: torch.Tensor, context: MethodContext
    ) -> torch.Tensor:
        """Scores ``(batch, seq)`` of Eq. 6 for each row's target."""
        texts = context.batch_texts(batch, self.name)
        rows = [(int(pos), int(t)) for pos, t in zip(batch.indices, targets.tolist(), strict=True)]
        wanted = list(rows) + [(j, t) for pos, t in rows for j in context.neighbours.get(pos, ())]
        cache = self.base_scores(loaded, wanted, max(len(rows), 1), context)
        table = loaded.model.get_input_embeddings().weight
        centre = table.detach().mean(dim=0) if self.params.centre_embeddings else None  # (d,)
        record = self._record_spread(context)
        out = torch.zeros(batch.input_ids.shape, dtype=table.dtype, device=loaded.device)
        for r, ((pos, target), text) in enumerate(zip(rows, texts, strict=True)):
            ids = torch.tensor(text.input_ids, device=loaded.device)
            content = ~torch.tensor(text.special, device=loaded.device)
            n_scores, n_embeddings = [], []
            for j in context.neighbours.get(pos, ()):
                neighbour = context.text(j)
                keep = ~torch.tensor(neighbour.special, device=loaded.device)
                n_scores.append(cache[(j, target)][keep])
                n_embeddings.append(table[torch.tensor(neighbour.input_ids, device=loaded.device)[keep]].detach())
            if not n_scores:
                self.count_fallback(context)
            scores = lafa_aggregate(
                cache[(pos, target)],
                table[ids].detach(),
                content,
                n_scores,
                n_embeddings,
                lam=self.params.lam,
                kernel=self.params.kernel,
                kernel_params=self.params,
                centre=centre,
                normalise=self.params.normalise,
                record=record,
            )
            out[r, : len(text)] = scores
        return out
