"""Batched, padded forward passes: predictions and mean-pooled hidden states."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from xattr.models.encoding import EncodedText, iter_batches
from xattr.models.loading import LoadedModel

#: Called after each batch with (texts done, texts in all).
Progress = Callable[[int, int], None]


def pad_id(loaded: LoadedModel) -> int:
    """The padding id of the model's tokenizer (0 when it has none)."""
    value = loaded.tokenizer.pad_token_id
    return int(value) if value is not None else 0


def output_logits(loaded: LoadedModel, output: object, attention_mask: torch.Tensor) -> torch.Tensor:
    """The model's outputs as one ``(batch, num_outputs)`` tensor, indexed by output (target) index.

    Sequence models: the logits (or the regression value). Extractive question answering: the
    start logits padded to ``loaded.max_length`` positions followed by the end logits padded the
    same way, so output ``p`` is the start logit of token ``p`` and output ``max_length + p`` the
    end logit of token ``p`` whatever the batch's padded width. Padding tokens and the positions
    beyond the batch width get the dtype's lowest value, so they are never predicted.

    Args:
        loaded: The model.
        output: The Hugging Face model output of one forward pass.
        attention_mask: ``(batch, seq)`` 1 for real tokens.
    """
    if loaded.task != "question_answering":
        return output.logits  # type: ignore[attr-defined,no-any-return]
    start = output.start_logits  # type: ignore[attr-defined]  # (batch, seq)
    end = output.end_logits  # type: ignore[attr-defined]  # (batch, seq)
    lowest = torch.finfo(start.dtype).min
    pad = loaded.max_length - start.shape[1]
    real = attention_mask.bool()
    parts = [torch.nn.functional.pad(x.masked_fill(~real, lowest), (0, pad), value=lowest) for x in (start, end)]
    return torch.cat(parts, dim=1)  # (batch, 2 * max_length)


@torch.inference_mode()
def predict_logits(
    loaded: LoadedModel,
    encoded: Sequence[EncodedText],
    *,
    batch_size: int = 32,
    progress: Progress | None = None,
) -> np.ndarray:
    """Model outputs (logits, or the regression value) for every text.

    Args:
        loaded: The model.
        encoded: Encoded texts.
        batch_size: Texts per forward pass.
        progress: Optional callback ``(done, total)``.

    Returns:
        ``(n_texts, num_outputs)`` float64 array in corpus order.
    """
    out = np.zeros((len(encoded), loaded.num_outputs), dtype=np.float64)
    done = 0
    for batch in iter_batches(encoded, batch_size, pad_id(loaded)):
        b = batch.to(loaded.device)
        output = loaded.model(input_ids=b.input_ids, **b.model_inputs())
        logits = output_logits(loaded, output, b.attention_mask)
        out[list(batch.indices)] = logits.double().cpu().numpy()
        done += len(batch.indices)
        if progress is not None:
            progress(done, len(encoded))
    return out


@torch.inference_mode()
def mean_pooled_hidden_states(
    loaded: LoadedModel,
    encoded: Sequence[EncodedText],
    *,
    layer: int,
    batch_size: int = 32,
    progress: Progress | None = None,
) -> np.ndarray:
    """Mean over real (non-padding) tokens of one layer's hidden states.

    Args:
        loaded: The model.
        encoded: Encoded texts.
        layer: Hidden-state index: 0 is the embedding output, ``num_layers`` the last layer,
            negative values count from the end.
        batch_size: Texts per forward pass.
        progress: Optional callback ``(done, total)``.

    Returns:
        ``(n_texts, hidden)`` float32 array in corpus order.

    Raises:
        ValueError: ``layer`` is outside ``-(num_layers+1) .. num_layers``.
    """
    n_states = loaded.num_layers + 1
    if not -n_states <= layer < n_states:
        raise ValueError(
            f"layer {layer} is out of range for a model with {loaded.num_layers} layers (0..{loaded.num_layers})"
        )
    hidden = int(loaded.model.config.hidden_size)
    out = np.zeros((len(encoded), hidden), dtype=np.float32)
    done = 0
    for batch in iter_batches(encoded, batch_size, pad_id(loaded)):
        b = batch.to(loaded.device)
        states = loaded.model(input_ids=b.input_ids, output_hidden_states=True, **b.model_inputs()).hidden_states
        h = states[layer]  # (batch, seq, hidden)
        mask = b.attention_mask.unsqueeze(-1).to(h.dtype)  # (batch, seq, 1)
        pooled = (h * mask).sum(dim=1) / mask.sum(dim=1)
        out[list(batch.indices)] = pooled.float().cpu().numpy()
        done += len(batch.indices)
        if progress is not None:
            progress(done, len(encoded))
    return out
