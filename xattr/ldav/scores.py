"""LDAV token scores (Section 3.2, Eq. 4-5; Section 4.5 for sentence pairs)."""

from __future__ import annotations

import torch

__all__ = ["ldav_token_scores", "znormalise_negated"]


def znormalise_negated(distances: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Eq. 5 along the last axis: ``-(alpha - mu) / sigma`` over the positions where ``mask`` holds.

    ``mu`` and ``sigma`` are the mean and the population standard deviation (``ddof=0``) of the
    masked distances of each row; positions outside the mask score 0, and so does every position
    of a row whose masked distances are all equal (``sigma = 0``: no token is closer than another).

    Args:
        distances: ``(..., n)`` distances ``alpha``.
        mask: ``(..., n)`` bool.

    Returns:
        ``(..., n)`` scores; higher means closer to the class vector.
    """
    weights = mask.to(distances.dtype)
    counts = weights.sum(dim=-1, keepdim=True).clamp_min(1.0)
    mean = (distances * weights).sum(dim=-1, keepdim=True) / counts
    centred = (distances - mean) * weights
    sd = (centred.pow(2).sum(dim=-1, keepdim=True) / counts).sqrt()
    safe = torch.where(sd > 0, sd, torch.ones_like(sd))
    scores = -centred / safe
    return torch.where((sd > 0) & mask, scores, torch.zeros_like(scores))


def ldav_token_scores(
    embeddings: torch.Tensor,
    content: torch.Tensor,
    class_vectors: torch.Tensor,
    segments: torch.Tensor | None = None,
    other_vectors: torch.Tensor | None = None,
) -> torch.Tensor:
    """LDAV score of every token for one class vector per row.

    Single texts: ``alpha_i = ||z - x_i||`` (Eq. 4), then Eq. 5 over the text's content tokens.
    Sentence pairs (Section 4.5): a first-segment token becomes ``x_i * x_hat(h)`` (the mean word
    embedding of the second segment) and a second-segment token ``x_i * x_hat(p)``, then Eq. 4-5
    as above, normalised over the content tokens of both segments together so that the two
    segments' scores share one scale (the paper does not say; one scale is what a removal curve
    over the whole pair needs).

    Args:
        embeddings: ``(batch, seq, hidden)`` input word embeddings.
        content: ``(batch, seq)`` bool, ``True`` for real, non-special tokens.
        class_vectors: ``(batch, hidden)`` the explained class's vector for each row.
        segments: ``(batch, seq)`` 0/1 segment of each token for pairs, or ``None``.
        other_vectors: ``(batch, k - 1, hidden)`` the other classes' vectors per row for the
            contrast score (not the paper's Eq. 4; its Term 2's argument, issue 18): ``alpha_i`` becomes
            ``||z - x_i|| - mean_j ||z_j - x_i||`` over the other classes ``j``, so a token scores high
            when it is nearer the explained class's vector than the others'. ``None``: Eq. 4.

    Returns:
        ``(batch, seq)`` scores; 0 at special and padding positions.
    """
    tokens = embeddings
    if segments is not None:
        first = content & (segments == 0)
        second = content & (segments == 1)
        mean_first = _mean(embeddings, first)  # (batch, hidden)
        mean_second = _mean(embeddings, second)  # (batch, hidden)
        partner = torch.where(first.unsqueeze(-1), mean_second.unsqueeze(1), mean_first.unsqueeze(1))
        tokens = embeddings * partner  # (batch, seq, hidden)
    distances = (tokens - class_vectors.unsqueeze(1)).pow(2).sum(dim=-1).sqrt()  # (batch, seq): Eq. 4
    if other_vectors is not None and other_vectors.shape[1] > 0:
        # (batch, seq, k - 1); written out rather than torch.cdist, whose matmul form loses precision
        others = (tokens.unsqueeze(2) - other_vectors.unsqueeze(1)).pow(2).sum(dim=-1).sqrt()
        distances = distances - others.mean(dim=-1)
    return znormalise_negated(distances, content)


def _mean(embeddings: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.to(embeddings.dtype).unsqueeze(-1)
    return (embeddings * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)
