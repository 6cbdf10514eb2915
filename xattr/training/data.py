"""Training rows from corpus files and canonical corpus frames: label names, task inference, class counts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from xattr.data.corpus import CorpusColumns, CorpusError, LoadedCorpus, load_corpus, read_table_file
from xattr.training.trainer import TrainingRows
from xattr.types import TaskName

__all__ = ["LabelledCorpus", "class_count", "labelled_corpus", "rows_of"]


@dataclass(frozen=True)
class LabelledCorpus:
    """A corpus read for training.

    Attributes:
        corpus: The canonical corpus (see :func:`xattr.data.corpus.load_corpus`).
        task: The task, as requested or inferred.
        num_labels: Classes (1 for regression).
        id2label: Class names by index (string labels sorted by name; numeric class labels keep
            their index as the name).
    """

    corpus: LoadedCorpus
    task: TaskName
    num_labels: int
    id2label: dict[int, str]


def _label_names(path: Path, columns: CorpusColumns) -> list[str] | None:
    """Sorted distinct label names when the label column holds non-numeric strings, else ``None``."""
    raw = read_table_file(path, columns.encoding)
    if columns.label is None or columns.label not in raw.columns:
        return None
    values = raw[columns.label].dropna()
    items: list[object] = []
    for value in values:
        if columns.multi_label:
            parts = value.split(columns.label_separator) if isinstance(value, str) else list(value)
            items += [p.strip() if isinstance(p, str) else p for p in parts if str(p).strip()]
        else:
            items.append(value)
    strings = [v for v in items if isinstance(v, str)]
    if not strings:
        return None
    try:
        [float(v) for v in strings]
        return None
    except ValueError:
        return sorted({str(v) for v in items})


def labelled_corpus(
    path: Path | str,
    columns: CorpusColumns,
    *,
    task: TaskName | None = None,
    id2label: dict[int, str] | None = None,
    empty_texts: str = "error",
    missing_labels: str = "error",
) -> LabelledCorpus:
    """Read a corpus for training and decide the task and the classes.

    Without ``task``: ``multi_label`` when ``columns.multi_label``, else ``pair_classification``
    when a pair column is set, else ``regression`` when a numeric label is not a whole number,
    else ``classification``.

    Args:
        path: Parquet, CSV or JSONL file.
        columns: Which columns hold what (``columns.label`` is required).
        task: The task, or ``None`` to infer it.
        id2label: Class names to use (e.g. the training file's, when reading a validation file).
        empty_texts: ``error`` or ``drop``.
        missing_labels: ``error`` or ``drop``.

    Raises:
        CorpusError: No label column, unreadable rows (file, column and rows named), or labels
            not fitting the task.
    """
    path = Path(path)
    if columns.label is None:
        raise CorpusError(f"corpus file {str(path)!r}: training needs a label column")
    given = id2label is not None and task != "regression"
    if id2label is None:
        names = _label_names(path, columns)
        id2label = {i: n for i, n in enumerate(names)} if names else {}
    label2id = {v: k for k, v in id2label.items()} or None
    corpus = load_corpus(
        path,
        columns,
        label2id=label2id,
        empty_texts=empty_texts,
        missing_labels=missing_labels,  # type: ignore[arg-type]
        classes=len(id2label) if given and id2label else None,  # a validation file: the training file's classes
    )
    frame = corpus.frame
    if task is None:
        if columns.multi_label:
            task = "multi_label"
        elif columns.pair is not None:
            task = "pair_classification"
        else:
            labels = frame["label"].to_numpy(dtype=np.float64)
            task = "regression" if not id2label and bool((labels != np.round(labels)).any()) else "classification"
    if task == "regression":
        return LabelledCorpus(corpus, task, 1, {})
    if task != "multi_label":
        labels = frame["label"].to_numpy(dtype=np.float64)
        bad = np.flatnonzero((labels < 0) | (labels != np.round(labels)))
        if len(bad):
            raise CorpusError(
                f"corpus file {str(path)!r}, column {columns.label!r}, row {bad[0] + 1}: class label "
                f"{labels[bad[0]]!r} is not an index >= 0 (or set task: regression)"
            )
    num_labels = len(id2label) if id2label else class_count(frame, task)
    if not id2label:
        id2label = {j: str(j) for j in range(num_labels)}
    return LabelledCorpus(corpus, task, num_labels, id2label)


def class_count(frame: pd.DataFrame, task: TaskName) -> int:
    """Outputs a head needs for a canonical corpus frame: 1 for regression, else the largest class
    index + 1 (at least 2)."""
    if task == "regression":
        return 1
    if task == "multi_label":
        seen = [int(j) for labels in frame["label_set"] for j in labels]
    else:
        seen = frame["label"].to_numpy(dtype=np.float64).astype(int).tolist()
    return max(2, max(seen, default=0) + 1)


def rows_of(frame: pd.DataFrame, positions: np.ndarray | None = None) -> TrainingRows:
    """Training rows from a canonical corpus frame (all rows, or those at ``positions``)."""
    part = frame if positions is None else frame.iloc[positions]
    pairs = part["text_pair"].tolist() if part["text_pair"].notna().all() and len(part) else None
    label_sets = part["label_set"].tolist() if part["label_set"].notna().all() and len(part) else None
    return TrainingRows(
        texts=part["text"].tolist(),
        pairs=pairs,
        labels=part["label"].tolist(),
        label_sets=[list(map(int, s)) for s in label_sets] if label_sets is not None else None,
    )
