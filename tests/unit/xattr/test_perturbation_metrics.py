"""AOPC and log-odds on a stub model whose output depends on one token only."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from xattr.metrics.perturbation import removal_curves, remove_tokens, tokens_to_remove
from xattr.models.encoding import encode_texts
from xattr.models.loading import LoadedModel
from xattr.types import TokenAttribution

KEY = 10  # token id that decides the output


class OneTokenModel(torch.nn.Module):
    """Logits (0, 2) when token KEY is present, (0, 0) otherwise; regression output 3 or 1."""

    def __init__(self, num_labels: int) -> None:
        super().__init__()
        self.config = SimpleNamespace(num_labels=num_labels)
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask, token_type_ids):  # noqa: ANN001
        present = ((input_ids == KEY) & (attention_mask == 1)).any(dim=1).double()
        if self.config.num_labels == 1:
            return SimpleNamespace(logits=(1.0 + 2.0 * present).unsqueeze(1))
        return SimpleNamespace(logits=torch.stack([torch.zeros_like(present), 2.0 * present], dim=1))


def _loaded(tokenizer, task: str, num_labels: int, transform: str = "identity") -> LoadedModel:
    return LoadedModel(OneTokenModel(num_labels), tokenizer, task, "stub", torch.device("cpu"), transform, 64)


@pytest.fixture
def encoded(tiny_tokenizer):
    # [CLS] the movie was great fun [SEP]: five removable tokens
    (enc,) = encode_texts(tiny_tokenizer, ["the movie was great fun"], max_length=64)
    assert len(enc) == 7
    return enc


def _key_at(enc, position: int):
    ids = list(enc.input_ids)
    ids[position] = KEY
    return enc.__class__(**{**enc.__dict__, "input_ids": tuple(ids)})


def _values(values, metric):
    return {v.fraction: v.value for v in values if v.metric == metric}


def test_tokens_to_remove_uses_ceiling() -> None:
    assert [tokens_to_remove(5, f / 10) for f in range(1, 10)] == [1, 1, 2, 2, 3, 3, 4, 4, 5]
    with pytest.raises(ValueError):
        tokens_to_remove(5, 0.0)


def test_aopc_is_full_drop_when_the_key_token_ranks_first(tiny_tokenizer, encoded) -> None:
    enc = _key_at(encoded, 3)
    scores = np.array([9.0, 0.1, 0.2, 5.0, 0.3, 0.4, 9.0])  # specials score high but are never removed
    values = removal_curves(_loaded(tiny_tokenizer, "classification", 2), [enc], [TokenAttribution(0, 1, scores)])
    p = math.exp(2) / (1 + math.exp(2))
    assert _values(values, "aopc")[None] == pytest.approx(p - 0.5, abs=1e-12)
    log_odds = _values(values, "log_odds")
    assert log_odds[0.1] == pytest.approx(math.log(0.5 / p), abs=1e-12)
    assert log_odds[None] == pytest.approx(math.log(0.5 / p), abs=1e-12)


def test_aopc_counts_only_the_last_fraction_when_the_key_token_ranks_last(tiny_tokenizer, encoded) -> None:
    enc = _key_at(encoded, 3)
    scores = np.array([0.0, 5.0, 4.0, -1.0, 3.0, 2.0, 0.0])
    values = removal_curves(_loaded(tiny_tokenizer, "classification", 2), [enc], [TokenAttribution(0, 1, scores)])
    p = math.exp(2) / (1 + math.exp(2))
    comp = _values(values, "comprehensiveness")
    assert [comp[f / 10] for f in range(1, 9)] == pytest.approx([0.0] * 8, abs=1e-12)
    assert comp[0.9] == pytest.approx(p - 0.5, abs=1e-12)
    assert _values(values, "aopc")[None] == pytest.approx((p - 0.5) / 9, abs=1e-12)


def test_regression_uses_absolute_change_and_log_ratio(tiny_tokenizer, encoded) -> None:
    enc = _key_at(encoded, 2)
    scores = np.array([0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0])
    loaded = _loaded(tiny_tokenizer, "regression", 1, transform="log")
    values = removal_curves(loaded, [enc], [TokenAttribution(0, 0, scores)], fractions=(0.2, 0.6))
    assert _values(values, "comprehensiveness") == pytest.approx({0.2: 2.0, 0.6: 2.0})
    assert _values(values, "log_odds") == pytest.approx({0.2: -2.0, 0.6: -2.0, None: -2.0})
    identity = _loaded(tiny_tokenizer, "regression", 1)
    assert not _values(removal_curves(identity, [enc], [TokenAttribution(0, 0, scores)]), "log_odds")


@pytest.mark.parametrize(("policy", "token"), [("mask", "[MASK]"), ("pad", "[PAD]"), ("unk", "[UNK]")])
def test_replacement_policies(tiny_tokenizer, encoded, policy: str, token: str) -> None:
    from xattr.models.replacement import replacement_id

    out = remove_tokens(encoded, [2, 4], replacement_id(tiny_tokenizer, policy))
    assert tiny_tokenizer.convert_ids_to_tokens(out.input_ids) == ["[CLS]", "the", token, "was", token, "fun", "[SEP]"]


def test_delete_policy_shortens_and_specials_are_protected(tiny_tokenizer, encoded) -> None:
    out = remove_tokens(encoded, [2, 4], None)
    assert tiny_tokenizer.convert_ids_to_tokens(out.input_ids) == ["[CLS]", "the", "was", "fun", "[SEP]"]
    assert out.word_index == (-1, 0, 2, 4, -1)
    with pytest.raises(ValueError, match="special tokens are never removed"):
        remove_tokens(encoded, [0], None)


def test_sufficiency_is_zero_when_the_key_token_is_kept_first(tiny_tokenizer, encoded) -> None:
    enc = _key_at(encoded, 3)
    scores = np.array([0.0, 0.1, 0.2, 5.0, 0.3, 0.4, 0.0])
    values = removal_curves(_loaded(tiny_tokenizer, "classification", 2), [enc], [TokenAttribution(0, 1, scores)])
    assert _values(values, "sufficiency") == pytest.approx({f / 10: 0.0 for f in range(1, 10)}, abs=1e-12)
    assert _values(values, "aopc_sufficiency")[None] == pytest.approx(0.0, abs=1e-12)


def test_sufficiency_counts_every_fraction_but_the_last_when_the_key_token_ranks_last(tiny_tokenizer, encoded) -> None:
    enc = _key_at(encoded, 3)
    scores = np.array([0.0, 5.0, 4.0, -1.0, 3.0, 2.0, 0.0])
    values = removal_curves(_loaded(tiny_tokenizer, "classification", 2), [enc], [TokenAttribution(0, 1, scores)])
    p = math.exp(2) / (1 + math.exp(2))
    suff = _values(values, "sufficiency")
    # ceil(f * 5) tokens kept: the key token (ranked 5th) is kept only at 90 %.
    assert [suff[f / 10] for f in range(1, 9)] == pytest.approx([p - 0.5] * 8, abs=1e-12)
    assert suff[0.9] == pytest.approx(0.0, abs=1e-12)
    assert _values(values, "aopc_sufficiency")[None] == pytest.approx(8 * (p - 0.5) / 9, abs=1e-12)
