"""Forward passes over perturbed texts, including the ``baseline`` (embedding) replacement.

Token-id policies (``mask``, ``pad``, ``unk``) write a token id into the removed positions and
``delete`` shortens the sequence; these run through the ordinary batched forward. The
``baseline`` policy replaces the removed token's *word embedding* by a baseline vector (the zero
vector, Integrated Gradients' usual baseline, Sundararajan et al. 2017) while the position and
segment embeddings stay in place: no vocabulary token plays "absent". Removed positions carry the
sentinel id :data:`BASELINE_ID` (-1) in ``EncodedText.input_ids``; :func:`predict_perturbed`
builds ``inputs_embeds`` for batches that hold it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from xattr.models.encoding import EncodedText, iter_batches
from xattr.models.forward import output_logits, pad_id
from xattr.models.loading import LoadedModel

#: Sentinel input id of a position whose word embedding is replaced by the baseline vector.
BASELINE_ID = -1

#: ``forward(texts) -> (n_texts, n_outputs)`` model outputs (logits or the regression value).
Forward = Callable[[Sequence[EncodedText]], np.ndarray]


@torch.inference_mode()
def predict_perturbed(
    loaded: LoadedModel,
    encoded: Sequence[EncodedText],
    *,
    batch_size: int = 32,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Model outputs for perturbed texts; positions holding :data:`BASELINE_ID` get a zero word embedding.

    Args:
        loaded: The model.
        encoded: Encoded (possibly perturbed) texts.
        batch_size: Texts per forward pass.
        progress: Optional callback ``(done, total)``.

    Returns:
        ``(n_texts, num_outputs)`` float64 array in input order.
    """
    out = np.zeros((len(encoded), loaded.num_outputs), dtype=np.float64)
    done = 0
    for batch in iter_batches(encoded, batch_size, pad_id(loaded)):
        b = batch.to(loaded.device)
        removed = b.input_ids == BASELINE_ID  # (batch, seq)
        if bool(removed.any()):
            embeds = loaded.model.get_input_embeddings()(b.input_ids.clamp(min=0))  # (batch, seq, hidden)
            embeds = embeds.masked_fill(removed.unsqueeze(-1), 0.0)
            output = loaded.model(inputs_embeds=embeds, **b.model_inputs())
        else:
            output = loaded.model(input_ids=b.input_ids, **b.model_inputs())
        logits = output_logits(loaded, output, b.attention_mask)
        out[list(batch.indices)] = logits.double().cpu().numpy()
        done += len(batch.indices)
        if progress is not None:
            progress(done, len(encoded))
    return out


def model_forward(
    loaded: LoadedModel, *, batch_size: int = 32, progress: Callable[[int, int], None] | None = None
) -> Forward:
    """A :data:`Forward` over ``loaded`` (batched, baseline-aware) for the metric functions."""

    def forward(texts: Sequence[EncodedText]) -> np.ndarray:
        return predict_perturbed(loaded, texts, batch_size=batch_size, progress=progress)

    return forward


def memoized(forward: Forward) -> Forward:
    """``forward`` with a cache keyed by each text's ids: the metrics share many variants.

    The unperturbed text is in every metric's block, and the most-important-first removals of
    AOPC and of the degradation test are the same texts; each distinct variant is run once.
    Hand-written because the key is the perturbed token sequence, not a Python object identity.
    """
    cache: dict[tuple[tuple[int, ...], tuple[int, ...]], np.ndarray] = {}

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
