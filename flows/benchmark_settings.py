"""Configuration of the ``benchmark`` flow: one dataset, one model (fine-tuned or given), many methods."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from flows.config_files import (
    FlowSettingsBase,
    SettingsError,
    StrictSettings,
    TrackingSettings,
    load_config_file,
    removal_fractions,
    resolve_data_root,
)
from flows.settings import AttributionSettings, EvaluationSettings, HeadsSettings, OptimiserSettings
from flows.train_settings import LdavSettings
from xattr.data.datasets import DATASETS
from xattr.metrics.mape import DEFAULT_MASK_FRACTIONS
from xattr.training.trainer import LdavConfig, TrainConfig


class DatasetSettings(StrictSettings):
    """Which dataset, which files, how much of it."""

    name: str = Field(description=f"one of: {', '.join(sorted(DATASETS))}")
    train: Path | None = Field(None, description="train split file, relative to data_root")
    eval: Path | None = Field(None, description="evaluation (dev) split file; omitted: split off train")
    eval_fraction: float = Field(0.2, gt=0.0, lt=1.0, description="share of train split off when eval is omitted")
    params: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the dataset reader")
    train_texts: int | None = Field(None, ge=2, description="seeded subsample of the train split")
    eval_texts: int | None = Field(None, ge=1, description="seeded subsample of the evaluation split (the pool)")
    seed: int = 0

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        if name not in DATASETS:
            raise ValueError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}")
        return name

    @property
    def task(self) -> str:
        return DATASETS[self.name].task


class TrainSettings(OptimiserSettings):
    """Fine-tuning of the base model on the train split (skipped when ``model.path`` is given)."""

    base_model: str | None = Field(None, description="base model directory; default all-MiniLM-L6-v2")
    epochs: int = Field(1, ge=1)
    max_length: int = Field(64, ge=8)
    validation_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    log_target: bool = Field(False, description="regression: train on log(label) (prices)")
    num_labels: int | None = Field(None, ge=1, description="classes or labels; default: largest label index + 1")
    ldav: LdavSettings = Field(
        default_factory=LdavSettings, description="train LDAV class vectors too (single-label classifiers; method ldav)"
    )

    def train_config(self, **fixed: Any) -> TrainConfig:
        """The trainer's settings: every epoch runs; ``validation_fraction`` of the train split is held out."""
        return super().train_config(patience=None, ldav=LdavConfig(**self.ldav.model_dump()), **fixed)


class BenchmarkModelSettings(StrictSettings):
    """A given model (no fine-tuning) or none (fine-tune ``train.base_model``)."""

    path: str | None = Field(None, description="fine-tuned model directory; empty: fine-tune one")
    max_length: int | None = Field(None, ge=2, description="explain with this length; default train.max_length")
    device: str | None = None


class BenchmarkEvaluation(EvaluationSettings):
    """Which metrics, under which removal protocol."""

    metrics: list[str] | None = Field(
        None, description="aopc, degradation, switching_point, mape, gold_auc, gold_pearson; empty: all that apply"
    )
    mape_fractions: list[float] = Field(default_factory=lambda: list(DEFAULT_MASK_FRACTIONS))
    mape_threshold: float = Field(0.01, gt=0.0, description="LAFA 5.3: texts within this relative error")
    neighbour_precision: bool = Field(
        False, description="LAFA Eq. 8 per hidden layer against the dataset's category (group) on the evaluation pool"
    )
    neighbours: int = Field(10, ge=1, description="M of LAFA Eq. 8")
    neighbour_pool: Literal["eval", "train+eval"] = Field(
        "train+eval",
        description="texts that neighbour-using methods (LAFA, neighbour SHAP) search: the scored texts only, or "
        "the scored texts and the train split (the scored texts are still the only ones explained)",
    )

    @field_validator("mape_fractions")
    @classmethod
    def _mape_fractions(cls, values: list[float]) -> list[float]:
        return removal_fractions(values)

    def stage_arguments(self, metrics: tuple[str, ...] | None = None) -> dict[str, Any]:
        """Keyword arguments of the evaluate stage, with the metric families ``metrics`` to compute."""
        return super().stage_arguments() | {
            "metrics": metrics,
            "mape_fractions": tuple(self.mape_fractions),
            "mape_threshold": self.mape_threshold,
        }


class BenchmarkSettings(FlowSettingsBase):
    """Everything the ``benchmark`` flow needs."""

    INPUTS = ("model.path", "train.base_model")

    name: str = "benchmark"
    workdir: Path = Path("xattr-benchmarks")
    data_root: Path = Field(Path("../shared/data"), description="dataset files are relative to this")
    dataset: DatasetSettings
    model: BenchmarkModelSettings = Field(default_factory=BenchmarkModelSettings)
    train: TrainSettings = Field(default_factory=TrainSettings)
    attribution: AttributionSettings = Field(default_factory=AttributionSettings)
    evaluation: BenchmarkEvaluation = Field(default_factory=BenchmarkEvaluation)
    heads: HeadsSettings = Field(
        default_factory=HeadsSettings, description="head statistics (mined on the train split) for Mask-LRP"
    )
    tracking: TrackingSettings = Field(default_factory=lambda: TrackingSettings(experiment="xattr-benchmark"))

    @model_validator(mode="after")
    def _files(self) -> BenchmarkSettings:
        needs_path = DATASETS[self.dataset.name].needs_path
        if needs_path and self.dataset.train is None and self.dataset.eval is None:
            raise ValueError(f"dataset {self.dataset.name!r} needs dataset.train and/or dataset.eval files")
        if needs_path and self.model.path is None and self.dataset.train is None:
            raise ValueError("fine-tuning needs dataset.train (or give model.path)")
        return self

    def check_inputs(self, source: Path | str) -> None:
        """As :meth:`FlowSettingsBase.check_inputs`, and the dataset files under ``data_root``."""
        super().check_inputs(source)
        for key in ("train", "eval"):
            found = self.data_file(getattr(self.dataset, key, None))
            if found is not None and not found.exists():
                raise SettingsError(
                    f"config file {str(source)!r}: dataset.{key}: {str(found)!r} does not exist (data root"
                    f" {self.data_root}: set --data-root or XATTR_DATA_ROOT)"
                )

    def data_file(self, value: Path | None) -> Path | None:
        """A dataset file resolved against ``data_root``."""
        if value is None:
            return None
        return value if value.is_absolute() else (self.data_root / value).resolve()

    def explain_length(self) -> int:
        return self.model.max_length or self.train.max_length


def load_benchmark_settings(
    path: Path | str, overrides: dict[str, Any] | None = None, *, data_root: Path | str | None = None
) -> BenchmarkSettings:
    """Read a benchmark YAML config.

    ``data_root`` (relative paths: relative to the repository root, the nearest directory above
    the config with a ``pyproject.toml``) can be overridden by the argument or the environment
    variable ``XATTR_DATA_ROOT``; ``workdir`` and ``model.path`` are relative to the config file.

    Raises:
        SettingsError: Missing or unreadable file, invalid YAML or invalid values (file and field named).
    """

    def data_root_of(base: Path, raw: dict[str, Any]) -> None:
        raw["data_root"] = str(resolve_data_root(base, raw.get("data_root"), data_root))

    return load_config_file(
        BenchmarkSettings,
        path,
        overrides,
        models=("model.path",),
        workdir="xattr-benchmarks",
        prepare=data_root_of,
    )
