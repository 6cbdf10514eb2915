"""The recipe's pieces: learning-rate groups, output-bias starts, the schedule, the split, the atomic save."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from tests.conftest import save_tiny_model
from xattr.training.recipe import (
    class_log_priors,
    frequency_log_odds,
    holdout_split,
    init_head_bias,
    output_layer,
    parameter_groups,
    save_atomically,
    warmup_linear_decay,
)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("base"), num_labels=2)


def _model(base: Path, num_labels: int):
    return AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=num_labels, ignore_mismatched_sizes=True, use_safetensors=True
    )


def test_head_and_pooler_get_the_head_rate_and_no_decay_skips_biases_and_layer_norms(base: Path) -> None:
    model = _model(base, 2)
    groups = parameter_groups(model, learning_rate=1e-4, head_learning_rate=1e-3, weight_decay=0.01)
    names = {id(p): n for n, p in model.named_parameters()}
    assert sum(len(g["params"]) for g in groups) == len(names)
    for group in groups:
        for parameter in group["params"]:
            name = names[id(parameter)]
            head = name.startswith("classifier.") or ".pooler." in name
            assert group["lr"] == (1e-3 if head else 1e-4), name
            no_decay = name.endswith(".bias") or "LayerNorm" in name
            assert group["weight_decay"] == (0.0 if no_decay else 0.01), name


def test_bias_starts_at_the_training_priors(base: Path) -> None:
    model = _model(base, 3)
    init_head_bias(model, "classification", np.array([0, 0, 0, 1]), 3)
    # add-one counts 4, 2, 1 of 7, centred
    log_prior = np.log(np.array([4.0, 2.0, 1.0]) / 7)
    expected = log_prior - log_prior.mean()
    assert output_layer(model).bias.detach().double().numpy() == pytest.approx(expected, abs=1e-6)
    assert class_log_priors(np.array([0, 0, 0, 1]), 3) == pytest.approx(expected)
    targets = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0], [1, 0, 0]], dtype=np.float32)
    init_head_bias(model, "multi_label", targets, 3)
    assert output_layer(model).bias.detach().numpy() == pytest.approx(frequency_log_odds(targets))
    regressor = _model(base, 1)
    init_head_bias(regressor, "regression", np.array([3.0, 4.0]), 1)
    assert output_layer(regressor).bias.item() == 0.0


def test_schedule_warms_up_then_decays_to_zero() -> None:
    factor = warmup_linear_decay(10, 0.2)  # 2 warm-up steps
    assert [factor(s) for s in range(3)] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert factor(6) == pytest.approx(0.5) and factor(10) == 0.0


def test_split_from_a_generator_continues_it() -> None:
    generator = np.random.default_rng(5)
    train, validation = holdout_split(20, 0.25, generator)
    fresh = np.random.default_rng(5)
    order = fresh.permutation(20)
    assert np.array_equal(validation, np.sort(order[:5])) and np.array_equal(train, np.sort(order[5:]))
    assert np.array_equal(generator.permutation(3), fresh.permutation(3))  # the same later draws
    assert len(holdout_split(3, 0.0, 0)[1]) == 0 and len(holdout_split(2, 0.9, 0)[0]) == 1
    with pytest.raises(ValueError, match="no rows"):
        holdout_split(0, 0.1, 0)


def test_atomic_save_refuses_an_existing_directory_and_leaves_nothing_behind(base: Path, tmp_path: Path) -> None:
    model, tokenizer = _model(base, 2), AutoTokenizer.from_pretrained(base)
    save_atomically(tmp_path / "m", model, tokenizer, texts={"note.json": "{}"})
    assert (tmp_path / "m" / "note.json").read_text() == "{}"
    assert (tmp_path / "m" / "model.safetensors").stat().st_mode & 0o777 == 0o644
    with pytest.raises(FileExistsError, match="never overwritten"):
        save_atomically(tmp_path / "m", model, tokenizer)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    assert torch.equal(output_layer(model).weight, output_layer(_model(tmp_path / "m", 2)).weight)
