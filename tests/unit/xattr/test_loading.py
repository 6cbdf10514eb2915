from __future__ import annotations

from pathlib import Path

import pytest
import torch

from xattr.models.loading import ModelLoadError, load_model
from xattr.models.tasks import infer_task


def test_missing_directory_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelLoadError, match="no-such-model.*does not exist"):
        load_model(missing)


def test_directory_without_config_is_named(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="has no config.json"):
        load_model(tmp_path)


def test_loads_on_cpu_in_eval_mode_with_eager_attention(tiny_classifier_dir: Path) -> None:
    loaded = load_model(tiny_classifier_dir, need_attentions=True, device="cpu")
    assert loaded.task == "classification"
    assert loaded.device == torch.device("cpu")
    assert not loaded.model.training
    assert loaded.model.config._attn_implementation == "eager"
    out = loaded.model(input_ids=torch.tensor([[2, 5, 6, 3]]), output_attentions=True)
    assert len(out.attentions) == 2


def test_regressor_output_transform_is_read(tiny_regressor_dir: Path) -> None:
    loaded = load_model(tiny_regressor_dir)
    assert loaded.task == "regression"
    assert loaded.output_transform == "log"


class _Config:
    def __init__(self, num_labels: int, problem_type: str | None = None) -> None:
        self.num_labels = num_labels
        self.problem_type = problem_type


@pytest.mark.parametrize(
    ("num_labels", "problem_type", "expected"),
    [
        (1, None, "regression"),
        (3, None, "classification"),
        (5, "multi_label_classification", "multi_label"),
        (2, "single_label_classification", "classification"),
    ],
)
def test_task_inference(num_labels: int, problem_type: str | None, expected: str) -> None:
    assert infer_task(_Config(num_labels, problem_type)) == expected


def test_task_contradicting_the_model_is_refused() -> None:
    with pytest.raises(ValueError, match="needs a model with one output"):
        infer_task(_Config(3), "regression")
    with pytest.raises(ValueError, match="unknown task 'qa'"):
        infer_task(_Config(3), "qa")
    assert infer_task(_Config(2), "pair_classification") == "pair_classification"


def test_special_token_strings_inside_a_text_are_tokenised_as_text(tiny_classifier_dir) -> None:
    from xattr.models.loading import load_model

    loaded = load_model(tiny_classifier_dir, device="cpu")
    tokenizer = loaded.tokenizer
    ids = tokenizer("the [CLS] [SEP] [MASK] movie")["input_ids"]
    special = set(tokenizer.all_special_ids)
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id  # added by the tokenizer
    assert not special & set(ids[1:-1]) - {tokenizer.unk_token_id}, tokenizer.convert_ids_to_tokens(ids)
    assert not tokenizer("\u200b\u200b", add_special_tokens=False)["input_ids"]  # zero-width: no token at all
