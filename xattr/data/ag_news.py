"""Read the AG News topic-classification CSV (Zhang, Zhao & LeCun 2015) into corpus columns.

The file has no header and three columns: class index 1-4, title, description. The text is
``title + " " + description``; ``\\n`` written as backslash-n becomes a space and HTML entities
(including the file's bare ``#39;`` form) are decoded. Label = class index - 1 (World, Sports,
Business, Sci/Tech). There is no gold rationale.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

import pandas as pd

from xattr.data.files import existing_file

CLASSES: tuple[str, ...] = ("World", "Sports", "Business", "Sci/Tech")
_BARE_ENTITY = re.compile(r"(?<!&)#(\d+);")


class AgNewsError(ValueError):
    """The AG News file cannot be used as given; the message names file and row."""


def clean_text(value: str) -> str:
    """Undo the file's escapes: literal ``\\n`` -> space, ``#39;`` and HTML entities -> characters."""
    value = value.replace("\\n", " ").replace("\\", " ")
    value = _BARE_ENTITY.sub(lambda m: f"&#{m.group(1)};", value)
    return " ".join(html.unescape(value).split())


def read_ag_news(path: Path | str) -> pd.DataFrame:
    """Read ``test.csv`` (or ``train.csv``) of AG News.

    Returns:
        Columns ``doc_id`` (``"<stem>-<row>"``, 1-based), ``text``, ``text_pair``, ``label``
        (0-3), ``label_set``, ``group`` (the class name) and empty gold columns.

    Raises:
        AgNewsError: Missing file, wrong column count, a class outside 1-4 or an empty text.
    """
    path = existing_file(path, what="AG News file", error=AgNewsError)
    name = str(path)
    raw = pd.read_csv(path, header=None, dtype=str, keep_default_na=False)
    if raw.shape[1] != 3:
        raise AgNewsError(f"AG News file {name!r}: expected 3 columns (class, title, description), got {raw.shape[1]}")
    labels = []
    texts = []
    for i, (cls, title, description) in enumerate(raw.itertuples(index=False), start=1):
        if cls.strip() not in {"1", "2", "3", "4"}:
            raise AgNewsError(f"AG News file {name!r}, row {i}: class {cls!r} is not 1-4")
        text = clean_text(f"{title} {description}")
        if not text:
            raise AgNewsError(f"AG News file {name!r}, row {i}: empty title and description")
        labels.append(float(int(cls) - 1))
        texts.append(text)
    n = len(texts)
    return pd.DataFrame(
        {
            "doc_id": [f"{path.stem}-{i}" for i in range(1, n + 1)],
            "text": texts,
            "text_pair": [None] * n,
            "label": pd.Series(labels, dtype="float64"),
            "label_set": [None] * n,
            "group": [CLASSES[int(v)] for v in labels],
        }
    )
