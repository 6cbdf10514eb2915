"""LIME: a weighted linear model fitted to the outputs of randomly masked copies of the text."""

from __future__ import annotations

import math

import torch
from pydantic import Field

from xattr.methods.base import AttributionMethod, MethodParams, register_method, row_generator
from xattr.methods.context import MethodContext
from xattr.methods.substitution import TokenReplacement, content_positions, substituted_outputs
from xattr.models.encoding import Batch
from xattr.models.loading import LoadedModel


class LimeParams(MethodParams):
    """Parameters of :class:`Lime`."""

    samples: int = Field(200, ge=2, description="masked copies per text")
    seed: int = Field(0, description="seed of the masks (combined with each text's token ids)")
    replacement: TokenReplacement = Field("mask", description="token replacing a masked token")
    kernel_width: float = Field(25.0, gt=0.0, description="width of the kernel on 100 x cosine distance")
    alpha: float = Field(1.0, ge=0.0, description="ridge penalty of the surrogate linear model")
    rows_per_pass: int = Field(256, ge=1, description="masked copies per forward pass")


def lime_similarity(samples: torch.Tensor, kernel_width: float) -> torch.Tensor:
    """``(samples,)`` LIME text weights of binary samples ``(samples, features)``.

    The lime package's ``LimeTextExplainer``: ``d = 100 x cosine distance`` between the sample and
    the all-ones (unmasked) vector, weight ``sqrt(exp(-d^2 / width^2))``; an all-zero sample has
    cosine distance 1.
    """
    z = samples.double()
    norm = z.norm(dim=1) * math.sqrt(z.shape[1])
    cosine = torch.where(norm > 0, z.sum(dim=1) / norm.clamp(min=1e-300), torch.zeros_like(norm))
    distance = (1.0 - cosine) * 100.0
    return torch.sqrt(torch.exp(-(distance**2) / kernel_width**2))


def lime_samples(seed: int, input_ids: list[int], samples: int, features: int) -> torch.Tensor:
    """``(samples, features)`` 0/1 masks (1 keeps the token), each entry Bernoulli(0.5), as Captum's default.

    Drawn from :func:`row_generator`, so they depend on the seed and the text only.
    """
    generator = row_generator(seed, input_ids)
    return torch.bernoulli(torch.full((samples, features), 0.5, dtype=torch.float64), generator=generator).long()


def fit_surrogate(samples: torch.Tensor, outputs: torch.Tensor, weights: torch.Tensor, alpha: float) -> torch.Tensor:
    """Coefficients ``(features,)`` of Captum's ``SkLearnRidge`` fitted as Captum's ``LimeBase`` fits it."""
    from captum._utils.models.linear_model import SkLearnRidge
    from torch.utils.data import DataLoader, TensorDataset

    surrogate = SkLearnRidge(alpha=alpha)
    # LimeBase casts every tensor to float32 before fitting; so do we, to fit the same model.
    dataset = TensorDataset(samples.float(), outputs.float(), weights.float())
    surrogate.fit(DataLoader(dataset, batch_size=len(samples)))
    return surrogate.representation().detach().flatten()


@register_method(
    "lime",
    summary="coefficients of a kernel-weighted ridge model on randomly masked copies of the text",
    paper="Ribeiro et al. 2016; Captum Lime",
    signed=True,
)
class Lime(AttributionMethod[LimeParams]):
    """LIME (Ribeiro et al. 2016) over word pieces, with Captum's ``LimeBase`` machinery.

    Each text gets ``samples`` random binary masks over its content tokens (each token kept with
    probability 0.5; special tokens always kept); masked tokens are replaced by the
    ``replacement`` token and the explained output is recorded. A ridge model (Captum's
    ``SkLearnRidge``, penalty ``alpha``, as the lime package) is fitted from masks to outputs, each
    sample weighted by the lime text kernel on its cosine distance to the unmasked text; a token's
    score is its coefficient (signed). The masked copies of many texts share forward passes (the
    reason the sampling loop is hand-written); the masks come from a generator seeded by the
    seed and the text, so a text's scores do not depend on its batch, and the tests check they
    equal Captum's ``Lime`` run on one text with the same masks, kernel and surrogate.
    """

    def attribute_batch(
        self, loaded: LoadedModel, batch: Batch, targets: torch.Tensor, context: MethodContext
    ) -> torch.Tensor:
        """Scores ``(batch, seq)``; special and padding positions score 0."""
        p = self.params
        content = content_positions(loaded, batch)
        lengths = batch.attention_mask.sum(dim=1).tolist()
        masks: dict[int, torch.Tensor] = {}
        variants: list[tuple[int, list[int]]] = []
        for row, positions in enumerate(content):
            if not positions:
                continue
            ids = batch.input_ids[row, : int(lengths[row])].tolist()
            z = lime_samples(p.seed, ids, p.samples, len(positions))  # (samples, features)
            masks[row] = z
            variants += [(row, [positions[j] for j in torch.nonzero(s == 0).flatten().tolist()]) for s in z]
        outputs = substituted_outputs(loaded, batch, targets, variants, p.replacement, p.rows_per_pass)  # (variants,)
        scores = torch.zeros(batch.input_ids.shape, dtype=torch.float64)  # (batch, seq)
        start = 0
        for row, z in masks.items():
            values = outputs[start : start + len(z)].cpu()
            start += len(z)
            coefficients = fit_surrogate(z, values, lime_similarity(z, p.kernel_width), p.alpha)
            scores[row, content[row]] = coefficients.double()
        return scores.to(batch.input_ids.device)
