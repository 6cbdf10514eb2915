"""LDAV (Locally Distributed Activation Vectors): class vectors learned while fine-tuning, token
scores against them, and phrase / concept tests. See ``../shared/papers/ldav-*.txt``."""

from __future__ import annotations

from xattr.ldav.concepts import ConceptError, class_vector_correlation, concept_scores, concept_vector
from xattr.ldav.losses import (
    Distance,
    LdavLossTerms,
    class_vector_separation,
    ldav_loss_terms,
    pooled_input_embeddings,
    sentence_vector_distance,
)
from xattr.ldav.scores import ldav_token_scores, znormalise_negated
from xattr.ldav.vectors import (
    LDAV_JSON,
    LDAV_VECTORS_FILE,
    LdavError,
    LdavVectors,
    has_ldav_vectors,
    ldav_vectors_for,
    load_ldav_vectors,
    save_ldav_vectors,
)

__all__ = [
    "LDAV_JSON",
    "LDAV_VECTORS_FILE",
    "ConceptError",
    "Distance",
    "LdavError",
    "LdavLossTerms",
    "LdavVectors",
    "class_vector_correlation",
    "class_vector_separation",
    "concept_scores",
    "concept_vector",
    "has_ldav_vectors",
    "ldav_loss_terms",
    "ldav_token_scores",
    "ldav_vectors_for",
    "load_ldav_vectors",
    "pooled_input_embeddings",
    "save_ldav_vectors",
    "sentence_vector_distance",
    "znormalise_negated",
]
