"""One loaded model per process and spec, shared by the stages of a flow run."""

from __future__ import annotations

import functools
import threading

from xattr.models.loading import LoadedModel, ModelSpec

_lock = threading.Lock()


@functools.lru_cache(maxsize=2)
def _load(spec: ModelSpec) -> LoadedModel:
    return spec.load()


def loaded_model(spec: ModelSpec) -> LoadedModel:
    """The model for ``spec``, loaded once per process (tasks may run in worker threads)."""
    with _lock:
        return _load(spec)
