"""Stage: neighbour precision of every layer against the corpus's group column (LAFA Eq. 8)."""

from __future__ import annotations

import time

import numpy as np

from storage import ArtifactRef, read_artifact
from tasks.caching import stage_task
from tasks.corpus_io import read_corpus
from tasks.models import loaded_model
from tasks.progress import StageProgress
from tasks.results import RunContext, StageResult
from xattr.models.loading import ModelSpec
from xattr.neighbours.precision import layer_precisions


@stage_task(name="layer_precision")
def layer_precision_stage(
    corpus: ArtifactRef,
    model: ModelSpec,
    neighbours: int,
    max_texts: int,
    seed: int,
    batch_size: int,
    context: RunContext,
) -> StageResult:
    """Measure, for each hidden layer, how often a text's neighbours share its group.

    Texts without a group are left out (counted as ``without_group``).

    Metrics: ``neighbour_precision@<layer>`` (a curve over layers) and ``best_layer``.

    Raises:
        ValueError: The corpus has no group column values.
    """
    started = time.perf_counter()
    groups = read_artifact(corpus).column("group").to_pylist()
    if all(g is None for g in groups):
        raise ValueError("layer precision needs corpus.group_column (a category per text)")
    loaded = loaded_model(model)
    view = read_corpus(corpus, loaded)
    # Texts without a category have no neighbour to agree with: "None" is not a shared category.
    chosen = np.asarray([i for i, g in enumerate(groups) if g is not None], dtype=int)
    if len(chosen) > max_texts:
        chosen = np.sort(np.random.default_rng(seed).choice(len(chosen), size=max_texts, replace=False))
    precision = layer_precisions(
        loaded,
        [view.encoded[i] for i in chosen],
        [groups[i] for i in chosen],
        m=neighbours,
        batch_size=batch_size,
        progress=StageProgress("layer_precision"),
    )
    best = max(precision, key=lambda layer: (precision[layer], -layer))
    metrics = {f"neighbour_precision@{layer}": value for layer, value in precision.items()}
    metrics.update(
        best_layer=float(best),
        texts=float(len(chosen)),
        without_group=float(len(groups) - sum(g is not None for g in groups)),
    )
    return StageResult(
        "layer_precision",
        {},
        metrics,
        {"neighbours": str(neighbours), "max_texts": str(max_texts), "seed": str(seed)},
        time.perf_counter() - started,
        (f"best layer by neighbour precision: {best} ({precision[best]:.3f})",),
    )
