"""Configuration of the ``train`` flow: one pydantic model, read from YAML."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from flows.config_files import (
    FlowSettingsBase,
    StrictSettings,
    load_config_file,
)
from flows.settings import CorpusSettings, OptimiserSettings
from xattr.types import TaskName


class SplitSettings(StrictSettings):
    """Where the validation rows come from."""

    validation_path: Path | None = Field(None, description="a separate validation file (same columns)")
    validation_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="held out of the corpus when no file")
    seed: int = Field(0, description="seed of the hold-out split")


class TrainingSettings(OptimiserSettings):
    """Optimiser and early stopping (see ``xattr.training.trainer.TrainConfig``)."""

    weight_decay: float = Field(0.01, ge=0)
    warmup_fraction: float = Field(0.1, ge=0, lt=1)
    max_grad_norm: float | None = Field(1.0, gt=0)
    eval_batch_size: int = Field(128, ge=1)
    patience: int | None = Field(2, ge=1, description="epochs without validation improvement before stopping")
    min_delta: float = Field(0.0, ge=0)
    log_target: bool = Field(False, description="regression: train on log(target)")


class LdavSettings(StrictSettings):
    """LDAV class vectors trained with the classifier (LDAV paper Section 3.1, Appendix C)."""

    enabled: bool = False
    rho1: float = Field(1.0, ge=0, description="weight of L2 (text vector to its class's vector)")
    rho2: float = Field(0.01, ge=0, description="weight of L3 (pairwise squared distance of class vectors)")
    distance: Literal["cosine", "euclidean"] = Field("cosine", description="L2's distance (Appendix C: cosine)")
    vector_class: Literal["predicted", "label"] = Field("predicted", description="L2 pulls towards this class")
    learning_rate: float = Field(1e-4, gt=0, description="AdamW learning rate of the class vectors")
    layer: int | None = Field(
        None,
        ge=1,
        description="pool this hidden layer's token states instead of the input embeddings (method ldav "
        "with space: hidden; not the paper's)",
    )


class ConceptSettings(StrictSettings):
    """Phrases and word lists scored against every class vector after training (Sections 4.7-4.8)."""

    phrases: list[str] = Field(default_factory=list)
    word_lists: dict[str, list[str]] = Field(default_factory=dict, description="name -> words pooled together")


class TrainSettings(FlowSettingsBase):
    """Everything the ``train`` flow needs."""

    INPUTS = ("corpus.path", "split.validation_path", "base_model")

    name: str = Field("train", description="run name in MLflow; also names the model directory")
    workdir: Path = Field(Path("xattr-runs"), description="models, mlflow.db and MLflow artifacts go here")
    corpus: CorpusSettings
    base_model: str | None = Field(
        None,
        description="pretrained encoder to fine-tune (a directory or hub id); empty: the bundled all-MiniLM-L6-v2"
        " (flows.config_files.base_model_path)",
    )
    task: TaskName | None = Field(None, description="inferred from the corpus settings and labels when empty")
    output_dir: Path | None = Field(None, description="the model directory (must not exist); default under workdir")
    split: SplitSettings = Field(default_factory=SplitSettings)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    ldav: LdavSettings = Field(default_factory=LdavSettings)
    concepts: ConceptSettings = Field(default_factory=ConceptSettings)

    @model_validator(mode="after")
    def _consistent(self) -> TrainSettings:
        if self.corpus.label_column is None:
            raise ValueError("corpus.label_column is required for training")
        if self.ldav.enabled and (self.task in ("regression", "multi_label") or self.corpus.multi_label):
            raise ValueError("ldav.enabled needs a single-label classifier (classification or pair_classification)")
        if (self.concepts.phrases or self.concepts.word_lists) and not self.ldav.enabled:
            raise ValueError("concepts need LDAV class vectors: set ldav.enabled: true")
        if self.training.patience is not None and self.split.validation_path is None:
            if self.split.validation_fraction == 0:
                raise ValueError(
                    "training.patience needs validation rows: set split.validation_fraction > 0 or null it"
                )
        return self


def load_train_settings(path: Path | str, overrides: dict[str, Any] | None = None) -> TrainSettings:
    """Read a train config; relative paths are taken relative to the config file.

    Raises:
        SettingsError: Missing file, invalid YAML or invalid values (file and fields named).
    """
    return load_config_file(
        TrainSettings,
        path,
        overrides,
        files=("corpus.path", "split.validation_path", "output_dir"),
        models=("base_model",),
    )
