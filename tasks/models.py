"""One loaded model per worker thread and spec, shared by the stages that thread runs.

Per thread, not per process: methods patch the model they run on for the length of a pass (LRP
attaches forward hooks, the attention family switches the attention implementation), and hooks
fire on every forward pass through the module. Two shards explained at the same time in two
worker threads of one process must therefore not share a model object (seen: KeyError inside the
LRP hooks, wrong shapes). Each thread loads its own copy once; Dask workers are processes anyway.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from xattr.models.loading import LoadedModel, ModelSpec

#: Models kept per thread (least recently used dropped first).
MODELS_PER_THREAD = 2


class _ThreadModels(threading.local):
    def __init__(self) -> None:
        self.cache: OrderedDict[ModelSpec, LoadedModel] = OrderedDict()


_models = _ThreadModels()


def loaded_model(spec: ModelSpec) -> LoadedModel:
    """The model for ``spec``, loaded once per worker thread."""
    cache = _models.cache
    if spec in cache:
        cache.move_to_end(spec)
        return cache[spec]
    cache[spec] = spec.load()
    while len(cache) > MODELS_PER_THREAD:
        cache.popitem(last=False)
    return cache[spec]
