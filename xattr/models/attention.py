"""Attention weights need eager attention: one switch, restored after the block.

Only the ``eager`` attention implementation returns attention probabilities (``sdpa`` and flash
kernels never materialise them), so methods and statistics that read them run inside
:func:`eager_attention`, which switches the model for the block and restores it after, also after
an error. Switching (like LRP's hooks) patches the model object, so a model object serves one
thread at a time (``tasks.models`` loads one per worker thread).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


class AttentionUnavailableError(RuntimeError):
    """The model cannot return attention weights (the message names the model and its implementation)."""


def attention_implementation(model: torch.nn.Module) -> str:
    """The model's attention implementation (``eager``, ``sdpa``, ...)."""
    return str(getattr(model.config, "_attn_implementation", None) or "eager")


@contextmanager
def eager_attention(model: torch.nn.Module) -> Iterator[None]:
    """Run the block with eager attention so that attention weights are returned.

    Raises:
        AttentionUnavailableError: The model uses another implementation and cannot switch.
    """
    previous = attention_implementation(model)
    if previous == "eager":
        yield
        return
    switch = getattr(model, "set_attn_implementation", None)
    if switch is not None:
        switch("eager")
    if switch is None or attention_implementation(model) != "eager":
        if switch is not None:
            switch(previous)
        raise AttentionUnavailableError(
            f"model {type(model).__name__} uses {previous!r} attention, which returns no attention weights, "
            'and cannot switch to eager at run time; load it with attn_implementation="eager"'
        )
    try:
        yield
    finally:
        switch(previous)
