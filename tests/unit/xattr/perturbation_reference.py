"""Captum run on one text at a time over its content tokens: the reference for occlusion and LIME."""

from __future__ import annotations

import torch

from xattr.models.encoding import EncodedText


def content_forward(loaded, enc: EncodedText, target: int):
    """``f(content ids as float (k, n_content)) -> (k,)``: re-inserts the special tokens around the content."""
    ids = torch.tensor(enc.input_ids)
    types = torch.tensor([enc.token_type_ids])
    content = [i for i, s in enumerate(enc.special) if not s]

    def forward(values: torch.Tensor) -> torch.Tensor:
        full = ids.repeat(values.shape[0], 1)
        full[:, content] = values.round().long()
        logits = loaded.model(input_ids=full, token_type_ids=types.repeat(values.shape[0], 1)).logits
        return logits[:, target]

    return forward, torch.tensor([[float(ids[i]) for i in content]], dtype=torch.float64), content
