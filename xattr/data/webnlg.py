"""Read WebNLG relation-extraction triples (CasRel/PRGC ``*_triples.json``) as a multi-label corpus.

Each sentence verbalises DBpedia triples ``[subject, relation, object]``; the labels of a sentence
are the set of its relations (multi-label), and the gold rationale is the union of the subject
and object spans found in the text (LAFA Section 5, Case I: ROC AUC of token scores against the
entity mask). Entities are located as runs of whole whitespace tokens (every occurrence); an
entity that cannot be found is counted in ``gold_unlocated``, never fatal.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from xattr.data.files import existing_file
from xattr.data.gold_spans import find_phrase, merge_spans


class WebNlgError(ValueError):
    """A WebNLG file cannot be used as given; the message names the file and the record."""


def read_relations(path: Path | str) -> list[str]:
    """Relation names by id from ``rel2id.json`` (``exact/``: ``[{name: id}]``; star: ``[id2rel, rel2id]``).

    Raises:
        WebNlgError: Missing file or an unknown layout.
    """
    path = existing_file(path, what="WebNLG relation file", error=WebNlgError)
    data = json.loads(path.read_text(encoding="utf-8"))
    mapping = data[-1] if isinstance(data, list) and data else data
    if not isinstance(mapping, dict) or not all(isinstance(v, int) for v in mapping.values()):
        raise WebNlgError(f"WebNLG relation file {str(path)!r}: expected a mapping relation -> id")
    names = [""] * len(mapping)
    for name, index in mapping.items():
        if not 0 <= index < len(names):
            raise WebNlgError(f"WebNLG relation file {str(path)!r}: id {index} of {name!r} out of range")
        names[index] = name
    return names


def read_webnlg(path: Path | str, relations: list[str] | None = None) -> pd.DataFrame:
    """Read a ``*_triples.json`` file into corpus columns with gold entity spans.

    Args:
        path: The triples file (e.g. ``webnlg/exact/val_triples.json``).
        relations: Relation names by id; by default read from ``rel2id.json`` beside ``path``.

    Returns:
        Columns ``doc_id`` (``"<stem>-<index>"``), ``text``, ``text_pair`` (None), ``label``
        (None), ``label_set`` (sorted relation ids), ``group`` (None), ``gold_spans`` (merged
        subject/object spans, segment 0), ``gold_word_scores`` (None), ``gold_unlocated`` (entity
        strings not found in the text).

    Raises:
        WebNlgError: Missing or malformed file, an unknown relation (named with the record).
    """
    path = existing_file(path, what="WebNLG file", error=WebNlgError)
    name = str(path)
    if relations is None:
        relations = read_relations(path.parent / "rel2id.json")
    rel_id = {r: i for i, r in enumerate(relations)}
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise WebNlgError(f"WebNLG file {name!r} cannot be read: {exc}") from exc
    if not isinstance(records, list) or not records:
        raise WebNlgError(f"WebNLG file {name!r}: expected a non-empty JSON array of records")
    rows = []
    for index, record in enumerate(records):
        where = f"WebNLG file {name!r}, record {index}"
        if not isinstance(record, dict) or "text" not in record or "triple_list" not in record:
            raise WebNlgError(f"{where}: needs 'text' and 'triple_list'")
        text = str(record["text"])
        labels: set[int] = set()
        spans: list[tuple[int, int]] = []
        unlocated = 0
        for triple in record["triple_list"]:
            if not isinstance(triple, (list, tuple)) or len(triple) != 3:
                raise WebNlgError(f"{where}: a triple must be [subject, relation, object], got {triple!r}")
            subject, relation, obj = (str(t) for t in triple)
            if relation not in rel_id:
                raise WebNlgError(f"{where}: unknown relation {relation!r}")
            labels.add(rel_id[relation])
            for entity in (subject, obj):
                found = find_phrase(text, entity)
                if found:
                    spans.extend(found)
                else:
                    unlocated += 1
        rows.append(
            {
                "doc_id": f"{path.stem}-{index}",
                "text": text,
                "text_pair": None,
                "label": None,
                "label_set": sorted(labels),
                "group": None,
                "gold_spans": [{"segment": 0, "start": s, "end": e} for s, e in merge_spans(spans)],
                "gold_word_scores": None,
                "gold_unlocated": unlocated,
            }
        )
    frame = pd.DataFrame(rows)
    return frame.astype({"label": "float64", "gold_unlocated": "int32"})
