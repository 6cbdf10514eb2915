"""Read the corpus artifact back into the texts and labels the library works on.

The encode stage tokenises the corpus once and writes the ``tokens`` artifact
(:class:`xattr.models.encoding.EncodedCorpus` columns); later stages given it read the rows they
need from it (a shard's rows read one part of a sharded dataset) instead of tokenising again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from storage import ArtifactRef, artifact_metadata, dataset_parts, read_artifact
from xattr.models.encoding import EncodedCorpus, encode_corpus
from xattr.models.loading import LoadedModel


@dataclass(frozen=True)
class CorpusView:
    """The corpus frame and its texts encoded for one model."""

    frame: pd.DataFrame
    encoded: EncodedCorpus

    @cached_property
    def doc_ids(self) -> list[str]:
        """The documents in corpus order (built once: callers index it per text)."""
        return self.frame["doc_id"].tolist()


def read_corpus(
    ref: ArtifactRef,
    loaded: LoadedModel,
    rows: range | None = None,
    *,
    only: Sequence[int] | None = None,
    tokens: ArtifactRef | None = None,
    columns: Sequence[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> CorpusView:
    """Read the corpus artifact (only positions ``rows`` when given) and its texts encoded for ``loaded``.

    With ``only``, the frame holds every row but only those positions are encoded; reading another
    position of ``encoded`` fails (for stages that read a sample of the corpus). The encoded texts
    come from ``tokens`` (the encode stage's artifact) when given, else the texts are tokenised.

    Args:
        ref: The corpus artifact.
        loaded: The model whose tokenizer encodes the texts.
        rows: Read these positions only (the view's positions then start at 0).
        only: Encode only these corpus positions.
        tokens: The ``tokens`` artifact of this corpus and model.
        columns: The corpus columns the frame needs (``doc_id`` always); default all.
        progress: Called with ``(texts tokenised, texts)`` while tokenising.

    Raises:
        ValueError: ``tokens`` does not hold this corpus' documents in order.
    """
    wanted = None if columns is None else list(dict.fromkeys(["doc_id", *columns]))
    if tokens is not None and wanted is not None:
        read_columns = wanted
    else:  # tokenising needs the texts
        read_columns = None if wanted is None else list(dict.fromkeys([*wanted, "text", "text_pair"]))
    frame = read_artifact(ref, rows=rows, columns=read_columns).to_pandas()
    positions = None if only is None else sorted(set(only))
    if tokens is not None:
        check_tokens(tokens, loaded)
        if tokens.rows != ref.rows:
            raise ValueError(
                f"the tokens artifact {tokens.path} does not hold the corpus' documents in order: "
                f"{tokens.rows} texts, the corpus has {ref.rows}"
            )
        encoded = read_tokens(tokens, frame["doc_id"], rows=rows, positions=positions, size=len(frame))
    else:
        chosen = frame if positions is None else frame.iloc[positions]
        pairs = chosen["text_pair"].tolist() if chosen["text_pair"].notna().any() else None
        encoded = encode_corpus(
            loaded.tokenizer,
            chosen["text"].tolist(),
            pairs,
            max_length=loaded.max_length,
            positions=None if positions is None else np.asarray(positions, np.int64),
            size=len(frame),
            progress=progress,
        )
    if wanted is not None:
        frame = frame[[c for c in frame.columns if c in wanted]]
    return CorpusView(frame, encoded)


def tokens_metadata(loaded: LoadedModel) -> dict[str, str]:
    """What the ``tokens`` artifact records of its tokenizer (checked by :func:`check_tokens`).

    Not the corpus' digest: a shard's part is reused while its own texts are unchanged (its cache
    key), so parts of one dataset may come from corpora that differ elsewhere; the documents are
    checked instead (:func:`read_tokens`).
    """
    return {"model": loaded.source, "max_length": str(loaded.max_length)}


def check_tokens(tokens: ArtifactRef, loaded: LoadedModel) -> None:
    """Check that ``tokens`` was written by ``loaded``'s tokenizer at its maximum length.

    Raises:
        ValueError: It records another model or maximum length (named).
    """
    stored = artifact_metadata(tokens)
    for key, wanted in tokens_metadata(loaded).items():
        if stored.get(key) != wanted:
            raise ValueError(
                f"the tokens artifact {tokens.path} was written for another {key} "
                f"({stored.get(key)!r}; this stage reads {wanted!r})"
            )


def read_tokens(
    tokens: ArtifactRef,
    doc_ids: pd.Series,
    *,
    rows: range | None = None,
    positions: Sequence[int] | None = None,
    size: int,
) -> EncodedCorpus:
    """The encoded texts of the ``tokens`` artifact: rows ``rows``, or corpus ``positions`` (ascending) only.

    ``doc_ids`` are the corpus' documents of the view (of ``rows`` when given); the artifact's must
    be the same, in order.

    Raises:
        ValueError: The artifact's documents are not the corpus' (another corpus or order).
    """
    if positions is None:
        table = read_artifact(tokens, rows=rows)
        expected = doc_ids
        held = None
    else:
        table = read_positions(tokens, positions, offset=rows.start if rows is not None else 0)
        expected = doc_ids.iloc[list(positions)]
        held = np.asarray(positions, np.int64)
    stored = table.column("doc_id")
    if not stored.equals(pa.chunked_array([pa.array(expected.tolist(), pa.string())])):
        raise ValueError(
            f"the tokens artifact {tokens.path} does not hold the corpus' documents in order: "
            "it was written for another corpus"
        )
    return EncodedCorpus.from_arrow(table, held, size)


def read_positions(ref: ArtifactRef, positions: Sequence[int], *, offset: int = 0) -> pa.Table:
    """Rows ``offset + p`` for ``p`` in ascending ``positions`` of an artifact.

    Of a dataset (a sharded stage's parts) only the parts holding one of the rows are read.
    """
    wanted = np.asarray(positions, np.int64) + offset
    if not Path(ref.path).is_dir():
        return read_artifact(ref).take(pa.array(wanted))
    tables = []
    start = 0
    for part in dataset_parts(ref):
        stop = start + part.rows
        inside = wanted[(wanted >= start) & (wanted < stop)]
        if len(inside):
            tables.append(read_artifact(part).take(pa.array(inside - start)))
        start = stop
    return pa.concat_tables(tables) if tables else read_artifact(ref, rows=range(0, 0))
