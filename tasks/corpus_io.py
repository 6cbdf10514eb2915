"""Read the corpus artifact back into the texts and labels the library works on."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from storage import ArtifactRef, read_artifact
from xattr.models.encoding import EncodedText, encode_texts
from xattr.models.loading import LoadedModel


@dataclass(frozen=True)
class CorpusView:
    """The corpus frame and its texts encoded for one model."""

    frame: pd.DataFrame
    encoded: list[EncodedText]

    @property
    def doc_ids(self) -> list[str]:
        return self.frame["doc_id"].tolist()


def read_corpus(ref: ArtifactRef, loaded: LoadedModel, rows: range | None = None) -> CorpusView:
    """Read and tokenise the corpus artifact for ``loaded`` (only positions ``rows`` when given)."""
    table = read_artifact(ref)
    if rows is not None:
        table = table.slice(rows.start, len(rows))
    frame = table.to_pandas()
    pairs = frame["text_pair"].tolist() if frame["text_pair"].notna().any() else None
    encoded = encode_texts(loaded.tokenizer, frame["text"].tolist(), pairs, max_length=loaded.max_length)
    return CorpusView(frame, encoded)
