"""Read GLUE-format SST-2 TSV files (``sentence<TAB>label``) into the canonical corpus columns.

Canonical columns: ``doc_id``, ``text``, ``text_pair``, ``label``, ``label_set`` and ``group``.
Labels are 0 (negative) or 1 (positive). Every problem is reported with the file and the 1-based
data row (the header is not counted).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from xattr.data.files import read_text_lines

TEXT_COLUMN = "sentence"
LABEL_COLUMN = "label"


class GlueSst2Error(ValueError):
    """A GLUE SST-2 file cannot be used as given; the message names file and row."""


def read_glue_sst2(path: Path | str) -> pd.DataFrame:
    """Read a GLUE SST-2 TSV file.

    The file has a header naming at least the columns ``sentence`` and ``label``, then one
    tab-separated row per sentence. Fields are not quoted (GLUE sentences contain bare quotes).
    Surrounding whitespace of the sentence (GLUE keeps a trailing space before the tab) is
    stripped. A trailing empty line is ignored.

    Args:
        path: The TSV file, e.g. ``glue_dev.tsv``.

    Returns:
        Columns ``doc_id`` (``"<file stem>-<row number>"``, 1-based data rows), ``text``,
        ``text_pair`` (None), ``label`` (0.0 or 1.0, float like the other corpus readers),
        ``label_set`` (None) and ``group`` (None).

    Raises:
        GlueSst2Error: Missing or unreadable file, missing header column, a row with too few
            fields, an empty sentence, or a label other than 0/1; the message names file and row.
    """
    name = str(path)
    lines = read_text_lines(path, what="GLUE SST-2 file", error=GlueSst2Error)
    if not lines or not lines[0].strip():
        raise GlueSst2Error(f"GLUE SST-2 file {name!r} has no header; expected 'sentence<TAB>label'")
    header = [h.strip() for h in lines[0].split("\t")]
    for column in (TEXT_COLUMN, LABEL_COLUMN):
        if column not in header:
            raise GlueSst2Error(
                f"GLUE SST-2 file {name!r}: column {column!r} not found in the header; columns are: {', '.join(header)}"
            )
    text_at = header.index(TEXT_COLUMN)
    label_at = header.index(LABEL_COLUMN)
    body = lines[1:]
    while body and not body[-1].strip():
        body.pop()
    doc_ids: list[str] = []
    texts: list[str] = []
    labels: list[float] = []
    for row, line in enumerate(body, start=1):
        where = f"GLUE SST-2 file {name!r}, row {row}"
        fields = line.split("\t")
        if len(fields) < len(header):
            raise GlueSst2Error(
                f"{where}: {len(fields)} tab-separated field(s), expected {len(header)} ({', '.join(header)})"
            )
        text = fields[text_at].strip()
        if not text:
            raise GlueSst2Error(f"{where}: empty sentence")
        raw_label = fields[label_at].strip()
        if raw_label not in ("0", "1"):
            raise GlueSst2Error(f"{where}: label {raw_label!r} is not 0 or 1")
        doc_ids.append(f"{path.stem}-{row}")
        texts.append(text)
        labels.append(float(raw_label))
    if not texts:
        raise GlueSst2Error(f"GLUE SST-2 file {name!r} has no rows")
    n = len(texts)
    return pd.DataFrame(
        {
            "doc_id": pd.Series(doc_ids, dtype=object),
            "text": pd.Series(texts, dtype=object),
            "text_pair": pd.Series([None] * n, dtype=object),
            "label": pd.Series(labels, dtype="float64"),
            "label_set": pd.Series([None] * n, dtype=object),
            "group": pd.Series([None] * n, dtype=object),
        }
    )
