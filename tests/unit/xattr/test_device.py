"""Models and tensors go to CUDA when present, CPU otherwise; a CUDA request without CUDA is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from xattr.device import pick_device
from xattr.models.encoding import collate, encode_texts
from xattr.models.loading import load_model
from xattr.training.trainer import TrainConfig, TrainingRows, train_model

EXPECTED = "cuda" if torch.cuda.is_available() else "cpu"


def test_default_device_is_cuda_exactly_when_present() -> None:
    assert pick_device(None).type == EXPECTED
    assert pick_device("auto").type == EXPECTED
    assert pick_device("cpu") == torch.device("cpu")


def test_model_and_batches_follow_the_chosen_device(tiny_classifier_dir: Path) -> None:
    loaded = load_model(tiny_classifier_dir)
    assert loaded.device.type == EXPECTED
    assert {p.device.type for p in loaded.model.parameters()} == {EXPECTED}
    encoded = encode_texts(loaded.tokenizer, ["good film", "bad plot"], max_length=16)
    batch = collate(encoded, [0, 1], loaded.tokenizer.pad_token_id).to(loaded.device)
    assert batch.input_ids.device.type == EXPECTED


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_request_without_cuda_is_refused(tiny_regressor_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="device 'cuda' requested but CUDA is not available here"):
        pick_device("cuda")
    with pytest.raises(ValueError, match="device 'cuda' requested but CUDA is not available here"):
        load_model(tiny_regressor_dir, device="cuda")
    with pytest.raises(ValueError, match="device 'cuda' requested but CUDA is not available here"):
        train_model(
            tiny_regressor_dir,
            TrainingRows(["a b", "c d", "e f", "g h"], labels=[1.0, 2.0, 3.0, 4.0]),
            tmp_path / "out",
            task="regression",
            num_labels=1,
            config=TrainConfig(epochs=1, device="cuda"),
        )
    assert not (tmp_path / "out").exists()
