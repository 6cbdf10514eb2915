"""LDAV: a token's importance is its closeness to the explained class's learned activation vector."""

from __future__ import annotations

import torch

from xattr.ldav.scores import ldav_token_scores
from xattr.ldav.vectors import LdavError
from xattr.methods.base import AttributionMethod, MethodParams, register_method
from xattr.methods.context import MethodContext, Requirements
from xattr.methods.gradients import word_embeddings
from xattr.models.encoding import Batch
from xattr.models.loading import LoadedModel


@register_method(
    "ldav",
    summary="negated z-normalised Euclidean distance of each word embedding to the class's LDAV vector",
    paper="LDAV paper Sec. 3.2 Eq. 4-5; Sec. 4.5 (pairs)",
    signed=True,
)
class Ldav(AttributionMethod[MethodParams]):
    """Locally Distributed Activation Vectors (LDAV paper, LDAV score: Section 3.2, Eq. 4-5).

    Intuition: a model trained with LDAV (``ldav.enabled`` in the train flow) learned one vector
    ``z_j`` per class in the input word-embedding space, pulled towards the mean word embedding of
    the texts predicted as class ``j`` and pushed away from the other classes' vectors
    (``L = L1 + L2 - L3``, Section 3.1). A word whose embedding lies close to ``z_yhat`` is
    evidence for class ``yhat``. The score is ``-(alpha_i - mu) / sigma`` with
    ``alpha_i = ||z_yhat - x_i||`` (Eq. 4) and ``mu``, ``sigma`` the mean and (population)
    standard deviation of ``alpha`` over the text's non-special tokens (Eq. 5). No forward or
    backward pass is needed: one embedding lookup and a distance.

    Sentence pairs (the vectors were trained on element-wise products, Section 4.5): a token of
    one segment is multiplied element-wise by the other segment's mean word embedding first.

    The explained class is the row's target (the predicted class with ``target: predicted``).
    Reads the class vectors and the encoded corpus (for the special-token and segment masks) from
    its context; :func:`~xattr.ldav.vectors.ldav_vectors_for`, which the attribute stage and
    ``attribute_corpus`` call, refuses regression models, models trained without LDAV, and vectors
    whose dimension or class count does not fit the model (:class:`LdavError`).
    """

    @classmethod
    def requirements(cls, params: MethodParams) -> Requirements:
        """The model's LDAV class vectors."""
        return Requirements(ldav_vectors=True)

    def attribute_batch(
        self, loaded: LoadedModel, batch: Batch, targets: torch.Tensor, context: MethodContext
    ) -> torch.Tensor:
        """Scores ``(batch, seq)`` of Eq. 5 for each row's target class; 0 at special tokens and padding."""
        found = context.ldav_vectors
        if found is None:
            raise LdavError("ldav needs LDAV vectors in its MethodContext (from xattr.ldav.vectors.ldav_vectors_for)")
        if bool(((targets < 0) | (targets >= found.num_classes)).any()):
            raise LdavError(f"targets {targets.tolist()} outside the {found.num_classes} LDAV class vectors")
        content = torch.zeros(batch.input_ids.shape, dtype=torch.bool)
        segments = torch.full(batch.input_ids.shape, -1, dtype=torch.long)
        for row, text in enumerate(context.batch_texts(batch, self.name)):
            content[row, : len(text)] = ~torch.tensor(text.special, dtype=torch.bool)
            segments[row, : len(text)] = torch.tensor(text.segments, dtype=torch.long)
        device = batch.input_ids.device
        with torch.no_grad():
            embeddings = word_embeddings(loaded, batch.input_ids)  # (batch, seq, hidden)
            return ldav_token_scores(
                embeddings,
                content.to(device),
                found.vectors[targets],
                segments.to(device) if found.pair_product else None,
            )
