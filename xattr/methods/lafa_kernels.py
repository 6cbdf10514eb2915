"""The six kernels of LAFA Appendix E, between word-piece embeddings.

Each kernel maps ``a: (..., n, d)`` and ``b: (..., m, d)`` to the ``(..., n, m)`` matrix
``k(a_i, b_j)``: one pair of texts, or a batch of them (leading dimensions broadcast). Defaults are
the paper's numerical-study values.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from pydantic import Field, model_validator

from xattr.methods.base import MethodParams

KernelName = Literal["rbf", "cubic", "cosine", "laplacian", "clipped_l2", "indicator"]
KERNELS: tuple[str, ...] = ("rbf", "cubic", "cosine", "laplacian", "clipped_l2", "indicator")


class KernelParams(MethodParams):
    """Kernel hyper-parameters (LAFA Appendix E defaults); LAFA's parameters extend them."""

    rbf_length: float = Field(2.0, gt=0.0, description="l of the RBF kernel")
    cubic_gamma: float = Field(7.0, description="gamma of the cubic kernel")
    cubic_c0: float = Field(0.0, description="c0 of the cubic kernel")
    cubic_degree: int = Field(3, ge=1, description="d of the cubic kernel")
    laplacian_length: float = Field(2.0, gt=0.0, description="l of the Laplacian kernel")
    clip_low: float = Field(0.3, gt=0.0, description="lower clip of the clipped-L2 kernel")
    clip_high: float = Field(3.0, gt=0.0, description="upper clip of the clipped-L2 kernel")

    @model_validator(mode="after")
    def _clip_range(self) -> KernelParams:
        if self.clip_low >= self.clip_high:
            raise ValueError("clip_low must be below clip_high")
        return self


def rbf(a: torch.Tensor, b: torch.Tensor, p: KernelParams) -> torch.Tensor:
    """``exp(-||a - b||_2^2 / l^2)`` with ``l = 2``."""
    return torch.exp(-torch.cdist(a, b, p=2).pow(2) / p.rbf_length**2)


def cubic(a: torch.Tensor, b: torch.Tensor, p: KernelParams) -> torch.Tensor:
    """``(gamma a^T b + c0)^d`` with ``gamma = 7, c0 = 0, d = 3``."""
    return (p.cubic_gamma * a @ b.mT + p.cubic_c0).pow(p.cubic_degree)


def cosine(a: torch.Tensor, b: torch.Tensor, p: KernelParams) -> torch.Tensor:
    """``a^T b / (||a|| ||b||)``; no parameter."""
    norms = a.norm(dim=-1, keepdim=True) * b.norm(dim=-1, keepdim=True).mT
    return (a @ b.mT) / norms.clamp_min(torch.finfo(a.dtype).tiny)


def laplacian(a: torch.Tensor, b: torch.Tensor, p: KernelParams) -> torch.Tensor:
    """``exp(-||a - b||_1 / l^2)`` with ``l = 2`` (the paper divides the L1 norm by ``l^2``)."""
    return torch.exp(-torch.cdist(a, b, p=1) / p.laplacian_length**2)


def clipped_l2(a: torch.Tensor, b: torch.Tensor, p: KernelParams) -> torch.Tensor:
    """``1 / clip(||a - b||_2, 0.3, 3)``."""
    return 1.0 / torch.cdist(a, b, p=2).clamp(p.clip_low, p.clip_high)


def indicator(a: torch.Tensor, b: torch.Tensor, p: KernelParams) -> torch.Tensor:
    """``I(a, b)``: 1 for identical embeddings (the same word piece), else 0."""
    return (a.unsqueeze(-2) == b.unsqueeze(-3)).all(dim=-1).to(a.dtype)


_BY_NAME: dict[str, Callable[[torch.Tensor, torch.Tensor, KernelParams], torch.Tensor]] = {
    "rbf": rbf,
    "cubic": cubic,
    "cosine": cosine,
    "laplacian": laplacian,
    "clipped_l2": clipped_l2,
    "indicator": indicator,
}


def kernel_matrix(name: str, a: torch.Tensor, b: torch.Tensor, params: KernelParams | None = None) -> torch.Tensor:
    """``(..., n, m)`` kernel values between rows of ``a`` ``(..., n, d)`` and ``b`` ``(..., m, d)``.

    Raises:
        ValueError: Unknown kernel name (the valid names are listed).
    """
    if name not in _BY_NAME:
        raise ValueError(f"unknown kernel {name!r}; valid kernels: {', '.join(KERNELS)}")
    return _BY_NAME[name](a, b, params or KernelParams())
