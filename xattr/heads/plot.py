"""A heatmap of the kept heads per layer and head, like Mask-LRP's Fig. 5."""

from __future__ import annotations

import io

import numpy as np

from xattr.heads.masks import HeadMasks

#: Cell codes and their colours: neither, positional only, syntactic only, both.
_LABELS = ("neither", "positional", "syntactic", "both")
_COLOURS = ("#f2f2f2", "#4c9be8", "#e8804c", "#8c4ce8")


def head_mask_codes(masks: HeadMasks) -> np.ndarray:
    """``(layers, heads)`` codes: 0 neither, 1 positional only, 2 syntactic only, 3 both."""
    return masks.positional.astype(int) + 2 * masks.syntactic.astype(int)


def head_masks_png(masks: HeadMasks, *, title: str = "") -> bytes:
    """Render both masks as one heatmap (x: head, y: layer, first layer at the bottom) to PNG bytes.

    Args:
        masks: The masks.
        title: Figure title (model and corpus, say).

    Returns:
        The PNG file's bytes (rendered with matplotlib's Agg backend, no display needed).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    layers, heads = masks.shape
    codes = head_mask_codes(masks)
    figure = Figure(figsize=(max(4.0, 0.45 * heads + 2.5), max(2.5, 0.4 * layers + 1.5)), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    axes.imshow(codes, cmap=ListedColormap(_COLOURS), vmin=-0.5, vmax=3.5, origin="lower", aspect="auto")
    axes.set_xticks(range(heads), [str(h) for h in range(heads)])
    axes.set_yticks(range(layers), [str(layer) for layer in range(layers)])
    axes.set_xticks(np.arange(-0.5, heads), minor=True)
    axes.set_yticks(np.arange(-0.5, layers), minor=True)
    axes.grid(which="minor", color="white", linewidth=1)
    axes.tick_params(which="minor", length=0)
    axes.set_xlabel("head")
    axes.set_ylabel("layer")
    kept = int(masks.union.sum())
    axes.set_title(title or f"kept heads: {kept} of {layers * heads}", fontsize=9)
    figure.legend(
        handles=[Patch(facecolor=c, edgecolor="grey", label=label) for c, label in zip(_COLOURS, _LABELS, strict=True)],
        loc="center right",
        fontsize=8,
    )
    figure.subplots_adjust(right=0.78)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
