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

import numpy as np
import torch
from pydantic import Field, model_validator

from xattr.methods.base import AttributionMethod, get_method, method_requirements, method_signed, register_method
from xattr.methods.context import MethodContext, Requirements
from xattr.methods.lafa_kernels import KernelName, KernelParams, kernel_matrix
from xattr.models.encoding import Batch, EncodedCorpus, EncodedText, collate, text_lengths
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
    record: Callable[[dict[str, torch.Tensor]], None] | None = None,
) -> torch.Tensor:
    """Eq. 6-7 for one text: ``M_LAFA(X0)_t = M(X0)_t + lam * E(w_t; Xsim)``.

    ``E(w; Xsim) = 1/|Xsim| sum_i sum_k m_ik k(h, h_ik) / T_i`` over the neighbours' content
    (non-special) word pieces, ``T_i`` their count, ``h`` word-piece embeddings (layer 0). Special
    tokens of ``X0`` get no neighbour term. :func:`lafa_aggregate_batch` for one row.

    Variants (not the paper's): ``centre`` ``(d,)`` is subtracted from every embedding before the
    kernel; ``normalise="l1"`` divides ``M(X0)`` (over its content pieces) and each neighbour's
    scores by their sum of absolute values first. ``record``, when given, receives the spread
    diagnostics (:func:`lafa_aggregate_batch`).

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
    sizes = [len(s) for s in neighbour_scores]
    pool_of = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes, dtype=torch.long))
    d = embeddings.shape[-1]
    pool = torch.cat(list(neighbour_embeddings)) if sizes else embeddings.new_zeros(0, d)
    scores = torch.cat(list(neighbour_scores)) if sizes else base_scores.new_zeros(0)
    out = lafa_aggregate_batch(
        base_scores[None],
        embeddings[None],
        content[None],
        scores[None],
        pool[None],
        pool_of[None],
        torch.tensor([len(sizes)]),
        lam=lam,
        kernel=kernel,
        kernel_params=kernel_params,
        centre=centre,
        normalise=normalise,
        record=record,
    )
    return out[0]


def lafa_aggregate_batch(
    base_scores: torch.Tensor,
    embeddings: torch.Tensor,
    content: torch.Tensor,
    pool_scores: torch.Tensor,
    pool_embeddings: torch.Tensor,
    pool_of: torch.Tensor,
    neighbour_counts: torch.Tensor,
    *,
    lam: float,
    kernel: str,
    kernel_params: KernelParams | None = None,
    centre: torch.Tensor | None = None,
    normalise: str = "none",
    record: Callable[[dict[str, torch.Tensor]], None] | None = None,
) -> torch.Tensor:
    """Eq. 6-7 (:func:`lafa_aggregate`) for a batch of texts at once.

    Written with padded tensors and one batched kernel instead of a loop over texts and their
    neighbours: per text that loop made ~50 small tensor operations, which cost ~15x the base
    attribution's backward pass on a corpus of short texts (issue 19's profile).

    Args:
        base_scores: ``(B, S)`` base attributions ``M(X0)`` (anything past a text's length).
        embeddings: ``(B, S, d)`` word-piece embeddings of the explained texts.
        content: ``(B, S)`` bool, their content (non-special, non-padding) pieces.
        pool_scores: ``(B, P)`` base scores of each row's neighbours' content pieces, one
            neighbour after another (right-padded).
        pool_embeddings: ``(B, P, d)`` their embeddings.
        pool_of: ``(B, P)`` long: which of the row's neighbours (0-based) each piece belongs to,
            ``-1`` for padding.
        neighbour_counts: ``(B,)`` neighbours per row (``|Xsim|``; a row without any keeps its
            base attribution).
        lam, kernel, kernel_params, centre, normalise: As :func:`lafa_aggregate`.
        record: Called once with, per row that has neighbours (``lam != 0``), the mean and
            population SD of the kernel over its (content piece, neighbour piece) pairs
            (``kernel_mean``, ``kernel_sd``), the SDs over its content pieces of the base scores
            (after ``normalise``) and of the neighbour term ``lam * E`` (``base_sd``, ``term_sd``),
            and its content pieces (``pieces``).

    Returns:
        ``(B, S)`` smoothed scores.
    """
    if normalise not in ("none", "l1"):
        raise ValueError(f"unknown normalise {normalise!r}; valid: none, l1")
    rows, m_max = base_scores.shape[0], int(neighbour_counts.max()) if len(neighbour_counts) else 0
    real = pool_of >= 0
    slot = pool_of.clamp_min(0)
    # Per (row, neighbour): content pieces T_i and, for "l1", the sum of |scores|.
    counts = torch.zeros(rows, max(m_max, 1), dtype=base_scores.dtype, device=base_scores.device)
    counts.scatter_add_(1, slot, real.to(base_scores.dtype))
    out = base_scores.clone()
    pool_scores = torch.where(real, pool_scores, 0.0)
    if normalise == "l1":
        own = torch.where(content, out, 0.0).abs().sum(dim=1, keepdim=True)
        out = torch.where(content & (own > 0), out / own.clamp_min(torch.finfo(out.dtype).tiny), out)
        sums = torch.zeros_like(counts).scatter_add_(1, slot, pool_scores.abs())
        total = sums.gather(1, slot)
        pool_scores = torch.where(total > 0, pool_scores / total.clamp_min(torch.finfo(out.dtype).tiny), pool_scores)
    active = (neighbour_counts > 0) & (lam != 0.0)
    if not bool(active.any()) or pool_scores.shape[1] == 0:
        return out
    n = neighbour_counts.to(base_scores.dtype).clamp_min(1)[:, None]
    weights = torch.where(real, pool_scores / counts.gather(1, slot).clamp_min(1) / n, 0.0)  # (B, P)
    own_embeddings, pool = embeddings, pool_embeddings
    if centre is not None:
        own_embeddings, pool = own_embeddings - centre, pool - centre
    k = kernel_matrix(kernel, own_embeddings, pool, kernel_params or KernelParams())  # (B, S, P), padding included
    term = lam * torch.bmm(k, weights[:, :, None])[:, :, 0]  # (B, S)
    use = content & active[:, None]
    if record is not None:
        record(_spread(k, out, term, content & active[:, None], real))
    return torch.where(use, out + term, out)


def _spread(
    k: torch.Tensor, base: torch.Tensor, term: torch.Tensor, content: torch.Tensor, real: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Per row with content pieces and neighbour pieces: the mean and population SD of the kernel over its
    (content piece, neighbour piece) pairs, and the SDs over its content pieces of the base scores and the
    neighbour term (sums in float64; ``real`` leaves the padding pieces out)."""
    pool = real.to(k.dtype)[:, :, None]  # (B, P, 1)
    own = content.to(torch.float64)
    n_pairs = own.sum(dim=1) * pool[:, :, 0].to(torch.float64).sum(dim=1)
    rows = n_pairs > 0
    k_sum = (torch.bmm(k, pool)[:, :, 0].to(torch.float64) * own).sum(dim=1)
    k_squares = (torch.bmm(k * k, pool)[:, :, 0].to(torch.float64) * own).sum(dim=1)
    pieces = own.sum(dim=1)
    k_mean = k_sum[rows] / n_pairs[rows]
    k_sd = (k_squares[rows] / n_pairs[rows] - k_mean.pow(2)).clamp_min(0).sqrt()

    def sd(x: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.float64)[rows]
        w, n = own[rows], pieces[rows]
        mean = (x * w).sum(dim=1) / n
        return ((x - mean[:, None]).pow(2) * w).sum(dim=1) / n

    return {
        "kernel_mean": k_mean,
        "kernel_sd": k_sd,
        "base_sd": sd(base).sqrt(),
        "term_sd": sd(term).sqrt(),
        "pieces": pieces[rows],
    }


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
        """The neighbour search of Eq. 4 (``M``, cut-off quantile, filter, layer), what the base method needs,
        and the base method itself (whose stored attributions a run may give)."""
        request = NeighbourRequest(
            params.max_neighbours, params.epsilon_quantile, params.neighbour_filter, params.layer
        )
        base = (params.base, dict(params.base_params))
        return replace(method_requirements(params.base, params.base_params), neighbours=request, base=base)

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

    def _record_spread(self, context: MethodContext) -> Callable[[dict[str, torch.Tensor]], None]:
        spread = context.workspace(self.name).setdefault(
            "spread", {"texts": 0, "kernel_mean": 0.0, "kernel_sd": 0.0, "term_to_base_sd": 0.0, "ratio_texts": 0}
        )

        def record(stats: dict[str, torch.Tensor]) -> None:
            spread["texts"] += len(stats["kernel_mean"])
            spread["kernel_mean"] += float(stats["kernel_mean"].sum())
            spread["kernel_sd"] += float(stats["kernel_sd"].sum())
            ratio = (stats["pieces"] > 1) & (stats["base_sd"] > 0)
            spread["term_to_base_sd"] += float((stats["term_sd"][ratio] / stats["base_sd"][ratio]).sum())
            spread["ratio_texts"] += int(ratio.sum())

        return record

    def base_scores(
        self, loaded: LoadedModel, wanted: Sequence[tuple[int, int]], batch_size: int, context: MethodContext
    ) -> dict[tuple[int, int], torch.Tensor]:
        """The run's cache of base scores by (position, target), filled with those of ``wanted`` not computed yet.

        Scores the context holds already (``context.base_scores``: the base method's stored
        attributions of the corpus) are taken from there, not computed again.
        """
        cache: dict[tuple[int, int], torch.Tensor] = context.workspace(self.name).setdefault("base_scores", {})
        stored = context.base_scores
        unknown = {w for w in wanted if w not in cache}
        for key in [w for w in unknown if w in stored]:
            cache[key] = stored[key].to(loaded.device)
            unknown.discard(key)
        lengths = text_lengths(context.corpus, sorted({pos for pos, _ in unknown}))
        missing = sorted(unknown, key=lambda w: (lengths[w[0]], w))
        pid = pad_id(loaded)
        for start in range(0, len(missing), batch_size):
            chunk = missing[start : start + batch_size]
            batch = collate(context.corpus, [pos for pos, _ in chunk], pid).to(loaded.device)
            targets = torch.tensor([t for _, t in chunk], device=loaded.device)
            scores = self.base_method.attribute_batch(loaded, batch, targets, context).detach()  # (batch, seq)
            for row, key in enumerate(chunk):
                cache[key] = scores[row, : lengths[key[0]]]
            context.count(self.name, "base_computations", len(chunk))
        return cache

    def attribute_batch(
        self, loaded: LoadedModel, batch: Batch, targets: torch.Tensor, context: MethodContext
    ) -> torch.Tensor:
        """Scores ``(batch, seq)`` of Eq. 6 for each row's target (:func:`lafa_aggregate_batch`)."""
        texts = context.batch_texts(batch, self.name)
        rows = [(int(pos), int(t)) for pos, t in zip(batch.indices, targets.tolist(), strict=True)]
        neighbours = [tuple(context.neighbours.get(pos, ())) for pos, _ in rows]
        pairs = [(j, t) for (_, t), near in zip(rows, neighbours, strict=True) for j in near]
        cache = self.base_scores(loaded, rows + pairs, max(len(rows), 1), context)
        self.count_fallback(context, sum(not near for near in neighbours))
        table = loaded.model.get_input_embeddings().weight.detach()
        device, width = loaded.device, batch.input_ids.shape[1]
        base = torch.zeros(batch.input_ids.shape, dtype=table.dtype, device=device)
        special = np.ones(batch.input_ids.shape, dtype=np.bool_)
        for r, (key, text) in enumerate(zip(rows, texts, strict=True)):
            base[r, : len(text)] = cache[key]
            special[r, : len(text)] = text.special
        content = ~torch.from_numpy(special).to(device)
        # The neighbours' content pieces, row after row, padded to the row with the most.
        ids, piece_special, lengths = _pieces(context.corpus, [j for j, _ in pairs])
        scores = torch.cat([cache[key] for key in pairs]) if pairs else base.new_zeros(0)
        keep = torch.from_numpy(~piece_special).to(device)
        pair_row = np.repeat(np.arange(len(rows)), [len(near) for near in neighbours])
        pair_slot = np.concatenate([np.arange(len(near)) for near in neighbours]) if pairs else pair_row
        of_piece = np.repeat(np.arange(len(pairs)), lengths)[~piece_special]
        row_of = torch.from_numpy(pair_row[of_piece]).to(device)
        per_row = np.bincount(pair_row[of_piece], minlength=len(rows))
        first = np.concatenate([[0], np.cumsum(per_row)[:-1]])
        column = torch.from_numpy(np.arange(len(of_piece)) - first[pair_row[of_piece]]).to(device)
        size = max(int(per_row.max()) if len(per_row) else 0, 1)
        pool_scores = base.new_zeros(len(rows), size)
        pool_scores[row_of, column] = scores[keep]
        pool_ids = torch.zeros(len(rows), size, dtype=torch.long, device=device)
        pool_ids[row_of, column] = torch.from_numpy(ids[~piece_special]).to(device)
        pool_of = torch.full((len(rows), size), -1, dtype=torch.long, device=device)
        pool_of[row_of, column] = torch.from_numpy(pair_slot[of_piece]).to(device)
        centre = table.mean(dim=0) if self.params.centre_embeddings else None  # (d,)
        out = lafa_aggregate_batch(
            base,
            table[batch.input_ids],
            content,
            pool_scores,
            table[pool_ids],
            pool_of,
            torch.tensor([len(near) for near in neighbours], device=device),
            lam=self.params.lam,
            kernel=self.params.kernel,
            kernel_params=self.params,
            centre=centre,
            normalise=self.params.normalise,
            record=self._record_spread(context),
        )
        return out[:, :width]


def _pieces(corpus: Sequence[EncodedText], positions: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Token ids, special flags and lengths of the texts at ``positions``, one text after another."""
    if isinstance(corpus, EncodedCorpus):
        rows = corpus.token_rows(positions)
        lengths = corpus.lengths[corpus.rows_of(positions)]
        return corpus.columns["input_ids"][rows].astype(np.int64), corpus.columns["special"][rows], lengths
    texts = [corpus[p] for p in positions]
    ids = np.fromiter((i for t in texts for i in t.input_ids), np.int64)
    special = np.fromiter((f for t in texts for f in t.special), np.bool_)
    return ids, special, np.fromiter((len(t) for t in texts), np.int64, len(texts))
