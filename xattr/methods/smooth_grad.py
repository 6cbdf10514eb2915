"""SmoothGrad: gradients averaged over noisy copies of the word embeddings."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Literal

import torch
from pydantic import Field

from xattr.methods.base import AttributionMethod, MethodParams, register_method, row_generator
from xattr.methods.context import MethodContext
from xattr.methods.gradients import reduce_over_hidden, word_embeddings
from xattr.methods.integrated_gradients import repeated_gradients, summed_gradients
from xattr.methods.references import content_mask, special_token_ids
from xattr.models.encoding import Batch
from xattr.models.loading import LoadedModel
from xattr.types import Reduction

#: Average the gradients then reduce (LAFA's SmoothGrad), or reduce each sample then average.
Aggregate = Literal["square_of_mean", "mean_of_squares"]


def noise_sigma(embeddings: torch.Tensor, content: torch.Tensor, noise_scale: float) -> torch.Tensor:
    """Per-coordinate standard deviation of one text's noise, a 0-d tensor.

    ``sigma = noise_scale * mean_i ||H0_i|| / sqrt(hidden)`` over the text's content tokens, so
    the noise vector added to a token has norm about ``noise_scale`` times a typical word
    embedding's norm. A text without content tokens gets ``sigma = 0``.

    Args:
        embeddings: ``(seq, hidden)`` word embeddings of one text.
        content: ``(seq,)`` bool, the content (non-special, non-padding) tokens.
        noise_scale: Noise norm relative to the mean content embedding norm.
    """
    norms = embeddings[content].norm(dim=-1)  # (n_content,)
    if norms.numel() == 0:
        return embeddings.new_zeros(())
    return noise_scale * norms.mean() / embeddings.shape[-1] ** 0.5


def noise_stream(
    embeddings: torch.Tensor, content: torch.Tensor, input_ids: Sequence[int], *, noise_scale: float, seed: int
) -> Iterator[torch.Tensor]:
    """The noise ``eps_1, eps_2, ...`` of one text, each ``(seq, hidden)``, drawn one at a time.

    Standard normals are drawn in float32 on the embeddings' device from
    ``row_generator(seed, input_ids)``, one ``(seq, hidden)`` draw per sample, scaled by
    :func:`noise_sigma` and zeroed at special tokens and padding. The draws depend on the seed,
    the text's token ids and the device only, never on the rest of the batch.

    Args:
        embeddings: ``(seq, hidden)`` word embeddings of the text alone, without padding (the
            draw's shape must not depend on the batch).
        content: ``(seq,)`` bool, where noise is added.
        input_ids: The text's token ids, ``seq`` of them.
        noise_scale: See :func:`noise_sigma`.
        seed: The method's seed.

    Yields:
        ``(seq, hidden)`` noise tensors in the embeddings' dtype.
    """
    if len(input_ids) != embeddings.shape[0]:
        raise ValueError(
            f"{len(input_ids)} token ids for {embeddings.shape[0]} embeddings: pass the text without padding"
        )
    sigma = noise_sigma(embeddings, content, noise_scale)
    scale = sigma * content.to(embeddings.dtype).unsqueeze(-1)  # (seq, 1)
    generator = row_generator(seed, input_ids, device=str(embeddings.device))
    while True:
        draw = torch.randn(
            embeddings.shape, generator=generator, dtype=torch.float32, device=embeddings.device
        )  # (seq, hidden)
        yield draw.to(embeddings.dtype) * scale


def row_noise(
    embeddings: torch.Tensor,
    content: torch.Tensor,
    input_ids: Sequence[int],
    *,
    samples: int,
    noise_scale: float,
    seed: int,
) -> torch.Tensor:
    """The first ``samples`` noise tensors of one text (:func:`noise_stream`), ``(samples, seq, hidden)``."""
    stream = noise_stream(embeddings, content, input_ids, noise_scale=noise_scale, seed=seed)
    return torch.stack([next(stream) for _ in range(samples)])


class SmoothGradParams(MethodParams):
    """Parameters of :class:`SmoothGrad`."""

    samples: int = Field(25, ge=1, description="N: noisy copies per text")
    noise_scale: float = Field(
        0.1, ge=0.0, description="noise norm / mean word-embedding norm of the text (sigma per coordinate / sqrt(d))"
    )
    aggregate: Aggregate = Field(
        "square_of_mean",
        description="square_of_mean: reduce the mean gradient (LAFA); mean_of_squares: mean of per-sample scores",
    )
    reduction: Reduction = Field("sum_of_squares", description="sum_of_squares (LAFA Sec. 4) or sum (signed)")
    seed: int = Field(0, description="seed of the noise (combined with each text's token ids)")
    rows_per_pass: int = Field(256, ge=1, description="(text x sample) rows per forward/backward pass")


@register_method(
    "smooth_grad",
    summary="gradient averaged over noisy word embeddings, per token",
    paper="Smilkov et al. 2017; LAFA (Zhang et al. 2022) Sec. 4",
    signed="reduction",
    cost="{samples} fwd + {samples} bwd",
)
class SmoothGrad(AttributionMethod[SmoothGradParams]):
    """SmoothGrad (Smilkov et al. 2017) as written in LAFA Section 4.

    ``S_SmoothGrad(H0) = 1/N sum_{k=1..N} S(H0 + eps_k)`` with ``eps_k ~ N(0, sigma^2)`` added
    to the content tokens' word embeddings only (special tokens keep theirs), and
    ``M_i = sum_j S_SmoothGrad(H0)_ij^2``: ``aggregate="square_of_mean"``, the paper's form.
    ``aggregate="mean_of_squares"`` is the other method in use, ``M_i = 1/N sum_k sum_j
    S(H0 + eps_k)_ij^2``. Generally: ``square_of_mean`` applies ``reduction`` to the mean
    gradient, ``mean_of_squares`` averages the per-sample reductions; with ``reduction="sum"``
    (signed, linear) the two coincide.

    ``sigma = noise_scale * mean_i ||H0_i|| / sqrt(d)`` per text (mean over its content tokens),
    so a noise vector's norm is about ``noise_scale`` times a word embedding's norm; a scale fixed
    to the embedding matrix's range instead gives noise several times larger than a token and
    degrades the ranking (see METHOD-NOTES). Noise is drawn per text from its token ids and the
    seed, so results do not depend on the batch and a seed reproduces them (on one device).
    """

    def attribute_batch(
        self, loaded: LoadedModel, batch: Batch, targets: torch.Tensor, context: MethodContext
    ) -> torch.Tensor:
        """Scores ``(batch, seq)`` from ``N`` noisy gradients per row."""
        p = self.params
        with torch.no_grad():
            h0 = word_embeddings(loaded, batch.input_ids).detach()  # (batch, seq, hidden)
        content = content_mask(batch, special_token_ids(loaded))  # (batch, seq)
        lengths = batch.attention_mask.sum(dim=1).tolist()
        streams = [
            noise_stream(
                h0[r, :n],
                content[r, :n],
                batch.input_ids[r, :n].tolist(),
                noise_scale=p.noise_scale,
                seed=p.seed,
            )
            for r, n in enumerate(lengths)
        ]

        def build(rows: torch.Tensor, ks: torch.Tensor) -> torch.Tensor:
            noisy = h0[rows]  # (chunk, seq, hidden), a copy (advanced indexing)
            for i, r in enumerate(rows.tolist()):
                noisy[i, : lengths[r]] += next(streams[r])  # (n_r, hidden): padding gets no noise
            return noisy

        if p.aggregate == "square_of_mean":
            grad_sum = summed_gradients(
                repeated_gradients(loaded, batch, targets, p.samples, p.rows_per_pass, build), like=h0
            )
            return reduce_over_hidden(grad_sum / p.samples, p.reduction)
        score_sum = h0.new_zeros(h0.shape[:2])  # (batch, seq)
        for rows, _, grad in repeated_gradients(loaded, batch, targets, p.samples, p.rows_per_pass, build):
            score_sum.index_add_(0, rows, reduce_over_hidden(grad, p.reduction))
        return score_sum / p.samples
