"""Hypothesis and concept tests with LDAV class vectors (Sections 4.7-4.9).

A phrase ("low blood pressure") or a word list (a sentiment lexicon) becomes one vector, the mean
of its word pieces' input embeddings; its LDAV score against class ``j`` is Eq. 4-5 with the
phrase vector in place of a token: the Euclidean distance to every class vector, z-normalised
across the ``k`` classes and negated. A high score means the model's class-``j`` vector sits
close to the phrase: the phrase is evidence for class ``j`` (Table 9). With two classes the scores
are exactly +1 and -1, as in Section 4.8. (Table 9's rows for four classes do not sum to 0, so
the paper's normalisation there is not exactly this one; it does not say which it used.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from xattr.ldav.scores import znormalise_negated
from xattr.ldav.vectors import LdavError, LdavVectors, ldav_vectors_for
from xattr.models.loading import LoadedModel

__all__ = ["ConceptError", "class_vector_correlation", "concept_scores", "concept_vector"]


class ConceptError(ValueError):
    """A phrase or word list cannot be scored (no known word pieces)."""


@dataclass(frozen=True)
class _Concept:
    name: str
    vector: torch.Tensor  # (hidden,)
    pieces: int
    unknown: int


def concept_vector(loaded: LoadedModel, words: str | Sequence[str]) -> tuple[torch.Tensor, int, int]:
    """The mean input embedding of a phrase's (or a word list's) known word pieces.

    Args:
        loaded: The model.
        words: One phrase, or a list of words/phrases pooled together (a lexicon).

    Returns:
        ``(vector (hidden,), pieces used, unknown pieces skipped)``.

    Raises:
        ConceptError: If no known word piece remains (every piece is the unknown token, or the
            phrase is empty), naming the phrase.
    """
    items = [words] if isinstance(words, str) else list(words)
    tokenizer = loaded.tokenizer
    unk = tokenizer.unk_token_id
    ids: list[int] = []
    unknown = 0
    for item in items:
        for piece in tokenizer(item, add_special_tokens=False)["input_ids"]:
            if unk is not None and piece == unk:
                unknown += 1
            else:
                ids.append(int(piece))
    if not ids:
        shown = items[0] if len(items) == 1 else f"{len(items)} words starting {items[:3]}"
        raise ConceptError(
            f"phrase {shown!r} has no word piece the model knows "
            f"({unknown} unknown piece(s)); nothing to score against the LDAV vectors"
        )
    table = loaded.model.get_input_embeddings()
    with torch.no_grad():
        vectors = table(torch.tensor(ids, device=table.weight.device))  # (pieces, hidden)
    return vectors.mean(dim=0), len(ids), unknown


def concept_scores(
    loaded: LoadedModel,
    concepts: Sequence[str] | Mapping[str, str | Sequence[str]],
    vectors: LdavVectors | None = None,
) -> pd.DataFrame:
    """Score phrases or word lists against every class vector: a table like the paper's Table 9.

    Args:
        loaded: A model trained with LDAV (single texts: pair-trained vectors live in the space
            of element-wise products and are refused).
        concepts: Phrases (each its own row) or ``{name: phrase or list of words}``.
        vectors: The class vectors; read from the model directory when ``None``.

    Returns:
        One row per concept: ``concept``, ``pieces``, ``unknown_pieces``, one LDAV-score column
        per class (named by the class label), then ``distance:<label>`` columns with the raw
        Euclidean distances (Eq. 4).

    Raises:
        LdavError: The model has no (fitting) LDAV vectors, is a regression model, or its
            vectors were trained on sentence pairs.
        ConceptError: A concept has no known word piece.
    """
    found = vectors if vectors is not None else ldav_vectors_for(loaded)
    if found.pair_product:
        raise LdavError(
            "these LDAV vectors were trained on sentence pairs (element-wise products of two sentence vectors); "
            "a single phrase has no partner sentence to multiply by, so concept scores are undefined"
        )
    named = dict(concepts) if isinstance(concepts, Mapping) else {c: c for c in concepts}
    if not named:
        raise ConceptError("no phrase given")
    rows: list[_Concept] = []
    for name, words in named.items():
        vector, pieces, unknown = concept_vector(loaded, words)
        rows.append(_Concept(name, vector, pieces, unknown))
    stacked = torch.stack([r.vector for r in rows]).to(found.vectors.dtype)  # (concepts, hidden)
    z = found.vectors.to(stacked.device)
    distances = torch.cdist(stacked.double().unsqueeze(0), z.double().unsqueeze(0)).squeeze(0)  # (concepts, k)
    scores = znormalise_negated(distances, torch.ones_like(distances, dtype=torch.bool))
    labels = _labels(found, loaded)
    frame = pd.DataFrame(
        {
            "concept": [r.name for r in rows],
            "pieces": [r.pieces for r in rows],
            "unknown_pieces": [r.unknown for r in rows],
        }
    )
    for j, label in enumerate(labels):
        frame[label] = scores[:, j].cpu().numpy()
    for j, label in enumerate(labels):
        frame[f"distance:{label}"] = distances[:, j].cpu().numpy()
    return frame


def class_vector_correlation(vectors: LdavVectors) -> pd.DataFrame:
    """Pearson correlation between class vectors over the embedding dimensions (Section 4.9, Figure 8).

    Returns:
        A ``(k, k)`` frame indexed and labelled by class.
    """
    matrix = np.corrcoef(vectors.vectors.detach().double().cpu().numpy())
    labels = list(vectors.labels)
    return pd.DataFrame(matrix, index=labels, columns=labels)


def _labels(found: LdavVectors, loaded: LoadedModel) -> list[str]:
    if len(found.labels) == found.num_classes:
        return list(found.labels)
    return [loaded.id2label.get(j, str(j)) for j in range(found.num_classes)]
