"""The model forward the metric functions call, and a memo of it over perturbed texts.

Perturbed texts are run through :func:`xattr.models.forward.predict_logits`, which handles every
replacement policy of :mod:`xattr.models.replacement`: token ids as they are, and positions
holding :data:`~xattr.models.replacement.BASELINE_ID` with the zero word embedding.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from xattr.models.encoding import EncodedText
from xattr.models.forward import predict_logits
from xattr.models.loading import LoadedModel

#: ``forward(texts) -> (n_texts, n_outputs)`` model outputs (logits or the regression value).
Forward = Callable[[Sequence[EncodedText]], np.ndarray]


def model_forward(
    loaded: LoadedModel, *, batch_size: int = 32, progress: Callable[[int, int], None] | None = None
) -> Forward:
    """A :data:`Forward` over ``loaded`` (batched, baseline-aware) for the metric functions."""

    def forward(texts: Sequence[EncodedText]) -> np.ndarray:
        return predict_logits(loaded, texts, batch_size=batch_size, progress=progress)

    return forward


def memoized(forward: Forward, known: Sequence[tuple[EncodedText, np.ndarray]] = ()) -> Forward:
    """``forward`` with a cache keyed by each text's ids: the metrics share many variants.

    The unperturbed text is in every metric's block, and the most-important-first removals of
    AOPC and of the degradation test are the same texts; each distinct variant is run once.
    Hand-written because the key is the perturbed token sequence, not a Python object identity.

    Args:
        forward: The model forward.
        known: ``(text, outputs)`` pairs already predicted (the unperturbed corpus, from the
            ``predictions`` artifact): served from the cache, never run again.
    """
    cache: dict[tuple[tuple[int, ...], tuple[int, ...]], np.ndarray] = {
        (text.input_ids, text.token_type_ids): np.asarray(row, dtype=np.float64) for text, row in known
    }

    def cached(texts: Sequence[EncodedText]) -> np.ndarray:
        keys = [(t.input_ids, t.token_type_ids) for t in texts]
        missing: dict[tuple[tuple[int, ...], tuple[int, ...]], EncodedText] = {}
        for key, text in zip(keys, texts, strict=True):
            if key not in cache and key not in missing:
                missing[key] = text
        if missing:
            outputs = forward(list(missing.values()))
            for key, row in zip(missing, outputs, strict=True):
                cache[key] = row
        if not keys:
            return np.zeros((0, 0), dtype=np.float64)
        return np.stack([cache[key] for key in keys])

    return cached
