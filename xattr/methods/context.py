"""What a method needs (:class:`Requirements`) and what one run gives it (:class:`MethodContext`).

A method states from its parameters alone what it needs besides the model and the batch
(``AttributionMethod.requirements(params)``): its texts' nearest neighbours and how to select them,
Mask-LRP's head masks, the LDAV class vectors. The caller gathers those resources once per run and
passes them to every ``attribute_batch`` call in one frozen :class:`MethodContext`, as Captum passes
``baselines`` to ``attribute()``. Methods keep no per-run state on themselves: a per-run cache or
counter lives in the context's ``scratch`` workspace, which the caller creates fresh with each
context and from which the method's ``diagnostics(context)`` reads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from xattr.heads.masks import HeadMasks
from xattr.ldav.vectors import LdavVectors
from xattr.models.encoding import Batch, EncodedText
from xattr.neighbours.selection import NeighbourRequest

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Requirements:
    """What a configured method needs in its :class:`MethodContext` (the encoded corpus is always there).

    Attributes:
        neighbours: How to select each text's neighbours (LAFA Eq. 4, SHAP's neighbour
            references), or ``None`` when the method uses none.
        head_masks: Whether it needs the kept attention heads of the head-statistics stage.
        ldav_vectors: Whether it needs the model's LDAV class vectors.
        base: ``(name, params)`` of the method whose attributions this one smooths over other texts
            (LAFA's base method), or ``None``. A caller may give those attributions precomputed
            (``MethodContext.base_scores``); the method computes the ones it is not given.
    """

    neighbours: NeighbourRequest | None = None
    head_masks: bool = False
    ldav_vectors: bool = False
    base: tuple[str, Mapping[str, Any]] | None = None

    def missing_from(self, context: MethodContext) -> list[str]:
        """The resources required here that ``context`` lacks, named for an error message."""
        missing = []
        if self.neighbours is not None and not context.neighbours:
            missing.append("neighbours")
        if self.head_masks and context.head_masks is None:
            missing.append("head masks")
        if self.ldav_vectors and context.ldav_vectors is None:
            missing.append("LDAV vectors")
        return missing


@dataclass(frozen=True, eq=False)
class MethodContext:
    """The resources of one attribution run, passed to each of its ``attribute_batch`` calls.

    Attributes:
        corpus: The encoded corpus; a batch's rows are corpus positions (``Batch.indices``).
        neighbours: Per corpus position, its neighbours' positions, nearest first.
        head_masks: Kept attention heads (Mask-LRP), or ``None``.
        ldav_vectors: The model's LDAV class vectors on its device and dtype
            (:func:`xattr.ldav.vectors.ldav_vectors_for`), or ``None``.
        base_scores: Attributions of the method's base method (:attr:`Requirements.base`) already
            computed, by (corpus position, target): ``(tokens,)`` scores of the whole text. A method
            that smooths its base method's scores over other texts (LAFA) takes them from here
            instead of computing them (the corpus' base attributions once per run, not once per
            shard that needs them).
        scratch: The run's mutable workspace, owned by the caller and fresh in every context: per
            method name, the caches and counters a method keeps for this run only (read them
            through :meth:`workspace` and :meth:`counter`).
    """

    corpus: Sequence[EncodedText] = ()
    neighbours: Mapping[int, Sequence[int]] = field(default_factory=dict)
    head_masks: HeadMasks | None = None
    ldav_vectors: LdavVectors | None = None
    base_scores: Mapping[tuple[int, int], torch.Tensor] = field(default_factory=dict, repr=False)
    scratch: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)

    def workspace(self, owner: str) -> dict[str, Any]:
        """The per-run workspace of the method named ``owner`` (created empty on first use)."""
        return self.scratch.setdefault(owner, {})

    def count(self, owner: str, counter: str, n: int = 1) -> None:
        """Add ``n`` to counter ``counter`` of method ``owner``."""
        space = self.workspace(owner)
        space[counter] = space.get(counter, 0) + n

    def counter(self, owner: str, counter: str) -> int:
        """The value of counter ``counter`` of method ``owner`` (0 before the first count)."""
        return int(self.scratch.get(owner, {}).get(counter, 0))

    def text(self, position: int) -> EncodedText:
        """The encoded text at corpus ``position``.

        Raises:
            ValueError: ``position`` is outside the corpus.
        """
        if not 0 <= position < len(self.corpus):
            raise ValueError(f"corpus position {position} is outside the context's corpus of {len(self.corpus)} texts")
        return self.corpus[position]

    def reference_texts(self, position: int) -> list[EncodedText]:
        """The neighbour texts of the text at corpus ``position``, nearest first (empty when it has none)."""
        return [self.text(j) for j in self.neighbours.get(position, ())]

    def batch_texts(self, batch: Batch, owner: str) -> list[EncodedText]:
        """The encoded texts of a batch's rows, checked against the batch's token ids.

        Args:
            batch: Padded inputs whose ``indices`` are corpus positions.
            owner: The method asking (named in the errors).

        Raises:
            ValueError: The context has no corpus, a row's position is outside it, or a row's
                tokens are not those of its corpus text (another corpus was given).
        """
        if not self.corpus:
            raise ValueError(f"{owner} needs the encoded corpus in its MethodContext")
        texts = []
        for row, position in enumerate(batch.indices):
            if not 0 <= position < len(self.corpus):
                raise ValueError(f"batch row {row} is corpus position {position}, outside the context's corpus")
            text = self.corpus[position]
            n = len(text)
            if n > batch.input_ids.shape[1] or batch.input_ids[row, :n].tolist() != list(text.input_ids):
                raise ValueError(
                    f"batch row {row} does not match corpus text {position} of the context: pass the right corpus"
                )
            texts.append(text)
        return texts
