"""LAFA: Locally Aggregated Feature Attribution (Zhang et al. 2022).

A text's base attribution (any gradient method) is smoothed with the base attributions of its
nearest neighbours in a hidden layer of the explained model itself (Eq. 4), aggregated through a
kernel between word-piece embeddings (Eq. 6-7, Algorithm 1). In a corpus run every neighbour's
base attribution is computed once and cached: a text explained later, or serving as a neighbour
again, reuses it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from pydantic import Field, model_validator

from xattr.methods.base import AttributionMethod, MethodParams, get_method, register_method
from xattr.methods.lafa_kernels import KernelName, KernelParams, kernel_matrix
from xattr.models.encoding import Batch, EncodedText, collate
from xattr.models.forward import pad_id
from xattr.models.loading import LoadedModel
from xattr.neighbours.selection import NeighbourFilter, NeighbourRequest


class LafaParams(MethodParams):
    """Parameters of :class:`Lafa` (defaults: LAFA Appendix A Case I and Appendix D-E)."""

    base: str = Field("simple_grad", description="base gradient method (registry name)")
    base_params: dict[str, Any] = Field(default_factory=dict, description="parameters of the base method")
    lam: float = Field(1.0, ge=0.0, description="lambda of Eq. 6: weight of the neighbours' term")
    kernel: KernelName = Field("cosine", description="rbf, cubic, cosine, laplacian, clipped_l2, indicator")
    rbf_length: float = Field(2.0, gt=0.0, description="l of the RBF kernel")
    cubic_gamma: float = Field(7.0, description="gamma of the cubic kernel")
    cubic_c0: float = Field(0.0, description="c0 of the cubic kernel")
    cubic_degree: int = Field(3, ge=1, description="d of the cubic kernel")
    laplacian_length: float = Field(2.0, gt=0.0, description="l of the Laplacian kernel")
    clip_low: float = Field(0.3, gt=0.0, description="lower clip of the clipped-L2 kernel")
    clip_high: float = Field(3.0, gt=0.0, description="upper clip of the clipped-L2 kernel")
    max_neighbours: int = Field(10, ge=1, description="M: at most this many neighbours")
    epsilon_quantile: float | None = Field(
        0.05, gt=0.0, le=1.0, description="cut-off epsilon as this quantile of sampled pairwise distances"
    )
    neighbour_filter: NeighbourFilter = Field(
        "none", description="none, label or prediction: same-class neighbours only"
    )
    layer: int | None = Field(None, description="hidden layer the neighbour index must use (None: the flow's)")

    @model_validator(mode="after")
    def _valid_base(self) -> LafaParams:
        if self.base == "lafa":
            raise ValueError("LAFA cannot be its own base method")
        get_method(self.base, self.base_params)
        if self.clip_low >= self.clip_high:
            raise ValueError("clip_low must be below clip_high")
        return self

    def kernel_params(self) -> KernelParams:
        return KernelParams(
            self.rbf_length,
            self.cubic_gamma,
            self.cubic_c0,
            self.cubic_degree,
            self.laplacian_length,
            self.clip_low,
            self.clip_high,
        )


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
) -> torch.Tensor:
    """Eq. 6-7: ``M_LAFA(X0)_t = M(X0)_t + lam * E(w_t; Xsim)``.

    ``E(w; Xsim) = 1/|Xsim| sum_i sum_k m_ik k(h, h_ik) / T_i`` over the neighbours' content
    (non-special) word pieces, ``T_i`` their count, ``h`` word-piece embeddings (layer 0). Special
    tokens of ``X0`` get no neighbour term.

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
    if not neighbour_scores or lam == 0.0:
        return base_scores.clone()
    weights = torch.cat([s / len(s) for s in neighbour_scores]) / len(neighbour_scores)  # (sum T_i,)
    pool = torch.cat(list(neighbour_embeddings))  # (sum T_i, d)
    k = kernel_matrix(kernel, embeddings[content], pool, kernel_params or KernelParams())  # (T0 content, sum T_i)
    out = base_scores.clone()
    out[content] = out[content] + lam * (k @ weights)
    return out


@register_method
class Lafa(AttributionMethod):
    """Locally Aggregated Feature Attribution (Zhang et al. 2022, Eq. 4-7, Algorithm 1).

    Step I: the text's neighbours in the explained model's hidden space, at most ``M`` within the
    distance cut-off ``epsilon`` (Eq. 4; chosen by the attribute stage through
    :meth:`neighbour_request`). Step II: base attributions ``M(X_i)`` of the text and its
    neighbours (Eq. 3 for SimpleGrad), each computed once per corpus run. Step III: Eq. 6-7.
    Neighbours are explained for the same output as the text. A text with no neighbour keeps its
    base attribution and is counted in ``fallbacks``.
    """

    name = "lafa"
    summary = "base gradient attribution smoothed over nearest-neighbour texts through a word-embedding kernel"
    paper = "Zhang et al. 2022, LAFA, Eq. 4-7, Algorithm 1, Appendix D-E"
    Params = LafaParams
    uses_neighbours = True

    def __init__(self, params: MethodParams | None = None) -> None:
        super().__init__(params)
        p: LafaParams = self.params  # type: ignore[assignment]
        self.base_method = get_method(p.base, p.base_params)
        self._cache: dict[tuple[int, int], torch.Tensor] = {}
        self.base_computations = 0

    def bind_corpus(
        self, encoded: Sequence[EncodedText], neighbours: Mapping[int, Sequence[int]] | None = None
    ) -> None:
        """Bind corpus and neighbours (also for the base method) and clear the score cache."""
        super().bind_corpus(encoded, neighbours)
        self.base_method.bind_corpus(encoded, neighbours)
        self._cache.clear()
        self.base_computations = 0

    def neighbour_request(self) -> NeighbourRequest:
        """``M``, the cut-off quantile, the filter and the layer asked of the neighbour search."""
        p: LafaParams = self.params  # type: ignore[assignment]
        return NeighbourRequest(p.max_neighbours, p.epsilon_quantile, p.neighbour_filter, p.layer)

    def _base_scores(self, loaded: LoadedModel, wanted: Sequence[tuple[int, int]], batch_size: int) -> None:
        """Fill the cache with base scores of (position, target) pairs not computed yet."""
        missing = sorted({w for w in wanted if w not in self._cache}, key=lambda w: len(self._corpus[w[0]]))
        pid = pad_id(loaded)
        for start in range(0, len(missing), batch_size):
            chunk = missing[start : start + batch_size]
            batch = collate(self._corpus, [pos for pos, _ in chunk], pid).to(loaded.device)
            targets = torch.tensor([t for _, t in chunk], device=loaded.device)
            scores = self.base_method.attribute_batch(loaded, batch, targets).detach()  # (batch, seq)
            for row, key in enumerate(chunk):
                self._cache[key] = scores[row, : len(self._corpus[key[0]])]
            self.base_computations += len(chunk)

    def attribute_batch(self, loaded: LoadedModel, batch: Batch, targets: torch.Tensor) -> torch.Tensor:
        """Scores ``(batch, seq)`` of Eq. 6 for each row's target."""
        if not self._corpus:
            raise ValueError("lafa needs the corpus and its neighbours: call bind_corpus(encoded, neighbours) first")
        p: LafaParams = self.params  # type: ignore[assignment]
        rows = [(int(pos), int(t)) for pos, t in zip(batch.indices, targets.tolist(), strict=True)]
        wanted = list(rows) + [(j, t) for pos, t in rows for j in self._neighbours.get(pos, ())]
        self._base_scores(loaded, wanted, max(len(rows), 1))
        table = loaded.model.get_input_embeddings().weight
        out = torch.zeros(batch.input_ids.shape, dtype=table.dtype, device=loaded.device)
        for r, (pos, target) in enumerate(rows):
            text = self._corpus[pos]
            ids = torch.tensor(text.input_ids, device=loaded.device)
            content = ~torch.tensor(text.special, device=loaded.device)
            n_scores, n_embeddings = [], []
            for j in self._neighbours.get(pos, ()):
                neighbour = self._corpus[j]
                keep = ~torch.tensor(neighbour.special, device=loaded.device)
                n_scores.append(self._cache[(j, target)][keep])
                n_embeddings.append(table[torch.tensor(neighbour.input_ids, device=loaded.device)[keep]].detach())
            if not n_scores:
                self.fallbacks += 1
            scores = lafa_aggregate(
                self._cache[(pos, target)],
                table[ids].detach(),
                content,
                n_scores,
                n_embeddings,
                lam=p.lam,
                kernel=p.kernel,
                kernel_params=p.kernel_params(),
            )
            out[r, : len(text)] = scores
        return out
