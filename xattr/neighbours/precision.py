"""Which layer finds good neighbours: neighbour precision against a category (LAFA Eq. 8).

``Precision = 1/M sum_j I(c(X_j) = c(X0))`` over the ``M`` nearest neighbours ``X_j`` of a text
``X0`` in one hidden layer, averaged over texts (LAFA Appendix D.2, which picks the layer with
the highest precision).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from xattr.models.encoding import EncodedText, iter_batches
from xattr.models.forward import pad_id
from xattr.models.loading import LoadedModel
from xattr.neighbours.index import build_index, nearest_neighbours


def neighbour_precision(vectors: np.ndarray, categories: Sequence[object], m: int) -> float:
    """Eq. 8 averaged over all texts, with exact L2 neighbours (the text itself excluded).

    Raises:
        ValueError: Fewer than two texts or a length mismatch.
    """
    if len(vectors) != len(categories):
        raise ValueError(f"{len(vectors)} vectors but {len(categories)} categories")
    if len(vectors) < 2:
        raise ValueError("neighbour precision needs at least two texts")
    _, ids = nearest_neighbours(build_index(vectors), vectors, m)
    cats = np.asarray([str(c) for c in categories], dtype=object)
    same = cats[ids] == cats[:, None]  # (n, m)
    return float(same.mean())


@torch.inference_mode()
def layer_precisions(
    loaded: LoadedModel,
    encoded: Sequence[EncodedText],
    categories: Sequence[object],
    *,
    m: int = 10,
    batch_size: int = 32,
    progress: Callable[[int, int], None] | None = None,
) -> dict[int, float]:
    """Neighbour precision (Eq. 8) of mean-pooled hidden states of every layer.

    One forward pass per batch yields every layer's states, so this costs one encoding pass.

    Returns:
        ``{layer: precision}`` for layers ``0..num_layers`` (0 is the embedding output).
    """
    layers = loaded.num_layers + 1
    hidden = int(loaded.model.config.hidden_size)
    pooled = np.zeros((layers, len(encoded), hidden), dtype=np.float32)
    done = 0
    for batch in iter_batches(encoded, batch_size, pad_id(loaded)):
        b = batch.to(loaded.device)
        states = loaded.model(input_ids=b.input_ids, output_hidden_states=True, **b.model_inputs()).hidden_states
        mask = b.attention_mask.unsqueeze(-1).float()  # (batch, seq, 1)
        for layer, h in enumerate(states):
            mean = (h.float() * mask).sum(1) / mask.sum(1)
            pooled[layer, list(batch.indices)] = mean.cpu().numpy()
        done += len(batch.indices)
        if progress is not None:
            progress(done, len(encoded))
    return {layer: neighbour_precision(pooled[layer], categories, m) for layer in range(layers)}
