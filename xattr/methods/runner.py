"""Run an attribution method over a whole encoded corpus in padded, length-sorted batches."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from xattr.ldav.vectors import ldav_vectors_for
from xattr.methods.base import AttributionMethod
from xattr.methods.context import MethodContext
from xattr.models.encoding import EncodedCorpus, EncodedText, collate, text_lengths
from xattr.models.forward import DeviceRows, pad_id
from xattr.models.loading import LoadedModel
from xattr.models.targets import span_output_indices
from xattr.types import TokenAttribution


def run_context(
    method: AttributionMethod[Any], loaded: LoadedModel, encoded: Sequence[EncodedText], context: MethodContext | None
) -> MethodContext:
    """The context a run of ``method`` over ``encoded`` uses, checked against the method's requirements.

    No context means one holding the corpus only; a context without a corpus gets ``encoded``; LDAV
    vectors missing from it are read from the model (:func:`~xattr.ldav.vectors.ldav_vectors_for`).
    The returned context shares the given one's ``scratch``, so ``method.diagnostics(context)``
    reads the run's counters from either.

    Raises:
        ValueError: The context's corpus is not ``encoded`` (another length), or it lacks neighbours
            or head masks the method needs (the method and the resources are named).
    """
    context = context if context is not None else MethodContext(corpus=encoded)
    if not context.corpus:
        context = replace(context, corpus=encoded)
    elif len(context.corpus) != len(encoded):
        raise ValueError(
            f"the context holds a corpus of {len(context.corpus)} texts, but {len(encoded)} are attributed"
        )
    requirements = method.requirements(method.params)
    if requirements.ldav_vectors and context.ldav_vectors is None:
        context = replace(context, ldav_vectors=ldav_vectors_for(loaded))
    missing = requirements.missing_from(context)
    if missing:
        raise ValueError(f"{method.name} needs {' and '.join(missing)} in its MethodContext")
    return context


def attribute_corpus(
    method: AttributionMethod[Any],
    loaded: LoadedModel,
    encoded: Sequence[EncodedText],
    targets: Sequence[Sequence[int]],
    *,
    context: MethodContext | None = None,
    batch_size: int = 32,
    progress: Callable[[int, int], None] | None = None,
) -> list[TokenAttribution]:
    """Attribute every (text, target) pair.

    Pairs are sorted by length and padded per batch; a multi-label text with several targets
    gets one row (one backward pass) per target, so each attribution is the gradient of exactly
    one output. Extractive QA targets are answer spans (:func:`xattr.models.targets.span_target`): the
    method explains the start logit and the end logit separately and the row's scores are their sum.

    Args:
        method: The attribution method.
        loaded: The model.
        encoded: The encoded corpus.
        targets: Per text, the output indices to explain.
        context: The run's resources (see :func:`run_context`); afterwards
            ``method.diagnostics(context)`` reports what the run did.
        batch_size: Rows per pass.
        progress: Optional callback ``(rows done, rows in all)``.

    Returns:
        One :class:`TokenAttribution` per (text, target), ordered by text then target.

    Raises:
        ValueError: Target lists and texts differ in number, or the context lacks what the method
            needs (see :func:`run_context`).
    """
    if len(targets) != len(encoded):
        raise ValueError(f"{len(encoded)} texts but {len(targets)} target lists")
    context = run_context(method, loaded, encoded, context)
    # A corpus held in part (one shard's texts) can only be attributed where it is held: look there,
    # not at every position of the corpus (a shard of a million-text corpus has ~1% of them).
    candidates = encoded.positions.tolist() if isinstance(encoded, EncodedCorpus) else range(len(targets))
    rows = [(i, t) for i in candidates for t in targets[i]]
    if len(rows) != sum(map(len, targets)):  # a target for a text the corpus does not hold
        held = set(candidates)
        missing = next(i for i, ts in enumerate(targets) if ts and i not in held)
        encoded[missing]  # raises the IndexError that names the position
    lengths = text_lengths(encoded, sorted({i for i, _ in rows}))
    order = sorted(range(len(rows)), key=lambda r: lengths[rows[r][0]])
    results: dict[int, TokenAttribution] = {}

    def store(chunk: list[int], scores: np.ndarray) -> None:
        for k, r in enumerate(chunk):
            position, target = rows[r]
            n = lengths[position]
            results[r] = TokenAttribution(position, target, scores[k, :n].copy())

    pending = DeviceRows(store)
    pid = pad_id(loaded)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        batch = collate(encoded, [rows[r][0] for r in chunk], pid).to(loaded.device)
        target_tensor = torch.tensor([rows[r][1] for r in chunk], device=loaded.device)
        if loaded.task == "question_answering":
            # A span's explanation is that of its start logit plus that of its end logit.
            starts, ends = span_output_indices(target_tensor, loaded.max_length)
            score_tensor = method.attribute_batch(loaded, batch, starts, context) + method.attribute_batch(
                loaded, batch, ends, context
            )
        else:
            score_tensor = method.attribute_batch(loaded, batch, target_tensor, context)
        pending.add(chunk, score_tensor.detach().double())
        if progress is not None:
            progress(min(start + batch_size, len(order)), len(order))
    pending.flush()
    return [results[r] for r in range(len(rows))]


def attribution_table(
    doc_ids: Sequence[str] | pa.Array,
    encoded: Sequence[EncodedText],
    tokenizer: Any,
    results: Sequence[TokenAttribution],
    label: str,
) -> pa.Table:
    """The ``token_attributions`` table: one row per token of each explained (text, target).

    Built column by column from NumPy buffers (no Python object per token: a corpus of millions
    of tokens would otherwise spend most of its post-processing in list building): every per-token
    field is one flat array over all results, token strings come from one vocabulary lookup of the
    distinct ids, and the doc ids from one ``take`` of the id column.

    Args:
        doc_ids: Document id per corpus position (a sequence or an Arrow string array).
        encoded: The encoded corpus (``results`` index it by position).
        tokenizer: The model's tokenizer (token strings).
        results: The attributions (:func:`attribute_corpus`).
        label: The method's label (the ``method`` column).

    Returns:
        ``doc_id, method, target, token_index, token, word_index, char_start, char_end, score``,
        in ``results`` order.
    """
    if not isinstance(encoded, EncodedCorpus):
        held = sorted({r.position for r in results})
        encoded = EncodedCorpus.from_texts([encoded[p] for p in held], np.asarray(held, np.int64), len(encoded))
    tokens = encoded.token_rows([r.position for r in results])
    lengths = np.fromiter((encoded.length(r.position) for r in results), np.int64, len(results))
    total = int(lengths.sum())
    ids = encoded.columns["input_ids"][tokens].astype(np.int64)
    distinct, inverse = np.unique(ids, return_inverse=True)
    vocabulary = pa.array(tokenizer.convert_ids_to_tokens(distinct.tolist()), pa.string())
    positions = np.fromiter((r.position for r in results), np.int64, len(results))
    row_of_token = np.repeat(np.arange(len(results)), lengths)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64) if len(results) else lengths
    targets = np.fromiter((r.target for r in results), np.int32, len(results))
    scores = [np.asarray(r.scores) for r in results]
    return pa.table(
        {
            "doc_id": _id_array(doc_ids).take(pa.array(positions[row_of_token])),
            "method": pa.array([label], pa.string()).take(pa.array(np.zeros(total, np.int64))),
            "target": pa.array(targets[row_of_token], pa.int32()),
            "token_index": pa.array((np.arange(total) - starts[row_of_token]).astype(np.int32), pa.int32()),
            "token": vocabulary.take(pa.array(inverse.reshape(-1))),
            "word_index": pa.array(encoded.columns["word_index"][tokens], pa.int32()),
            "char_start": pa.array(encoded.columns["char_start"][tokens], pa.int32()),
            "char_end": pa.array(encoded.columns["char_end"][tokens], pa.int32()),
            "score": pa.array(np.concatenate(scores).astype(np.float32) if scores else [], pa.float32()),
        }
    )


def _id_array(doc_ids: Sequence[str] | pa.Array) -> pa.Array:
    """The document ids as an Arrow string array (taken from, not copied, when they already are one)."""
    if isinstance(doc_ids, pa.ChunkedArray):
        doc_ids = doc_ids.combine_chunks()
    if isinstance(doc_ids, pa.Array):
        return doc_ids.cast(pa.string())
    return pa.array(list(doc_ids), pa.string())
