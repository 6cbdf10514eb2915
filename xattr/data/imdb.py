"""Read the IMDB review subset (Maas et al. 2011; gzip CSV with a header) into corpus columns.

Columns used: ``review_id``, ``label`` (1 positive, 0 negative), ``text`` and ``rating``; the
``<br />`` tags of the original reviews become spaces. There is no gold rationale. Reviews are long
(median 170 words): the model's ``max_length`` truncates them, and the count is logged.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from xattr.data.files import existing_file

_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)


class ImdbError(ValueError):
    """The IMDB file cannot be used as given; the message names file, column and row."""


def read_imdb(path: Path | str) -> pd.DataFrame:
    """Read ``imdb_test_subset_5000.csv.gz`` (or any CSV with ``review_id, rating, label, text``).

    Returns:
        Columns ``doc_id`` (``"imdb-<review_id>-<label>"``), ``text``, ``text_pair``, ``label``,
        ``label_set`` and ``group`` (``"rating-<r>"``).

    Raises:
        ImdbError: Missing file or column, a label other than 0/1, or an empty review.
    """
    path = existing_file(path, what="IMDB file", error=ImdbError)
    name = str(path)
    raw = pd.read_csv(path, dtype=str, keep_default_na=False, compression="infer")
    for column in ("review_id", "rating", "label", "text"):
        if column not in raw.columns:
            raise ImdbError(f"IMDB file {name!r}: column {column!r} not found; columns: {', '.join(raw.columns)}")
    bad = ~raw["label"].isin(["0", "1"])
    if bad.any():
        row = int(bad.to_numpy().nonzero()[0][0]) + 1
        raise ImdbError(f"IMDB file {name!r}, column 'label', row {row}: {raw['label'].iloc[row - 1]!r} is not 0 or 1")
    texts = [" ".join(_BREAK.sub(" ", t).split()) for t in raw["text"]]
    empty = [i + 1 for i, t in enumerate(texts) if not t]
    if empty:
        raise ImdbError(f"IMDB file {name!r}, column 'text': empty review in rows {empty[:10]}")
    n = len(texts)
    return pd.DataFrame(
        {
            "doc_id": [f"imdb-{r}-{lab}" for r, lab in zip(raw["review_id"], raw["label"], strict=True)],
            "text": texts,
            "text_pair": [None] * n,
            "label": raw["label"].astype("float64"),
            "label_set": [None] * n,
            "group": [f"rating-{r}" for r in raw["rating"]],
        }
    )
