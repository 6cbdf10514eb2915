"""A registry of dataset adapters: name -> reader of one split into corpus columns, plus splitting.

Every reader returns the canonical corpus columns (``doc_id, text, text_pair, label, label_set,
group``) and, where the dataset has them, the gold columns (``gold_spans``, ``gold_word_scores``,
``gold_unlocated``) that :func:`xattr.data.corpus.load_corpus` accepts. Datasets that ship one
file only (AG News and IMDB test subsets, product catalogues) are split into train and evaluation
parts with :func:`split_frame`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from xattr.data.corpus import GOLD_COLUMNS

CANONICAL: tuple[str, ...] = ("doc_id", "text", "text_pair", "label", "label_set", "group", *GOLD_COLUMNS)


class DatasetError(ValueError):
    """A dataset cannot be read or split as configured; the message names the dataset and file."""


@dataclass(frozen=True)
class DatasetAdapter:
    """How to read one dataset.

    Attributes:
        name: Registry name used in configs.
        task: The model task it trains: ``classification``, ``multi_label`` or ``regression``.
        reader: ``"module:function"``, imported lazily (an adapter written elsewhere may be absent).
        needs_path: Whether the reader takes a file path (the synthetic catalogue does not).
        reference: Where the dataset comes from.
    """

    name: str
    task: str
    reader: str
    needs_path: bool = True
    reference: str = ""

    def function(self) -> Callable[..., Any]:
        module, _, attribute = self.reader.partition(":")
        try:
            return getattr(importlib.import_module(module), attribute)
        except (ImportError, AttributeError) as exc:
            raise DatasetError(f"dataset {self.name!r}: its reader {self.reader} is not available ({exc})") from exc


DATASETS: dict[str, DatasetAdapter] = {
    a.name: a
    for a in (
        DatasetAdapter("sst", "classification", "xattr.data.sst:read_sst", reference="Socher et al. 2013, PTB trees"),
        DatasetAdapter("glue_sst2", "classification", "xattr.data.glue_sst2:read_glue_sst2", reference="GLUE SST-2"),
        DatasetAdapter("webnlg", "multi_label", "xattr.data.webnlg:read_webnlg", reference="Gardent et al. 2017"),
        DatasetAdapter("ag_news", "classification", "xattr.data.ag_news:read_ag_news", reference="Zhang et al. 2015"),
        DatasetAdapter("imdb", "classification", "xattr.data.imdb:read_imdb", reference="Maas et al. 2011"),
        DatasetAdapter("products", "regression", "xattr.data.products:read_products", reference="Walmart-Amazon"),
        DatasetAdapter(
            "synthetic_catalogue",
            "regression",
            "xattr.data.synthetic_catalogue:generate_catalogue",
            needs_path=False,
            reference="xattr synthetic laptops",
        ),
    )
}


def get_dataset(name: str) -> DatasetAdapter:
    """The adapter registered as ``name``.

    Raises:
        DatasetError: Unknown name (the message lists the known ones).
    """
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}")
    return DATASETS[name]


def read_dataset(name: str, path: Path | str | None, params: dict[str, Any] | None = None) -> pd.DataFrame:
    """Read one split of a registered dataset into the canonical (and gold) corpus columns.

    Args:
        name: Registry name (see :data:`DATASETS`).
        path: The split's file (``None`` for the synthetic catalogue).
        params: Keyword arguments of the reader (e.g. ``fine_grained`` for SST; ``n`` and
            ``seed`` for the synthetic catalogue).

    Returns:
        The frame, with only canonical and gold columns.

    Raises:
        DatasetError: Unknown dataset, a missing path, or a reader without ``doc_id``/``text``.
    """
    adapter = get_dataset(name)
    reader = adapter.function()
    params = dict(params or {})
    if adapter.needs_path:
        if path is None:
            raise DatasetError(f"dataset {name!r} needs a file path")
        frame = reader(Path(path), **params)
    else:
        frame = reader(**params)
    if name == "synthetic_catalogue":
        frame = frame.frame.rename(columns={"price": "label", "category": "group"})
    missing = [c for c in ("doc_id", "text") if c not in frame.columns]
    if missing:
        raise DatasetError(f"dataset {name!r} ({path}): the reader returned no {', '.join(missing)} column")
    frame = frame[[c for c in CANONICAL if c in frame.columns]].reset_index(drop=True)
    for column in ("text_pair", "label", "label_set", "group"):
        if column not in frame.columns:
            frame[column] = pd.Series([None] * len(frame), dtype="float64" if column == "label" else object)
    return frame


def split_frame(frame: pd.DataFrame, eval_fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A seeded random split into (train, eval); the evaluation part gets ``round(fraction * n)`` rows.

    Raises:
        DatasetError: ``eval_fraction`` outside (0, 1), or a part would be empty.
    """
    if not 0.0 < eval_fraction < 1.0:
        raise DatasetError(f"eval_fraction must be in (0, 1), got {eval_fraction}")
    n_eval = int(round(eval_fraction * len(frame)))
    if n_eval == 0 or n_eval == len(frame):
        raise DatasetError(f"splitting {len(frame)} rows with eval_fraction {eval_fraction} leaves a part empty")
    order = np.random.default_rng(seed).permutation(len(frame))
    eval_rows = np.sort(order[:n_eval])
    train_rows = np.sort(order[n_eval:])
    return frame.iloc[train_rows].reset_index(drop=True), frame.iloc[eval_rows].reset_index(drop=True)


def subsample(frame: pd.DataFrame, n: int | None, seed: int) -> pd.DataFrame:
    """``n`` rows drawn with ``seed`` (in file order), or the whole frame when ``n`` is None or larger."""
    if n is None or n >= len(frame):
        return frame.reset_index(drop=True)
    rows = np.sort(np.random.default_rng(seed).choice(len(frame), size=n, replace=False))
    return frame.iloc[rows].reset_index(drop=True)
