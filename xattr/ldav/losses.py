"""LDAV training objective (Section 3.1): ``L = L1 + L2 - L3``.

``L1`` is the classifier's cross-entropy; ``L2`` (Eq. 2) pulls the mean-pooled input word
embeddings of a text towards the activation vector of its (predicted) class; ``L3`` (Eq. 3)
pushes the class vectors apart. For sentence pairs (Section 4.5) the text vector is the
element-wise product of the two segments' mean-pooled word embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch.nn import functional as F

__all__ = [
    "Distance",
    "LdavLossTerms",
    "class_vector_separation",
    "ldav_loss_terms",
    "pooled_input_embeddings",
    "sentence_vector_distance",
]

#: Distance of ``L2`` between a text vector and a class vector (Appendix C: cosine is the default).
Distance = Literal["cosine", "euclidean"]


def pooled_input_embeddings(
    embeddings: torch.Tensor, content: torch.Tensor, segments: torch.Tensor | None = None
) -> torch.Tensor:
    """The text vector ``x_hat`` of Eq. 2: the mean of the content tokens' word embeddings.

    Special tokens and padding are excluded (``content`` is ``False`` there): they are the same
    for every text and would only shift every text vector by a constant.

    Args:
        embeddings: ``(batch, seq, hidden)`` input word embeddings ``x_1..x_l``.
        content: ``(batch, seq)`` bool, ``True`` for real, non-special tokens.
        segments: ``(batch, seq)`` 0 for the first text, 1 for the pair text (any value at
            non-content positions), or ``None`` for single texts. With segments, the result is
            Section 4.5's ``x_hat(p) * x_hat(h)`` (element-wise product of the segment means).

    Returns:
        ``(batch, hidden)`` text vectors.

    Raises:
        ValueError: If a row has no content token (or, for pairs, a segment has none).
    """
    if segments is None:
        return _masked_mean(embeddings, content)
    first = _masked_mean(embeddings, content & (segments == 0))  # (batch, hidden)
    second = _masked_mean(embeddings, content & (segments == 1))  # (batch, hidden)
    return first * second


def _masked_mean(embeddings: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    counts = mask.sum(dim=1)  # (batch,)
    if bool((counts == 0).any()):
        row = int(torch.nonzero(counts == 0)[0, 0])
        raise ValueError(f"batch row {row} has no content token to pool (empty text or segment)")
    weights = mask.to(embeddings.dtype).unsqueeze(-1)  # (batch, seq, 1)
    return (embeddings * weights).sum(dim=1) / counts.to(embeddings.dtype).unsqueeze(-1)


def sentence_vector_distance(pooled: torch.Tensor, vectors: torch.Tensor, distance: Distance) -> torch.Tensor:
    """Per row, ``1 - cos(x_hat, z)`` (Eq. 2) or the Euclidean distance ``||x_hat - z||`` (Appendix C).

    Args:
        pooled: ``(batch, hidden)`` text vectors.
        vectors: ``(batch, hidden)`` the class vector chosen for each row.
        distance: ``"cosine"`` or ``"euclidean"``.

    Returns:
        ``(batch,)`` distances.
    """
    if distance == "cosine":
        return 1.0 - F.cosine_similarity(pooled, vectors, dim=-1, eps=1e-12)
    if distance == "euclidean":
        return (pooled - vectors).pow(2).sum(dim=-1).sqrt()
    raise ValueError(f"unknown LDAV distance {distance!r}; valid: cosine, euclidean")


def class_vector_separation(vectors: torch.Tensor) -> torch.Tensor:
    """``sum_i sum_j ||z_i - z_j||^2`` over all ordered pairs of class vectors (Eq. 3 without rho2).

    Args:
        vectors: ``(k, hidden)`` class vectors.

    Returns:
        A scalar.
    """
    differences = vectors.unsqueeze(0) - vectors.unsqueeze(1)  # (k, k, hidden)
    return differences.pow(2).sum()


@dataclass(frozen=True)
class LdavLossTerms:
    """The terms of ``L = L1 + L2 - L3``, each a scalar tensor (``total`` is what is minimised)."""

    l1: torch.Tensor
    l2: torch.Tensor
    l3: torch.Tensor

    @property
    def total(self) -> torch.Tensor:
        return self.l1 + self.l2 - self.l3


def ldav_loss_terms(
    logits: torch.Tensor,
    labels: torch.Tensor,
    pooled: torch.Tensor,
    vectors: torch.Tensor,
    *,
    rho1: float,
    rho2: float,
    distance: Distance = "cosine",
    vector_class: Literal["predicted", "label"] = "predicted",
) -> LdavLossTerms:
    """The three LDAV loss terms of one batch.

    ``L1`` is the batch mean of ``-log p(gold)``: Eq. 1 writes a further factor ``1/k``, a
    constant that only rescales the term; we keep the plain cross-entropy so that a model
    trained without LDAV minimises exactly ``L1``. ``L2 = rho1 * mean_b d(x_hat_b, z_c(b))``
    where ``c(b)`` is the predicted class ``argmax logits`` (Section 3.1 and Figure 1: "the
    activation vector of the predicted class"; no gradient flows through the argmax) or, with
    ``vector_class="label"``, the gold class. ``L3 = rho2 * sum_i sum_j ||z_i - z_j||^2``.

    Args:
        logits: ``(batch, k)`` classifier outputs.
        labels: ``(batch,)`` gold class indices.
        pooled: ``(batch, hidden)`` text vectors (:func:`pooled_input_embeddings`).
        vectors: ``(k, hidden)`` class vectors ``z``.
        rho1: Weight of ``L2``.
        rho2: Weight of ``L3``.
        distance: ``L2``'s distance.
        vector_class: Which class's vector each text is pulled towards.

    Returns:
        The terms; ``terms.total`` is ``L1 + L2 - L3``.
    """
    l1 = F.cross_entropy(logits, labels)
    chosen = logits.detach().argmax(dim=1) if vector_class == "predicted" else labels  # (batch,)
    l2 = rho1 * sentence_vector_distance(pooled, vectors[chosen], distance).mean()
    l3 = rho2 * class_vector_separation(vectors)
    return LdavLossTerms(l1=l1, l2=l2, l3=l3)
