"""Device choice: CUDA when present, CPU otherwise."""

from __future__ import annotations

import torch


def pick_device(requested: str | None = None) -> torch.device:
    """Return the device to run models on.

    Args:
        requested: ``"cuda"``, ``"cpu"``, ``"cuda:1"`` or ``None``/``"auto"`` for CUDA when
            available, else CPU.

    Returns:
        The chosen ``torch.device``.

    Raises:
        ValueError: CUDA was requested but is not available.
    """
    if requested in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {requested!r} requested but CUDA is not available here")
    return device
