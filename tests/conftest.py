"""Shared fixtures: tiny random BERTs with a real word-piece tokenizer, built in the test."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

WORDS = (
    "the a and of to is was it this that movie film good bad great awful not very really plot acting "
    "laptop intel core i3 i5 i7 i9 ram ssd new used refurbished inch apple dell lenovo black fast "
    "shipping deal price cheap expensive love hate boring fun , . ! ?"
).split()
PIECES = ["##s", "##ed", "##ing", "##gb", "##tb", "##ly", "##er", "##est", "16", "32", "8", "256", "512", "1"]


def write_tiny_tokenizer(directory: Path) -> BertTokenizerFast:
    """A word-piece tokenizer over a small fixed vocabulary, saved into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *PIECES]
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizerFast(vocab=str(directory / "vocab.txt"), do_lower_case=True)
    tokenizer.save_pretrained(directory)
    return tokenizer


def tiny_bert(
    num_labels: int = 2, *, seed: int = 0, problem_type: str | None = None, vocab_size: int = 128
) -> BertForSequenceClassification:
    """A random 2-layer BERT (hidden 32, 2 heads) in eval mode."""
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=num_labels,
        problem_type=problem_type,
        attn_implementation="eager",
    )
    model = BertForSequenceClassification(config)
    return model.eval()


def save_tiny_model(directory: Path, num_labels: int = 2, *, seed: int = 0, **config_extra: object) -> Path:
    """Save a tiny BERT and its tokenizer as a model directory a user would bring."""
    tokenizer = write_tiny_tokenizer(directory)
    model = tiny_bert(num_labels, seed=seed, vocab_size=len(tokenizer))
    for key, value in config_extra.items():
        setattr(model.config, key, value)
    model.save_pretrained(directory, safe_serialization=True)
    return directory


class RecordingProgress:
    """Stands in for ``tasks.progress.StageProgress`` (which reports to a Prefect server) and records the calls."""

    calls: ClassVar[list[tuple[int, int]]] = []

    def __init__(self, label: str) -> None:
        self.label = label

    phases: ClassVar[list[str]] = []

    def __call__(self, done: int, total: int) -> None:
        self.calls.append((done, total))

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self.phases.append(f"{self.label}: {name}")
        yield


@pytest.fixture(scope="session")
def tiny_classifier_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny-classifier"), num_labels=2)


@pytest.fixture(scope="session")
def tiny_regressor_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny-regressor"), num_labels=1, xattr_output_transform="log")


@pytest.fixture
def tiny_tokenizer(tmp_path: Path) -> BertTokenizerFast:
    return write_tiny_tokenizer(tmp_path / "tok")


@pytest.fixture(scope="module")
def amplified_classifier(tiny_classifier_dir: Path):
    """The tiny classifier in float64 on CPU with its linear weights x10.

    At initialisation (std 0.02) its logits barely move between inputs (F(x) - F(baseline) ~ 1e-5),
    which would make completeness checks vacuous and noise effects invisible.
    """
    from xattr.models.loading import load_model

    loaded = load_model(tiny_classifier_dir, dtype=torch.float64, device="cpu")
    with torch.no_grad():
        for module in loaded.model.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.mul_(10.0)
    return loaded


def _mask_probe_class() -> type:
    from xattr.methods.base import AttributionMethod, MethodParams
    from xattr.methods.context import Requirements

    class _MaskProbe(AttributionMethod[MethodParams]):
        """Test-only method: every token scores the number of kept heads it was given (proves the context)."""

        name = "mask_probe"
        summary = "test only"
        paper = "test only"

        @classmethod
        def requirements(cls, params: MethodParams) -> Requirements:
            return Requirements(head_masks=True)

        def attribute_batch(self, loaded, batch, targets, context):
            assert context.head_masks is not None
            return torch.full(batch.input_ids.shape, float(context.head_masks.union.sum()))

    return _MaskProbe


@pytest.fixture
def mask_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    """Register the test-only ``mask_probe`` method for one test."""
    from xattr.methods import base

    monkeypatch.setitem(base._REGISTRY, "mask_probe", _mask_probe_class())
