"""Per-layer head gates for Mask-LRP from head masks, and the paper's mask ablations.

Group ids say which heads pass relevance and how Section 4.3 renormalises them: ``-1`` drops a
head; heads with the same id form one group (``R_synt``, ``R_pos``) whose relevance is rescaled
together (see :class:`xattr.lrp.rules.HeadGate`).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from xattr.heads.masks import HeadMasks
from xattr.lrp.rules import HeadGate

MaskChoice = Literal["union", "syntactic", "positional", "random", "all"]


def head_groups(
    masks: HeadMasks | None,
    shape: tuple[int, int],
    *,
    mask: MaskChoice = "union",
    corruption: float = 0.0,
    seed: int = 0,
) -> np.ndarray:
    """``(layers, heads)`` group ids of the kept heads (``-1`` = dropped).

    Args:
        masks: Syntactic and positional masks (required unless ``mask="all"``).
        shape: ``(layers, heads)`` of the model; masks of another shape are refused.
        mask: ``union`` (Eq. 6; groups: syntactic, then positional-only), ``syntactic`` or
            ``positional`` alone (Table 3), ``random`` (as many heads as the union, drawn with
            ``seed``; Sec. 5.2), ``all`` (every head: LRP-rollout).
        corruption: Fraction of the dropped heads switched on, drawn with ``seed`` (Sec. 5.4,
            Fig. 4: "randomly switched a portion of the remaining zeros"); 1.0 keeps every head.
            Switched-on heads form their own group.
        seed: Seed of the random mask and of the corruption.

    Raises:
        ValueError: Masks missing or corruption outside ``[0, 1]``.
        HeadMaskError: Masks of another model's shape.
    """
    layers, heads = shape
    if not 0.0 <= corruption <= 1.0:
        raise ValueError(f"corruption must be in [0, 1]; got {corruption}")
    groups = np.full(shape, -1, dtype=np.int64)
    if mask == "all":
        groups[:] = 0
        return groups
    if masks is None:
        raise ValueError(f"mask={mask!r} needs head masks from the head-statistics stage; none were given")
    masks.check_model(layers, heads)
    if mask == "union":
        groups[masks.syntactic] = 0
        groups[masks.positional & ~masks.syntactic] = 1
    elif mask == "syntactic":
        groups[masks.syntactic] = 0
    elif mask == "positional":
        groups[masks.positional] = 0
    elif mask == "random":
        count = int(masks.union.sum())
        chosen = np.random.default_rng([seed, 0]).choice(layers * heads, size=count, replace=False)
        groups.reshape(-1)[chosen] = 0
    else:
        raise ValueError(f"unknown mask {mask!r}; valid: union, syntactic, positional, random, all")
    if corruption > 0:
        dropped = np.flatnonzero(groups.reshape(-1) < 0)
        count = int(round(corruption * dropped.size))
        flipped = np.random.default_rng([seed, 1]).choice(dropped, size=count, replace=False)
        groups.reshape(-1)[flipped] = int(groups.max()) + 1 if (groups >= 0).any() else 0
    return groups


def gates_from_groups(
    groups: np.ndarray, device: torch.device | str = "cpu", *, gate_attention: bool = True
) -> list[HeadGate]:
    """One :class:`HeadGate` per layer from ``(layers, heads)`` group ids (``gate_attention``: see HeadGate)."""
    return [
        HeadGate(torch.as_tensor(row, dtype=torch.long, device=device), gate_attention=gate_attention) for row in groups
    ]
