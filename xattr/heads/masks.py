"""Which attention heads Mask-LRP keeps: syntactic, positional and their union (Mask-LRP Eq. 6)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from xattr.models.loading import LoadedModel


class HeadMaskError(ValueError):
    """Head masks that cannot be used with a model (the message names the shapes)."""


@dataclass(frozen=True)
class HeadMasks:
    """Boolean ``(layers, heads)`` masks of kept attention heads.

    Attributes:
        syntactic: Heads whose maximum attention follows a core dependency relation more often than
            its positional baseline by at least ``xi_synt`` (Mask-LRP Eq. 7).
        positional: Heads whose maximum attention lands on one fixed relative position in at least
            ``xi_pos`` of the tokens (Mask-LRP Eq. 8).
        source: Where the masks came from (model and corpus), for error messages and provenance.
    """

    syntactic: np.ndarray
    positional: np.ndarray
    source: str = ""

    def __post_init__(self) -> None:
        syntactic = np.asarray(self.syntactic, dtype=bool)
        positional = np.asarray(self.positional, dtype=bool)
        if syntactic.ndim != 2 or syntactic.shape != positional.shape:
            raise HeadMaskError(
                f"head masks must be two (layers, heads) arrays of one shape; got syntactic {syntactic.shape} "
                f"and positional {positional.shape}"
            )
        object.__setattr__(self, "syntactic", syntactic)
        object.__setattr__(self, "positional", positional)

    @property
    def shape(self) -> tuple[int, int]:
        """``(layers, heads)``."""
        return (int(self.syntactic.shape[0]), int(self.syntactic.shape[1]))

    @property
    def union(self) -> np.ndarray:
        """Heads kept by Mask-LRP: syntactic or positional (Mask-LRP Eq. 6)."""
        return self.syntactic | self.positional

    def check_model(self, layers: int, heads: int, model: str = "the model") -> None:
        """Raise :class:`HeadMaskError` unless the masks are ``(layers, heads)``."""
        if self.shape != (layers, heads):
            raise HeadMaskError(
                f"head masks from {self.source or 'another model'} have shape {self.shape} (layers, heads), "
                f"but {model} has {layers} layers x {heads} heads"
            )


def check_masks_fit(masks: HeadMasks, loaded: LoadedModel) -> HeadMasks:
    """Return ``masks`` after checking they are ``(layers, heads)`` of ``loaded``.

    Raises:
        HeadMaskError: Another shape (both shapes, the masks' source and the model are named).
    """
    masks.check_model(loaded.num_layers, int(loaded.model.config.num_attention_heads), model=loaded.source)
    return masks
