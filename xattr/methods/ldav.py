"""LDAV: a token's importance is its closeness to the explained class's learned activation vector."""

from __future__ import annotations

import torch

from xattr.ldav.scores import ldav_token_scores
from xattr.ldav.vectors import LdavError, LdavVectors, ldav_vectors_for
from xattr.methods.base import AttributionMethod, MethodParams, register_method
from xattr.methods.gradients import word_embeddings
from xattr.models.encoding import Batch
from xattr.models.loading import LoadedModel


@register_method
class Ldav(AttributionMethod):
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
    Needs the encoded corpus bound (:meth:`bind_corpus`, done by the attribute stage) for the
    special-token and segment masks. Refuses regression models, models trained without LDAV,
    and vectors whose dimension or class count does not fit the model (:class:`LdavError`).
    """

    name = "ldav"
    summary = "negated z-normalised Euclidean distance of each word embedding to the class's LDAV vector"
    paper = "LDAV paper Sec. 3.2 Eq. 4-5; Sec. 4.5 (pairs)"
    Params = MethodParams

    def __init__(self, params: MethodParams | None = None) -> None:
        super().__init__(params)
        self._vectors: tuple[int, LdavVectors] | None = None

    def vectors(self, loaded: LoadedModel) -> LdavVectors:
        """The model's class vectors, read once per loaded model."""
        if self._vectors is None or self._vectors[0] != id(loaded):
            self._vectors = (id(loaded), ldav_vectors_for(loaded))
        return self._vectors[1]

    def _masks(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """``(content, segments)``, both ``(batch, seq)``, from the bound corpus."""
        if not self._corpus:
            raise ValueError("ldav needs the encoded corpus for special-token masks: call bind_corpus(encoded) first")
        content = torch.zeros(batch.input_ids.shape, dtype=torch.bool)
        segments = torch.full(batch.input_ids.shape, -1, dtype=torch.long)
        for row, position in enumerate(batch.indices):
            if not 0 <= position < len(self._corpus):
                raise ValueError(f"batch row {row} is corpus position {position}, outside the bound corpus")
            text = self._corpus[position]
            n = len(text)
            if n > batch.input_ids.shape[1] or batch.input_ids[row, :n].tolist() != list(text.input_ids):
                raise ValueError(f"batch row {row} does not match bound corpus text {position}: bind the right corpus")
            content[row, :n] = ~torch.tensor(text.special, dtype=torch.bool)
            segments[row, :n] = torch.tensor(text.segments, dtype=torch.long)
        device = batch.input_ids.device
        return content.to(device), segments.to(device)

    def attribute_batch(self, loaded: LoadedModel, batch: Batch, targets: torch.Tensor) -> torch.Tensor:
        """Scores ``(batch, seq)`` of Eq. 5 for each row's target class; 0 at special tokens and padding."""
        found = self.vectors(loaded)
        if bool(((targets < 0) | (targets >= found.num_classes)).any()):
            raise LdavError(f"targets {targets.tolist()} outside the {found.num_classes} LDAV class vectors")
        content, segments = self._masks(batch)
        with torch.no_grad():
            embeddings = word_embeddings(loaded, batch.input_ids)  # (batch, seq, hidden)
            return ldav_token_scores(
                embeddings, content, found.vectors[targets], segments if found.pair_product else None
            )
