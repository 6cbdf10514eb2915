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
        syntactic_margin: ``(layers, heads)`` float, ``max_k (alpha_k - lambda_k)`` of each head (the
            quantity Eq. 7 compares with ``xi_synt``), or ``None`` when only the masks are known.
        positional_share: ``(layers, heads)`` float, the largest Eq. 8 frequency of one offset (compared
            with ``xi_pos``), or ``None``.
    """

    syntactic: np.ndarray
    positional: np.ndarray
    source: str = ""
    syntactic_margin: np.ndarray | None = None
    positional_share: np.ndarray | None = None

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
        for name in ("syntactic_margin", "positional_share"):
            value = getattr(self, name)
            if value is not None:
                value = np.asarray(value, dtype=np.float64)
                if value.shape != syntactic.shape:
                    raise HeadMaskError(f"head masks: {name} has shape {value.shape}, the masks {syntactic.shape}")
                object.__setattr__(self, name, value)

    @property
    def shape(self) -> tuple[int, int]:
        """``(layers, heads)``."""
        return (int(self.syntactic.shape[0]), int(self.syntactic.shape[1]))

    @property
    def union(self) -> np.ndarray:
        """Heads kept by Mask-LRP: syntactic or positional (Mask-LRP Eq. 6)."""
        return self.syntactic | self.positional

    def at_thresholds(self, xi_synt: float | None = None, xi_pos: float | None = None) -> HeadMasks:
        """The masks recomputed from the stored per-head scores at other thresholds (``None``: keep that mask).

        A head is syntactic when its margin is above ``xi_synt`` and positional when its largest
        offset share is above ``xi_pos`` (Eq. 7-8, strictly), so ``at_thresholds(0.1, 0.8)`` of masks
        mined at those thresholds gives them back.

        Raises:
            HeadMaskError: A threshold is given but the masks carry no scores to recompute from.
        """
        syntactic, positional = self.syntactic, self.positional
        if xi_synt is not None:
            if self.syntactic_margin is None:
                raise HeadMaskError(f"head masks from {self.source or 'this source'} carry no syntactic margins")
            syntactic = np.nan_to_num(self.syntactic_margin, nan=-np.inf) > xi_synt
        if xi_pos is not None:
            if self.positional_share is None:
                raise HeadMaskError(f"head masks from {self.source or 'this source'} carry no positional shares")
            positional = self.positional_share > xi_pos
        return HeadMasks(syntactic, positional, self.source, self.syntactic_margin, self.positional_share)

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
