"""Regression and single-label classification through the one trainer (``train_model``): hold-out split,
folded target standardisation, saved config, seeding, progress, refusal to overwrite, row-named errors.

Ported from the removed ``fine_tune``: ``validation_fraction`` holds rows out, ``TrainResult.metrics`` are
the validation metrics (the training loss is in the history, ``TrainResult.train_loss``).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import random
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    BertModel,
    BertTokenizerFast,
)

import xattr.training.trainer as trainer_module
from xattr.data.synthetic_catalogue import generate_catalogue
from xattr.training.recipe import fold_target_standardisation, output_layer
from xattr.training.trainer import TrainConfig, TrainingRows, TrainResult, train_model

CATALOGUE = generate_catalogue(n=48, seed=0).frame
TEXTS: list[str] = CATALOGUE["text"].tolist()
PRICES: list[float] = CATALOGUE["price"].tolist()
FAST = TrainConfig(
    epochs=2,
    batch_size=8,
    learning_rate=1e-3,
    head_learning_rate=1e-2,
    max_length=32,
    validation_fraction=0.25,
    eval_batch_size=16,
    patience=None,
)


def _config(**values: object) -> TrainConfig:
    """The removed FineTuneConfig's defaults where a test relied on them: 10% held out, every epoch run."""
    return TrainConfig(**{"validation_fraction": 0.1, "patience": None, **values})  # type: ignore[arg-type]


def fine_tune(
    base_dir: Path,
    texts: list,
    targets: list,
    output: Path,
    *,
    task: str,
    num_labels: int | None = None,
    config: TrainConfig | None = None,
    log_target: bool = False,
    progress: object = None,
) -> TrainResult:
    """One text and one target per row through ``train_model`` (regression: one output; else 2 classes)."""
    config = dataclasses.replace(config or _config(), log_target=log_target)
    outputs = num_labels if num_labels is not None else (1 if task == "regression" else 2)
    return train_model(
        base_dir,
        TrainingRows(texts, labels=targets),
        output,
        task=task,  # type: ignore[arg-type]
        num_labels=outputs,
        config=config,
        progress=progress,  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models gain nothing from threads, and on a shared machine two spinning OpenMP
    threads make each step ~30x slower; the library itself never changes the thread count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _vocabulary(texts: list[str]) -> list[str]:
    words = sorted({w for t in texts for w in re.findall(r"\w+|[^\w\s]", t.lower())})
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BERT encoder (no head, like a sentence-embedding model) and tokenizer."""
    directory = tmp_path_factory.mktemp("tiny-encoder")
    vocab = _vocabulary(TEXTS)
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizerFast(vocab=str(directory / "vocab.txt"), do_lower_case=True)
    tokenizer.save_pretrained(directory)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def regression_run(
    base_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[TrainResult, BertForSequenceClassification, tuple[float, float]]:
    """One regression run; returns the result, the model just before folding, (mean, sd)."""
    captured: dict[str, object] = {}
    real_fold = trainer_module.fold_target_standardisation

    def spy(model: BertForSequenceClassification, mean: float, sd: float) -> None:
        captured["model"] = copy.deepcopy(model)
        captured["mean_sd"] = (mean, sd)
        real_fold(model, mean, sd)

    patch = pytest.MonkeyPatch()
    patch.setattr(trainer_module, "fold_target_standardisation", spy)
    try:
        output = tmp_path_factory.mktemp("runs") / "price-model"
        result = fine_tune(base_dir, TEXTS, PRICES, output, task="regression", config=FAST, log_target=True)
    finally:
        patch.undo()
    return result, captured["model"], captured["mean_sd"]  # type: ignore[return-value]


def _outputs(model: torch.nn.Module, tokenizer: object, texts: list[str]) -> torch.Tensor:
    inputs = tokenizer(texts, padding=True, truncation=True, max_length=32, return_tensors="pt")
    with torch.no_grad():
        return model.eval()(**inputs).logits.double()  # (rows, num_labels)


def test_regression_result_fields(regression_run: tuple) -> None:
    result, _, _ = regression_run
    assert result.task == "regression"
    assert (result.train_rows, result.validation_rows) == (36, 12)
    assert result.epochs_run == 2
    assert result.seconds > 0
    assert set(result.metrics) == {"loss", "r2", "rmse", "mape_price"}
    assert all(math.isfinite(v) for v in result.metrics.values()) and math.isfinite(result.train_loss)
    assert result.metrics["rmse"] > 0 and result.metrics["mape_price"] > 0


def test_saved_model_outputs_the_destandardised_target_exactly(regression_run: tuple) -> None:
    result, unfolded, (mean, sd) = regression_run
    saved = AutoModelForSequenceClassification.from_pretrained(result.output_dir)
    tokenizer = AutoTokenizer.from_pretrained(result.output_dir)
    assert sd > 0 and 4 < mean < 9  # log-price scale
    folded = _outputs(saved, tokenizer, TEXTS)
    destandardised = _outputs(unfolded, tokenizer, TEXTS) * sd + mean
    assert folded.shape == (48, 1)
    torch.testing.assert_close(folded, destandardised, rtol=0, atol=1e-5)


def test_saved_config_records_task_and_transform(regression_run: tuple) -> None:
    result, _, (mean, sd) = regression_run
    config = json.loads((result.output_dir / "config.json").read_text())
    assert config["xattr_task"] == "regression"
    assert config["xattr_output_transform"] == "log"
    assert config["problem_type"] == "regression"
    assert config["num_labels"] if "num_labels" in config else len(config["id2label"]) == 1
    assert config["xattr_target_mean"] == pytest.approx(mean)
    assert config["xattr_target_sd"] == pytest.approx(sd)


def test_saved_directory_holds_safetensors_and_tokenizer_only(regression_run: tuple) -> None:
    result, _, _ = regression_run
    names = {p.name for p in result.output_dir.iterdir()}
    assert "model.safetensors" in names and "config.json" in names
    assert "tokenizer_config.json" in names
    assert not any(name.endswith(".bin") for name in names)
    assert "xattr_training.json" in names  # the training report, saved in the same atomic rename
    leftovers = [p.name for p in result.output_dir.parent.iterdir() if ".tmp-" in p.name]
    assert leftovers == []


def test_without_holdout_mean_and_sd_are_of_all_log_targets(base_dir: Path, tmp_path: Path) -> None:
    config = _config(epochs=1, batch_size=16, max_length=32, validation_fraction=0.0)
    result = fine_tune(base_dir, TEXTS, PRICES, tmp_path / "m", task="regression", config=config, log_target=True)
    assert (result.train_rows, result.validation_rows) == (48, 0)
    assert result.metrics == {} and math.isfinite(result.train_loss)
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    log_prices = np.log(np.array(PRICES))
    assert saved["xattr_target_mean"] == pytest.approx(log_prices.mean(), rel=1e-12)
    assert saved["xattr_target_sd"] == pytest.approx(log_prices.std(), rel=1e-12)


def test_identity_target_is_recorded(base_dir: Path, tmp_path: Path) -> None:
    config = _config(epochs=1, batch_size=16, max_length=32)
    result = fine_tune(base_dir, TEXTS, PRICES, tmp_path / "m", task="regression", config=config)
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    assert saved["xattr_output_transform"] == "identity"
    assert saved["xattr_target_mean"] == pytest.approx(np.mean(PRICES), rel=0.5)
    assert "mape_price" not in result.metrics and "r2" in result.metrics


def test_same_seed_reproduces_weights_and_metrics(base_dir: Path, tmp_path: Path) -> None:
    config = _config(epochs=1, batch_size=8, max_length=32, validation_fraction=0.25)
    runs = [
        fine_tune(base_dir, TEXTS, PRICES, tmp_path / f"m{i}", task="regression", config=config, log_target=True)
        for i in range(2)
    ]
    assert runs[0].metrics == runs[1].metrics
    first = load_file(tmp_path / "m0" / "model.safetensors")
    second = load_file(tmp_path / "m1" / "model.safetensors")
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)

    other = _config(epochs=1, batch_size=8, max_length=32, validation_fraction=0.25, seed=1)
    fine_tune(base_dir, TEXTS, PRICES, tmp_path / "m2", task="regression", config=other, log_target=True)
    third = load_file(tmp_path / "m2" / "model.safetensors")
    assert not torch.equal(first["classifier.weight"], third["classifier.weight"])


def test_caller_random_state_and_threads_are_left_alone(base_dir: Path, tmp_path: Path) -> None:
    torch.manual_seed(123)
    random.seed(123)
    np.random.seed(123)
    threads = torch.get_num_threads()
    config = _config(epochs=1, batch_size=16, max_length=32)
    fine_tune(base_dir, TEXTS, PRICES, tmp_path / "m", task="regression", config=config)
    assert torch.get_num_threads() == threads
    torch.manual_seed(123)
    random.seed(123)
    np.random.seed(123)
    expected = (torch.rand(3), random.random(), np.random.rand())
    torch.manual_seed(123)
    random.seed(123)
    np.random.seed(123)
    fine_tune(base_dir, TEXTS, PRICES, tmp_path / "m2", task="regression", config=config)
    got = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(got[0], expected[0]) and got[1:] == expected[1:]


def test_progress_is_called_every_step(base_dir: Path, tmp_path: Path) -> None:
    calls: list[tuple[int, int, float]] = []
    config = _config(epochs=2, batch_size=10, max_length=32, validation_fraction=0.25)
    fine_tune(
        base_dir,
        TEXTS,
        PRICES,
        tmp_path / "m",
        task="regression",
        config=config,
        log_target=True,
        progress=lambda step, total, loss: calls.append((step, total, loss)),
    )
    # 36 training rows in batches of 10: 4 steps per epoch.
    assert [(s, t) for s, t, _ in calls] == [(s, 8) for s in range(1, 9)]
    assert all(math.isfinite(loss) and loss >= 0 for _, _, loss in calls)


def test_classification_run(base_dir: Path, tmp_path: Path) -> None:
    labels = [float(c in {"i7", "i9"}) for c in CATALOGUE["cpu"]]
    config = _config(epochs=1, batch_size=16, max_length=32, validation_fraction=0.25)
    result = fine_tune(base_dir, TEXTS, labels, tmp_path / "clf", task="classification", config=config)
    assert result.task == "classification"
    assert set(result.metrics) == {"loss", "accuracy", "macro_f1", "majority_class", "majority_accuracy"}
    assert 0 <= result.metrics["accuracy"] <= 1
    # 12 validation rows: accuracy is a multiple of 1/12.
    assert result.metrics["accuracy"] * 12 == pytest.approx(round(result.metrics["accuracy"] * 12))
    saved = json.loads((tmp_path / "clf" / "config.json").read_text())
    assert saved["xattr_task"] == "classification"
    assert saved["xattr_output_transform"] == "identity"
    assert saved["problem_type"] == "single_label_classification"
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "clf")
    assert model.config.num_labels == 2


def test_fold_target_standardisation_is_exact(base_dir: Path) -> None:
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(base_dir, num_labels=1).eval()
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    before = _outputs(model, tokenizer, TEXTS[:8])
    fold_target_standardisation(model, mean=6.5, sd=0.4)
    after = _outputs(model, tokenizer, TEXTS[:8])
    torch.testing.assert_close(after, before * 0.4 + 6.5, rtol=0, atol=1e-6)
    assert output_layer(model) is model.classifier
    with pytest.raises(ValueError, match="sd must be finite and > 0"):
        fold_target_standardisation(model, mean=0.0, sd=0.0)


def test_refuses_to_overwrite(base_dir: Path, tmp_path: Path) -> None:
    existing = tmp_path / "model"
    existing.mkdir()
    (existing / "keep.txt").write_text("old")
    with pytest.raises(FileExistsError, match="already exists"):
        fine_tune(base_dir, TEXTS, PRICES, existing, task="regression", config=FAST)
    assert [p.name for p in existing.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


@pytest.mark.parametrize(
    ("texts", "targets", "kwargs", "error", "message"),
    [
        ([], [], {}, ValueError, "the training split has no rows"),
        (["a", "b"], [1.0], {}, ValueError, "2 texts but 1 labels"),
        (["a", "b", "c"], [1.0, 2.0, float("nan")], {}, ValueError, "training row 3: label nan is not finite"),
        (["a", "b", "c"], [1.0, float("inf"), 2.0], {}, ValueError, "training row 2: label inf is not finite"),
        (["a", "b"], [1.0, "x"], {}, ValueError, "training row 2: label 'x' is not a number"),
        (
            ["a", "b", "c"],
            [1.0, 0.0, -1.0],
            {"log_target": True},
            ValueError,
            "training row 2: log_target needs values > 0, got 0.0",
        ),
        (["a", None, "c"], [1.0, 2.0, 3.0], {}, TypeError, "training row 2: text must be a string"),
        (["a", "b"], [1.0, 2.0], {"num_labels": 3}, ValueError, "num_labels must be 1"),
    ],
)
def test_regression_input_validation_names_the_row(
    base_dir: Path,
    tmp_path: Path,
    texts: list,
    targets: list,
    kwargs: dict,
    error: type[Exception],
    message: str,
) -> None:
    with pytest.raises(error, match=message):
        fine_tune(base_dir, texts, targets, tmp_path / "m", task="regression", **kwargs)
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize(
    ("targets", "num_labels", "message"),
    [
        ([0.0, 1.0, 0.5], 2, r"training row 3: class 0.5 is not an index in 0..1"),
        ([0.0, -1.0, 1.0], 2, r"training row 2: class -1.0 is not an index in 0..1"),
        ([0.0, 1.0, 2.0], 2, r"training row 3: class 2.0 is not an index in 0..1"),
        ([0.0, 1.0, 1.0], 1, "num_labels >= 2"),
    ],
)
def test_classification_input_validation(
    base_dir: Path, tmp_path: Path, targets: list[float], num_labels: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        fine_tune(
            base_dir,
            ["a", "b", "c"],
            targets,
            tmp_path / "m",
            task="classification",
            num_labels=num_labels,
        )


def test_bad_task_and_missing_base(base_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown task 'ranking'"):
        fine_tune(base_dir, ["a"], [1.0], tmp_path / "m", task="ranking")  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        fine_tune(tmp_path / "nope", ["a"], [1.0], tmp_path / "m", task="regression")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("epochs", 0),
        ("batch_size", 0),
        ("learning_rate", 0.0),
        ("head_learning_rate", float("nan")),
        ("weight_decay", -0.1),
        ("warmup_fraction", 1.0),
        ("validation_fraction", 1.0),
        ("max_length", 0),
        ("max_grad_norm", 0.0),
    ],
)
def test_config_rejects_bad_values(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=f"TrainConfig.{field}"):
        TrainConfig(**{field: value})
