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


def test_batch_size_from_free_memory_by_hand() -> None:
    from xattr.device import BatchCost, batch_size_for_memory

    gib = 1 << 30
    # 0.8 * 10 GiB - 1 GiB = 7 GiB over 7 MiB per text = 1024 texts.
    assert batch_size_for_memory(10 * gib, BatchCost(7 << 20, gib)) == 1024
    # 0.8 * 1000 / 3 = 266.67 -> 266 -> 264 (a multiple of 8), capped at 100 when asked.
    assert batch_size_for_memory(1000, BatchCost(3)) == 264
    assert batch_size_for_memory(1000, BatchCost(3), limit=100) == 100
    assert batch_size_for_memory(1000, BatchCost(3), multiple=1) == 266
    assert batch_size_for_memory(1000, BatchCost(200)) == 4  # fewer than 8: not rounded to 0
    assert batch_size_for_memory(10, BatchCost(200)) == 1  # nothing fits: one text at a time
    with pytest.raises(ValueError, match="headroom"):
        batch_size_for_memory(1000, BatchCost(3), headroom=1.5)
    with pytest.raises(ValueError, match="per-text bytes"):
        batch_size_for_memory(1000, BatchCost(0))


class FakeCudaMemory:
    """Stands in for torch.cuda: a batch of r texts peaks at fixed + r * per_text above what was allocated."""

    def __init__(self, per_text: int, fixed: int, allocated: int, free: int) -> None:
        self.per_text, self.fixed, self.allocated, self.free = per_text, fixed, allocated, free
        self.peak = allocated
        self.calls: list[str] = []

    def run(self, rows: int) -> None:
        self.peak = max(self.peak, self.allocated + self.fixed + rows * self.per_text)

    def mem_get_info(self, device: torch.device) -> tuple[int, int]:
        return self.free, 2 * self.free

    def synchronize(self, device: torch.device) -> None:
        self.calls.append("sync")

    def reset_peak_memory_stats(self, device: torch.device) -> None:
        self.peak = self.allocated

    def memory_allocated(self, device: torch.device) -> int:
        return self.allocated

    def max_memory_allocated(self, device: torch.device) -> int:
        return self.peak

    def memory_reserved(self, device: torch.device) -> int:
        return self.allocated + 100_000_000  # the caching allocator holds 100 MB unused


def test_batch_cost_is_measured_from_two_probe_peaks_with_the_device_logic_injected() -> None:
    from xattr.device import BatchCost, batch_size_for_memory, free_memory, measure_batch_cost

    fake = FakeCudaMemory(per_text=5_000_000, fixed=300_000_000, allocated=900_000_000, free=80_000_000_000)
    cuda = torch.device("cuda", 0)  # only named: the fake answers every question
    cost = measure_batch_cost(fake.run, cuda, rows=16, memory=fake)
    assert cost == BatchCost(5_000_000, 300_000_000)
    assert fake.calls.count("sync") == 4
    free = free_memory(cuda, memory=fake)
    assert free == 80_100_000_000  # free on the device plus torch's unused cache
    # (0.8 * 80.1e9 - 0.3e9) / 5e6 = 12756 -> 12752.
    assert batch_size_for_memory(free, cost) == 12752
    assert free_memory(torch.device("cpu")) is None
    with pytest.raises(ValueError, match="CUDA device"):
        measure_batch_cost(fake.run, torch.device("cpu"), memory=fake)


def test_batch_results_wait_on_the_device_until_the_limit_or_the_flush() -> None:
    """DeviceRows (no host copy per batch) hands every result over once, in order, when the limit or flush comes."""
    from xattr.models.forward import DeviceRows

    stored: list[tuple[str, list[float]]] = []
    rows = DeviceRows(lambda key, values: stored.append((key, values.tolist())), limit_bytes=3 * 8)
    rows.add("a", torch.tensor([1.0], dtype=torch.float64))
    rows.add("b", torch.tensor([2.0], dtype=torch.float64, requires_grad=True) * 1)
    assert stored == []  # 16 bytes queued, below the limit
    rows.add("c", torch.tensor([3.0], dtype=torch.float64))
    assert stored == [("a", [1.0]), ("b", [2.0]), ("c", [3.0])]  # 24 bytes: copied together
    rows.add("d", torch.tensor([4.0], dtype=torch.float64))
    rows.flush()
    rows.flush()
    assert stored[-1] == ("d", [4.0]) and len(stored) == 4
