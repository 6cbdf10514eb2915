"""Read the corpus artifact back into the texts and labels the library works on.

The encode stage tokenises the corpus once and writes the ``tokens`` artifact
(:class:`xattr.models.encoding.EncodedCorpus` columns); later stages given it read the rows they
need from it (a shard's rows read one part of a sharded dataset) instead of tokenising again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

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
        check_tokens(tokens, loaded, ref)
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


def check_tokens(tokens: ArtifactRef, loaded: LoadedModel, corpus: ArtifactRef | None = None) -> None:
    """Check that ``tokens`` was written by ``loaded``'s tokenizer at its maximum length (for ``corpus``).

    Raises:
        ValueError: It records another model or maximum length (named), or holds another number
            of texts than ``corpus``.
    """
    if corpus is not None and tokens.rows != corpus.rows:
        raise ValueError(
            f"the tokens artifact {tokens.path} does not hold the corpus' documents in order: "
            f"{tokens.rows} texts, the corpus has {corpus.rows}"
        )
    stored = artifact_metadata(tokens)
    for key, wanted in tokens_metadata(loaded).items():
        if stored.get(key) != wanted:
            raise ValueError(
                f"the tokens artifact {tokens.path} was written for another {key} "
                f"({stored.get(key)!r}; this stage reads {wanted!r})"
            )


def read_tokens(
    tokens: ArtifactRef,
    doc_ids: pd.Series | pa.Array,
    *,
    rows: range | None = None,
    positions: Sequence[int] | None = None,
    size: int,
) -> EncodedCorpus:
    """The encoded texts of the ``tokens`` artifact: rows ``rows``, or corpus ``positions`` (ascending) only.

    ``doc_ids`` are the corpus' documents of the view (of ``rows`` when given; a Series or an
    Arrow array); the artifact's must be the same, in order.

    Raises:
        ValueError: The artifact's documents are not the corpus' (another corpus or order).
    """
    ids = doc_ids if isinstance(doc_ids, pa.Array) else pa.array(doc_ids.tolist(), pa.string())
    if positions is None:
        table = read_artifact(tokens, rows=rows)
        expected = ids
        held = None
    else:
        table = read_positions(tokens, positions, offset=rows.start if rows is not None else 0)
        held = np.asarray(positions, np.int64)
        expected = ids.take(pa.array(held))
    stored = table.column("doc_id")
    if not stored.equals(pa.chunked_array([expected.cast(pa.string())])):
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


def part_ranges(ref: ArtifactRef) -> list[range]:
    """The row ranges of an artifact's parts, in order (a single file: one range)."""
    if not Path(ref.path).is_dir():
        return [range(ref.rows)]
    out, start = [], 0
    for part in dataset_parts(ref):
        out.append(range(start, start + part.rows))
        start += part.rows
    return out


def document_rows(ref: ArtifactRef, doc_ids: pa.Array | None, *, columns: Sequence[str] | None = None) -> pa.Table:
    """The rows of a ``doc_id``-keyed artifact whose document is one of ``doc_ids`` (``None``: every row).

    A dataset is read one part at a time, each filtered before the next is read: memory holds
    the rows asked for and one part, not the artifact.
    """
    parts = dataset_parts(ref) if Path(ref.path).is_dir() else [ref]
    wanted = None if columns is None else list(columns)
    tables = []
    for part in parts:
        table = read_artifact(part, columns=wanted)
        tables.append(table if doc_ids is None else table.filter(pc.is_in(table["doc_id"], value_set=doc_ids)))
    return pa.concat_tables(tables)


@dataclass(frozen=True)
class CorpusChunk:
    """A run of consecutive corpus rows and the rows other artifacts hold for its documents.

    Attributes:
        rows: The corpus positions.
        frame: The corpus rows (``doc_id`` and the columns asked for), indexed from 0.
        tables: Per name, the rows of that artifact whose ``doc_id`` is one of the chunk's, in
            the artifact's order.
    """

    rows: range
    frame: pd.DataFrame
    tables: dict[str, pa.Table]


class _DocumentRows:
    """Walks a document-keyed artifact (``doc_id`` column) part by part, handing out each chunk's rows.

    The artifact's rows must come in corpus order of their documents, as every stage writes them
    (a shard's part after the previous shard's). One part is held at a time.
    """

    def __init__(self, ref: ArtifactRef, columns: Sequence[str] | None) -> None:
        self.ref = ref
        self.columns = None if columns is None else list(dict.fromkeys(["doc_id", *columns]))
        self.parts = iter(dataset_parts(ref) if Path(ref.path).is_dir() else [ref])
        self.held: pa.Table | None = None

    def rows_of(self, ids: pa.Array) -> pa.Table:
        taken = []
        while True:
            if self.held is None or self.held.num_rows == 0:
                part = next(self.parts, None)
                if part is None:
                    break
                self.held = read_artifact(part, columns=self.columns)
            inside = pc.is_in(self.held.column("doc_id"), value_set=ids)
            count = pc.sum(inside).as_py() or 0
            if count:
                taken.append(self.held.filter(inside))
            rest = self.held.filter(pc.invert(inside)) if count < self.held.num_rows else None
            self.held = rest
            if rest is not None:  # rows of later documents: this chunk has all of its rows
                break
        if not taken:
            return read_artifact(self.ref, rows=range(0, 0), columns=self.columns)
        return pa.concat_tables(taken)

    def finish(self) -> None:
        left = (self.held.num_rows if self.held is not None else 0) + sum(p.rows for p in self.parts)
        if left:
            doc = self.held.column("doc_id")[0].as_py() if self.held is not None and self.held.num_rows else "?"
            raise ValueError(
                f"the artifact {self.ref.path} holds {left} rows of documents that are not the corpus' "
                f"or not in corpus order (first: doc_id {doc!r})"
            )


def corpus_chunks(
    corpus: ArtifactRef,
    *,
    layout: ArtifactRef | None = None,
    columns: Sequence[str] = (),
    aligned: Mapping[str, tuple[ArtifactRef, Sequence[str] | None]] | None = None,
) -> Iterator[CorpusChunk]:
    """The corpus in chunks of consecutive rows, with the rows document-keyed artifacts hold for each.

    The chunks are the parts of ``layout`` (a per-document dataset of this corpus, such as the
    ``tokens`` or ``predictions`` of a sharded encode stage: its shards), else the whole corpus.
    Each ``aligned`` artifact (``doc_id``-keyed, in corpus order, such as ``token_attributions``)
    is read one part at a time, so a sharded run holds one shard's rows, not the corpus'.

    Args:
        corpus: The corpus artifact (its ``doc_id`` and ``columns`` are read once).
        layout: The artifact whose parts give the chunks.
        columns: The corpus columns each chunk's frame holds besides ``doc_id``.
        aligned: Per name, an artifact and the columns to read of it (``None``: all).

    Raises:
        ValueError: ``layout`` does not have the corpus' row count, or an aligned artifact holds
            rows of documents outside the corpus or out of corpus order (named).
    """
    table = read_artifact(corpus, columns=list(dict.fromkeys(["doc_id", *columns])))
    ranges = part_ranges(layout) if layout is not None else [range(table.num_rows)]
    if layout is not None and layout.rows != table.num_rows:
        raise ValueError(f"{layout.path} holds {layout.rows} rows; the corpus {corpus.path} has {table.num_rows}")
    readers = {name: _DocumentRows(ref, cols) for name, (ref, cols) in (aligned or {}).items()}
    for rows in ranges:
        piece = table.slice(rows.start, len(rows))
        ids = piece.column("doc_id").combine_chunks()
        yield CorpusChunk(rows, piece.to_pandas(), {name: r.rows_of(ids) for name, r in readers.items()})
    for reader in readers.values():
        reader.finish()
