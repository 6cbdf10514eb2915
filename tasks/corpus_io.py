"""Read the corpus artifact back into the texts and labels the library works on."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import pandas as pd

from storage import ArtifactRef, read_artifact
from xattr.models.encoding import EncodedText, encode_texts
from xattr.models.loading import LoadedModel


@dataclass(frozen=True)
class CorpusView:
    """The corpus frame and its texts encoded for one model."""

    frame: pd.DataFrame
    encoded: list[EncodedText]

    @cached_property
    def doc_ids(self) -> list[str]:
        """The documents in corpus order (built once: callers index it per text)."""
        return self.frame["doc_id"].tolist()


def read_corpus(
    ref: ArtifactRef, loaded: LoadedModel, rows: range | None = None, *, only: list[int] | None = None
) -> CorpusView:
    """Read and tokenise the corpus artifact for ``loaded`` (only positions ``rows`` when given).

    With ``only``, the frame holds every row but only those positions are tokenised; the other
    entries of ``encoded`` are ``None`` (for stages that read a sample of the corpus).
    """
    table = read_artifact(ref)
    if rows is not None:
        table = table.slice(rows.start, len(rows))
    frame = table.to_pandas()
    chosen = frame if only is None else frame.iloc[only]
    pairs = chosen["text_pair"].tolist() if chosen["text_pair"].notna().any() else None
    encoded = encode_texts(loaded.tokenizer, chosen["text"].tolist(), pairs, max_length=loaded.max_length)
    if only is not None:
        sparse: list = [None] * len(frame)
        for position, text in zip(only, encoded, strict=True):
            sparse[position] = text
        encoded = sparse
    return CorpusView(frame, encoded)
