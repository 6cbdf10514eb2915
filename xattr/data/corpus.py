"""Read a user's corpus (Parquet, CSV or JSONL) into the canonical corpus columns, with checks.

Canonical columns: ``doc_id``, ``text``, ``text_pair``, ``label`` (class index or regression
value), ``label_set`` (multi-label class indices) and ``group``, plus the optional gold columns
``gold_spans`` (character spans ``{segment, start, end}`` of the evidence), ``gold_word_scores``
(gold importance per whitespace word of ``text``) and ``gold_unlocated`` (gold items that could
not be located), passed through when the file has them under these names (dataset adapters in
:mod:`xattr.data` write them). Every problem is reported with the
file, the column and the offending rows (1-based data rows, as a spreadsheet shows them).
"""

from __future__ import annotations

import io
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

OnProblem = Literal["error", "drop"]

#: Tasks whose labels are classes (``load_corpus(classes=...)`` checks them against the model's).
CLASS_TASKS = frozenset({"classification", "pair_classification", "multi_label"})


class CorpusError(ValueError):
    """The corpus file cannot be used as given; the message names file, column and rows."""


@dataclass(frozen=True)
class CorpusColumns:
    """Which columns of the user's file hold what.

    Attributes:
        text: The text to explain (required).
        pair: The second text of a sentence pair, if any.
        label: The gold label (class name or index, or a number for regression), if any.
        group: A grouping or category column (e.g. product category), if any.
        id: A unique document id column; row numbers are used when absent.
        multi_label: Labels are lists (or ``label_separator``-joined strings) of classes.
        label_separator: Separator of joined multi-label strings.
        encoding: Text encoding of a CSV or JSON Lines file.
    """

    text: str = "text"
    pair: str | None = None
    label: str | None = None
    group: str | None = None
    id: str | None = None
    multi_label: bool = False
    label_separator: str = "|"
    encoding: str = "utf-8"


@dataclass(frozen=True)
class LoadedCorpus:
    """The canonical corpus frame and what was done to get it.

    Attributes:
        frame: Columns ``doc_id, text, text_pair, label, label_set, group``.
        rows_read: Rows in the file.
        dropped: Counts of rows dropped by the handling policies, by reason.
    """

    frame: pd.DataFrame
    rows_read: int
    dropped: dict[str, int] = field(default_factory=dict)


def _rows(mask: pd.Series, limit: int = 10) -> str:
    """1-based row numbers where ``mask`` holds, at most ``limit`` of them."""
    idx = [int(i) + 1 for i in mask[mask].index[:limit]]
    more = int(mask.sum()) - len(idx)
    return ", ".join(map(str, idx)) + (f" and {more} more" if more > 0 else "")


def _decoded(path: Path, encoding: str) -> str:
    """The file's text; a decode error names the 1-based line (and CSV data row) where it is."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CorpusError(f"corpus file {str(path)!r} cannot be read: {exc.strerror or exc}") from exc
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        where = f"line {line}" + (f" (data row {line - 1})" if path.suffix.lower() == ".csv" and line > 1 else "")
        raise CorpusError(
            f"corpus file {str(path)!r}, {where}: byte {data[exc.start : exc.start + 1]!r} is not {encoding} "
            f"({exc.reason}); set corpus.encoding to the file's encoding (e.g. latin-1)"
        ) from None


def _json_lines(path: Path, text: str) -> pd.DataFrame:
    """JSON Lines: one object per line; a bad line is named by its 1-based number.

    Blank lines are refused except at the end of the file: skipping them would make the row
    numbers of later messages differ from the file's lines.
    """
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    records = []
    for number, line in enumerate(lines, start=1):
        where = f"corpus file {str(path)!r}, line {number}"
        if not line.strip():
            raise CorpusError(f"{where}: empty line (each line must hold one JSON object)")
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CorpusError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(record, dict):
            raise CorpusError(f"{where}: expected a JSON object, got {type(record).__name__}")
        records.append(record)
    return pd.DataFrame.from_records(records)


def read_table_file(path: Path, encoding: str = "utf-8") -> pd.DataFrame:
    """Read Parquet, CSV or JSON Lines by file suffix.

    Args:
        path: The file.
        encoding: Text encoding of CSV and JSON Lines files.

    Raises:
        CorpusError: Missing file, a directory, unknown suffix, or unreadable content (a decode
            error names the line, a JSON Lines error its line).
    """
    if path.is_dir():
        raise CorpusError(f"corpus file {str(path)!r} is a directory; give the .parquet, .csv or .jsonl file in it")
    if not path.is_file():
        raise CorpusError(f"corpus file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".csv", ".jsonl", ".ndjson", ".json"):
        raise CorpusError(f"corpus file {str(path)!r}: unknown format {suffix!r}; use .parquet, .csv or .jsonl")
    if suffix in (".jsonl", ".ndjson", ".json"):
        return _json_lines(path, _decoded(path, encoding))
    try:
        if suffix == ".parquet":
            return pd.read_parquet(path)
        # Blank lines are rows too: skipping them would silently lose rows and shift row numbers.
        return pd.read_csv(io.StringIO(_decoded(path, encoding)), keep_default_na=True, skip_blank_lines=False)
    except CorpusError:
        raise
    except Exception as exc:  # noqa: BLE001 - any parser failure becomes one named error
        raise CorpusError(f"corpus file {str(path)!r} cannot be read: {exc}") from exc


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return bool(pd.api.types.is_scalar(value) and pd.isna(value))


def _label_index(value: Any, label2id: Mapping[str, int] | None, where: str, classes: int | None = None) -> float:
    """A label as its class index (or regression value).

    With ``classes`` (the model's number of classes) a label must be one of the model's class
    names or a whole number in ``[0, classes)``: 0.5, 1.9, -1 or 7 on a 2-class model are refused,
    never rounded or left for a later stage to trip over.
    """
    if isinstance(value, np.generic):
        value = value.item()  # messages show 0.5, not np.float64(0.5)
    if isinstance(value, str) and label2id and value in label2id:
        return float(label2id[value])
    known = ", ".join(sorted(label2id)) if label2id else "none (the model has no label names)"
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            raise CorpusError(f"{where}: label {value!r} is not a known class; known classes: {known}") from None
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise CorpusError(f"{where}: label {value!r} is neither a class name nor a number")
    else:
        number = float(value)
    if classes is not None and not (math.isfinite(number) and number.is_integer() and 0 <= number < classes):
        raise CorpusError(
            f"{where}: label {value!r} is not a class of the model: give a class name ({known}) "
            f"or a whole number in [0, {classes})"
        )
    return number


def load_corpus(
    path: Path | str,
    columns: CorpusColumns,
    *,
    label2id: Mapping[str, int] | None = None,
    empty_texts: OnProblem = "error",
    missing_labels: OnProblem = "error",
    classes: int | None = None,
    has_tokens: Callable[[list[str]], Sequence[bool]] | None = None,
) -> LoadedCorpus:
    """Read and check a corpus file.

    Args:
        path: Parquet, CSV or JSONL file.
        columns: Which columns hold what.
        label2id: Class name to index, for string labels (from the model config).
        empty_texts: ``"error"`` or ``"drop"`` rows whose text is empty or whitespace only.
        missing_labels: ``"error"`` or ``"drop"`` rows whose label is missing or NaN (only when
            a label column is configured).
        classes: The model's number of classes (classification and multi-label): every label
            must then be a class name of ``label2id`` or a whole number in ``[0, classes)``.
            ``None`` for regression (any finite number).
        has_tokens: For a batch of texts, whether each tokenises to at least one (non-special)
            token of the model; a text that does not is handled like an empty one
            (``empty_texts``; dropped rows are counted as ``no_tokens``).

    Returns:
        The canonical corpus and the counts of dropped rows.

    Raises:
        CorpusError: Empty file, missing column, empty texts, missing labels, duplicate ids,
            unknown class names, class labels that are not a class of the model, or non-finite
            regression labels; the message names the file, column and rows (1-based) and the value.
    """
    path = Path(path)
    raw = read_table_file(path, columns.encoding).reset_index(drop=True)
    name = str(path)
    if len(raw) == 0:
        raise CorpusError(f"corpus file {name!r} has no rows")
    wanted = {
        "text": columns.text,
        "pair": columns.pair,
        "label": columns.label,
        "group": columns.group,
        "id": columns.id,
    }
    for role, col in wanted.items():
        if col is not None and col not in raw.columns:
            raise CorpusError(
                f"corpus file {name!r}: {role} column {col!r} not found; "
                f"columns are: {', '.join(map(str, raw.columns))}"
            )
    dropped: dict[str, int] = {}
    text = raw[columns.text]
    bad_type = text.map(lambda v: not isinstance(v, str) and not _is_missing(v))
    if bad_type.any():
        raise CorpusError(f"corpus file {name!r}, column {columns.text!r}: non-text values in rows {_rows(bad_type)}")
    empty = text.map(lambda v: _is_missing(v) or not str(v).strip())
    if columns.pair is not None:
        empty_pair = raw[columns.pair].map(lambda v: _is_missing(v) or not str(v).strip())
        empty = empty | empty_pair
    where = f"corpus file {name!r}, column {columns.text!r}{' or ' + repr(columns.pair) if columns.pair else ''}"
    if empty.any():
        if empty_texts == "error":
            raise CorpusError(
                f"{where}: empty or whitespace-only text in rows {_rows(empty)} (set empty_texts: drop to skip them)"
            )
        dropped["empty_text"] = int(empty.sum())
    if has_tokens is not None:
        # Text that tokenises to nothing (zero-width characters, say) has no token to explain:
        # it would get all-zero scores and count as 0.0 in faithfulness averages.
        no_tokens = pd.Series(False, index=raw.index)
        for column in (columns.text, columns.pair):
            rows_left = raw.index[~empty]
            if column is not None and len(rows_left):
                flags = has_tokens(raw.loc[rows_left, column].astype(str).tolist())
                no_tokens.loc[rows_left] |= ~np.asarray(flags, dtype=bool)
        if no_tokens.any():
            if empty_texts == "error":
                raise CorpusError(
                    f"{where}: text with no token the model knows in rows {_rows(no_tokens)} "
                    "(set empty_texts: drop to skip them)"
                )
            dropped["no_tokens"] = int(no_tokens.sum())
            empty = empty | no_tokens
    keep = ~empty
    if columns.label is not None:
        missing = raw[columns.label].map(_is_missing) & keep
        if missing.any():
            if missing_labels == "error":
                raise CorpusError(
                    f"corpus file {name!r}, column {columns.label!r}: missing or NaN label in rows {_rows(missing)} "
                    "(set missing_labels: drop to skip them)"
                )
            dropped["missing_label"] = int(missing.sum())
            keep = keep & ~missing
    if columns.id is not None:
        ids = raw[columns.id].map(lambda v: "" if _is_missing(v) else str(v))
        no_id = (ids == "") & keep
        if no_id.any():
            raise CorpusError(f"corpus file {name!r}, column {columns.id!r}: missing id in rows {_rows(no_id)}")
    else:
        ids = pd.Series([f"row-{i + 1:06d}" for i in range(len(raw))])
    dup = ids.duplicated(keep=False) & keep
    if dup.any():
        first = ids[dup].iloc[0]
        raise CorpusError(
            f"corpus file {name!r}, column {columns.id!r}: duplicate document id {first!r} in rows "
            f"{_rows(ids == first)} ({int(dup.sum())} rows share an id)"
        )
    rows = raw.index[keep]
    n = len(rows)
    frame = pd.DataFrame(
        {
            "doc_id": pd.Series(ids[rows].astype(str).to_list(), dtype=object),
            "text": pd.Series(raw.loc[rows, columns.text].astype(str).to_list(), dtype=object),
            "text_pair": pd.Series(
                raw.loc[rows, columns.pair].astype(str).to_list() if columns.pair else [None] * n, dtype=object
            ),
            "label": pd.Series(
                _labels(raw, rows, columns, label2id, name, classes)
                if columns.label and not columns.multi_label
                else [None] * n,
                dtype="float64",
            ),
            "label_set": pd.Series(
                _label_sets(raw, rows, columns, label2id, name, classes)
                if columns.label and columns.multi_label
                else [None] * n,
                dtype=object,
            ),
            "group": pd.Series(
                [None if _is_missing(v) else str(v) for v in raw.loc[rows, columns.group]]
                if columns.group
                else [None] * n,
                dtype=object,
            ),
        }
    )
    if len(frame) == 0:
        raise CorpusError(f"corpus file {name!r}: no rows left after dropping {dropped}")
    frame = _with_gold(frame, raw, rows, name)
    return LoadedCorpus(frame=frame, rows_read=len(raw), dropped=dropped)


def _labels(
    raw: pd.DataFrame,
    rows: pd.Index,
    columns: CorpusColumns,
    label2id: Mapping[str, int] | None,
    name: str,
    classes: int | None,
) -> list[float]:
    out = []
    for i in rows:
        where = f"corpus file {name!r}, column {columns.label!r}, row {int(i) + 1}"
        value = _label_index(raw.at[i, columns.label], label2id, where, classes)
        if not math.isfinite(value):
            raise CorpusError(f"{where}: label {value} is not finite")
        out.append(value)
    return out


def _label_sets(
    raw: pd.DataFrame,
    rows: pd.Index,
    columns: CorpusColumns,
    label2id: Mapping[str, int] | None,
    name: str,
    classes: int | None,
) -> list[list[int]]:
    out = []
    for i in rows:
        where = f"corpus file {name!r}, column {columns.label!r}, row {int(i) + 1}"
        value = raw.at[i, columns.label]
        items: Sequence[Any] = value.split(columns.label_separator) if isinstance(value, str) else list(value)
        out.append(
            [
                int(_label_index(v.strip() if isinstance(v, str) else v, label2id, where, classes))
                for v in items
                if str(v).strip()
            ]
        )
    return out


#: The optional gold columns, in schema order.
GOLD_COLUMNS: tuple[str, ...] = ("gold_spans", "gold_word_scores", "gold_unlocated")
_WORDS = re.compile(r"\S+")


def _as_list(value: Any, where: str) -> list[Any] | None:
    """A list-valued cell (a list, an array, or JSON text as CSV holds it), or ``None`` when missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str):
        if not value.strip():
            return None
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise CorpusError(f"{where}: not a JSON list ({exc})") from None
    try:
        return list(value)
    except TypeError:
        raise CorpusError(f"{where}: expected a list, got {type(value).__name__}") from None


def _with_gold(frame: pd.DataFrame, raw: pd.DataFrame, rows: pd.Index, name: str) -> pd.DataFrame:
    """Copy and check the gold columns the file has.

    Spans outside their segment's text (or empty) cannot be located: they are dropped and
    counted into ``gold_unlocated``, never fatal. Word scores must have one finite value per
    whitespace word of the text (otherwise :class:`CorpusError` naming the row).
    """
    if not any(c in raw.columns for c in GOLD_COLUMNS):
        return frame
    spans_out: list[list[dict[str, int]] | None] = []
    scores_out: list[list[float] | None] = []
    unlocated_out: list[int | None] = []
    for out_row, i in enumerate(rows):
        text = frame.at[out_row, "text"]
        pair = frame.at[out_row, "text_pair"]
        unlocated = raw.at[i, "gold_unlocated"] if "gold_unlocated" in raw.columns else None
        count = None if unlocated is None or _is_missing(unlocated) else int(unlocated)
        spans = None
        if "gold_spans" in raw.columns:
            where = f"corpus file {name!r}, column 'gold_spans', row {int(i) + 1}"
            items = _as_list(raw.at[i, "gold_spans"], where)
            if items is not None:
                spans = []
                for item in items:
                    try:
                        segment, start, end = int(item["segment"]), int(item["start"]), int(item["end"])
                    except (KeyError, TypeError, ValueError):
                        raise CorpusError(
                            f"{where}: each span needs integer segment, start and end; got {item!r}"
                        ) from None
                    source = text if segment == 0 else pair if segment == 1 else None
                    if source is None or not 0 <= start < end <= len(source):
                        count = (count or 0) + 1
                        continue
                    spans.append({"segment": segment, "start": start, "end": end})
        scores = None
        if "gold_word_scores" in raw.columns:
            where = f"corpus file {name!r}, column 'gold_word_scores', row {int(i) + 1}"
            items = _as_list(raw.at[i, "gold_word_scores"], where)
            if items is not None:
                scores = [float(v) for v in items]
                n_words = len(_WORDS.findall(text))
                if len(scores) != n_words:
                    raise CorpusError(f"{where}: {len(scores)} gold word scores but the text has {n_words} words")
                if not all(math.isfinite(v) for v in scores):
                    raise CorpusError(f"{where}: gold word scores must be finite")
        spans_out.append(spans)
        scores_out.append(scores)
        unlocated_out.append(count)
    return frame.assign(
        gold_spans=pd.Series(spans_out, dtype=object),
        gold_word_scores=pd.Series(scores_out, dtype=object),
        gold_unlocated=pd.Series(unlocated_out, dtype="Int32"),
    )
