"""Run an attribution method over a whole encoded corpus in padded, length-sorted batches."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from xattr.methods.base import AttributionMethod
from xattr.models.encoding import EncodedText, collate
from xattr.models.forward import pad_id
from xattr.models.loading import LoadedModel
from xattr.models.targets import span_output_indices


@dataclass(frozen=True)
class TokenAttribution:
    """Scores of one text for one explained output.

    Attributes:
        position: The text's position in the corpus.
        target: The explained output index.
        scores: ``(n_tokens,)`` float64 scores, special tokens included.
    """

    position: int
    target: int
    scores: np.ndarray


def attribute_corpus(
    method: AttributionMethod,
    loaded: LoadedModel,
    encoded: Sequence[EncodedText],
    targets: Sequence[Sequence[int]],
    *,
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
        batch_size: Rows per pass.
        progress: Optional callback ``(rows done, rows in all)``.

    Returns:
        One :class:`TokenAttribution` per (text, target), ordered by text then target.
    """
    if len(targets) != len(encoded):
        raise ValueError(f"{len(encoded)} texts but {len(targets)} target lists")
    rows = [(i, t) for i, ts in enumerate(targets) for t in ts]
    order = sorted(range(len(rows)), key=lambda r: len(encoded[rows[r][0]]))
    results: dict[int, TokenAttribution] = {}
    pid = pad_id(loaded)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        batch = collate(encoded, [rows[r][0] for r in chunk], pid).to(loaded.device)
        target_tensor = torch.tensor([rows[r][1] for r in chunk], device=loaded.device)
        if loaded.task == "question_answering":
            # A span's explanation is that of its start logit plus that of its end logit.
            starts, ends = span_output_indices(target_tensor, loaded.max_length)
            score_tensor = method.attribute_batch(loaded, batch, starts) + method.attribute_batch(loaded, batch, ends)
        else:
            score_tensor = method.attribute_batch(loaded, batch, target_tensor)
        scores = score_tensor.detach().double().cpu().numpy()
        for k, r in enumerate(chunk):
            position, target = rows[r]
            n = len(encoded[position])
            results[r] = TokenAttribution(position, target, scores[k, :n].copy())
        if progress is not None:
            progress(min(start + batch_size, len(order)), len(order))
    return [results[r] for r in range(len(rows))]
