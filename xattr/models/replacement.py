"""What replaces a removed token: a vocabulary token, nothing (deletion), or the zero word embedding.

Token-id policies (``mask``, ``pad``, ``unk``) write a token id into the removed positions;
``delete`` shortens the sequence; ``baseline`` writes the sentinel id :data:`BASELINE_ID` (-1)
into ``EncodedText.input_ids``, and the batched forward pass
(:func:`xattr.models.forward.predict_logits`) gives those positions the zero word embedding while
their position and segment embeddings stay in place. Perturbation methods (occlusion, LIME) and
the faithfulness metrics share these choices.
"""

from __future__ import annotations

from xattr.types import ReplacementPolicy

#: Sentinel input id of a position whose word embedding is replaced by the baseline vector.
BASELINE_ID = -1


def replacement_id(tokenizer: object, policy: ReplacementPolicy) -> int | None:
    """The token id that replaces removed tokens (``None`` for ``delete``, ``BASELINE_ID`` for ``baseline``).

    Raises:
        ValueError: Unknown policy, or the tokenizer has no such special token.
    """
    attribute = {"mask": "mask_token_id", "pad": "pad_token_id", "unk": "unk_token_id"}
    if policy == "delete":
        return None
    if policy == "baseline":
        return BASELINE_ID
    if policy not in attribute:
        raise ValueError(f"unknown replacement policy {policy!r}; valid: mask, pad, unk, delete, baseline")
    value = getattr(tokenizer, attribute[policy], None)
    if value is None:
        raise ValueError(f"replacement policy {policy!r}: the tokenizer has no such token")
    return int(value)
