"""Batched, padded forward passes: predictions and mean-pooled hidden states.

Also :func:`frozen_parameters`, which every gradient pass (the gradient and attention methods,
LRP) wraps around the model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import numpy as np
import torch

from xattr.models.encoding import Batch, EncodedText, iter_batches
from xattr.models.loading import LoadedModel
from xattr.models.replacement import BASELINE_ID

#: Called after each batch with (texts done, texts in all).
Progress = Callable[[int, int], None]


@contextmanager
def frozen_parameters(model: torch.nn.Module) -> Iterator[None]:
    """Turn off parameter gradients inside the block (about 1.4x faster backward passes).

    The previous ``requires_grad`` flags are restored on exit, also after an exception.
    """
    previous = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in previous:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in previous:
            p.requires_grad_(flag)


def gradient_autocast(loaded: LoadedModel) -> AbstractContextManager[object]:
    """Autocast to ``loaded.autocast_dtype`` for the block, or nothing when it is ``None`` (the default).

    Used around the forward and backward passes of the gradient methods only; inputs and the
    returned gradients stay in the parameters' dtype.
    """
    if loaded.autocast_dtype is None:
        return nullcontext()
    return torch.autocast(loaded.device.type, dtype=loaded.autocast_dtype)


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


def batched_rows(
    loaded: LoadedModel,
    encoded: Sequence[EncodedText],
    rows: Callable[[Batch], torch.Tensor],
    *,
    width: int,
    dtype: type[np.generic],
    batch_size: int,
    progress: Progress | None,
) -> np.ndarray:
    """One ``(width,)`` row per text from padded, length-sorted batches, in corpus order.

    Args:
        loaded: The model.
        encoded: Encoded texts.
        rows: Maps a batch on the model's device to its ``(batch, width)`` rows.
        width: Values per text.
        dtype: The array's dtype (rows are cast to it).
        batch_size: Texts per forward pass.
        progress: Optional callback ``(done, total)``.
    """
    out = np.zeros((len(encoded), width), dtype=dtype)

    def store(indices: tuple[int, ...], values: np.ndarray) -> None:
        out[list(indices)] = values

    pending = DeviceRows(store)
    done = 0
    for batch in iter_batches(encoded, batch_size, pad_id(loaded)):
        pending.add(batch.indices, rows(batch.to(loaded.device)))
        done += len(batch.indices)
        if progress is not None:
            progress(done, len(encoded))
    pending.flush()
    return out


class DeviceRows:
    """Batch results kept on their device and copied to the host together, not once per batch.

    A copy to the host waits for the device to finish, so copying each batch's result would stop
    the host from preparing the next batch while the GPU works. Results are queued here and copied
    when ``limit_bytes`` of them are waiting and at :meth:`flush`; on the CPU this changes nothing.

    Args:
        store: Called with ``(key, values)`` per queued result, in queue order, ``values`` the
            result as a numpy array.
        limit_bytes: Bytes queued on the device before they are copied (bounds device memory).
    """

    def __init__(self, store: Callable[[Any, np.ndarray], None], *, limit_bytes: int = 1 << 28) -> None:
        self.store = store
        self.limit_bytes = limit_bytes
        self.queued: list[tuple[Any, torch.Tensor]] = []
        self.queued_bytes = 0

    def add(self, key: Any, values: torch.Tensor) -> None:
        """Queue one result (detached); copies everything queued once ``limit_bytes`` is reached."""
        values = values.detach()
        self.queued.append((key, values))
        self.queued_bytes += values.numel() * values.element_size()
        if self.queued_bytes >= self.limit_bytes:
            self.flush()

    def flush(self) -> None:
        """Copy every queued result to the host and hand it to ``store``."""
        for key, values in self.queued:
            self.store(key, values.cpu().numpy())
        self.queued, self.queued_bytes = [], 0


def model_output(loaded: LoadedModel, batch: Batch) -> object:
    """The model's output on a batch; positions holding :data:`BASELINE_ID` get a zero word embedding.

    The baseline replacement (:mod:`xattr.models.replacement`) keeps the position and segment
    embeddings of a removed token and zeroes its word embedding only.
    """
    removed = batch.input_ids == BASELINE_ID  # (batch, seq)
    if bool(removed.any()):
        embeds = loaded.model.get_input_embeddings()(batch.input_ids.clamp(min=0))  # (batch, seq, hidden)
        embeds = embeds.masked_fill(removed.unsqueeze(-1), 0.0)
        return loaded.model(inputs_embeds=embeds, **batch.model_inputs())
    return loaded.model(input_ids=batch.input_ids, **batch.model_inputs())


@torch.inference_mode()
def predict_logits(
    loaded: LoadedModel,
    encoded: Sequence[EncodedText],
    *,
    batch_size: int = 32,
    progress: Progress | None = None,
) -> np.ndarray:
    """Model outputs (logits, or the regression value) for every text, perturbed texts included.

    Positions holding :data:`~xattr.models.replacement.BASELINE_ID` get a zero word embedding
    (see :func:`model_output`); every other id is looked up as usual.

    Args:
        loaded: The model.
        encoded: Encoded (possibly perturbed) texts.
        batch_size: Texts per forward pass.
        progress: Optional callback ``(done, total)``.

    Returns:
        ``(n_texts, num_outputs)`` float64 array in corpus order.
    """

    def logits(b: Batch) -> torch.Tensor:
        return output_logits(loaded, model_output(loaded, b), b.attention_mask).double()

    return batched_rows(
        loaded, encoded, logits, width=loaded.num_outputs, dtype=np.float64, batch_size=batch_size, progress=progress
    )


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
    return pooled_states_and_outputs(loaded, encoded, layer=layer, batch_size=batch_size, progress=progress)[0]


@torch.inference_mode()
def pooled_states_and_outputs(
    loaded: LoadedModel,
    encoded: Sequence[EncodedText],
    *,
    layer: int,
    batch_size: int = 32,
    progress: Progress | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One forward pass per batch giving both the mean-pooled hidden states of ``layer`` and the outputs.

    The outputs are those of :func:`predict_logits` on unperturbed texts (the same model call,
    which also keeps its hidden states), so the encode stage predicts the corpus in the pass
    that embeds it.

    Args:
        loaded: The model.
        encoded: Encoded (unperturbed) texts.
        layer: Hidden-state index: 0 is the embedding output, ``num_layers`` the last layer,
            negative values count from the end.
        batch_size: Texts per forward pass.
        progress: Optional callback ``(done, total)``.

    Returns:
        ``(n_texts, hidden)`` float32 pooled states and ``(n_texts, num_outputs)`` float64
        outputs, in corpus order.

    Raises:
        ValueError: ``layer`` is outside ``-(num_layers+1) .. num_layers``.
    """
    n_states = loaded.num_layers + 1
    if not -n_states <= layer < n_states:
        raise ValueError(
            f"layer {layer} is out of range for a model with {loaded.num_layers} layers (0..{loaded.num_layers})"
        )

    def pooled(b: Batch) -> torch.Tensor:
        output = loaded.model(input_ids=b.input_ids, output_hidden_states=True, **b.model_inputs())
        h = output.hidden_states[layer]  # (batch, seq, hidden)
        mask = b.attention_mask.unsqueeze(-1).to(h.dtype)  # (batch, seq, 1)
        states = ((h * mask).sum(dim=1) / mask.sum(dim=1)).float()  # (batch, hidden)
        # float32 -> float64 is exact, so the states come back bit for bit. (batch, hidden + num_outputs)
        return torch.cat([states.double(), output_logits(loaded, output, b.attention_mask).double()], dim=1)

    hidden = int(loaded.model.config.hidden_size)
    rows = batched_rows(
        loaded,
        encoded,
        pooled,
        width=hidden + loaded.num_outputs,
        dtype=np.float64,
        batch_size=batch_size,
        progress=progress,
    )
    return rows[:, :hidden].astype(np.float32), rows[:, hidden:]
