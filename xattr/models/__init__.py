"""Models: loading, task types, tokenisation with word alignment, batched forward passes."""

from __future__ import annotations

from xattr.models.encoding import Batch, EncodedText, encode_texts, iter_batches
from xattr.models.forward import mean_pooled_hidden_states, predict_logits
from xattr.models.loading import LoadedModel, ModelLoadError, ModelSpec, from_modules, load_model
from xattr.models.targets import resolve_targets
from xattr.models.tasks import TASKS, infer_task

__all__ = [
    "TASKS",
    "Batch",
    "EncodedText",
    "LoadedModel",
    "ModelLoadError",
    "ModelSpec",
    "encode_texts",
    "from_modules",
    "infer_task",
    "iter_batches",
    "load_model",
    "mean_pooled_hidden_states",
    "predict_logits",
    "resolve_targets",
]
