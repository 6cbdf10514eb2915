"""The attribution-method interface and the registry that configs and the CLI pick from."""

from __future__ import annotations

import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, get_args, get_origin

import torch
from pydantic import BaseModel, ConfigDict, ValidationError

from xattr.heads.masks import HeadMasks
from xattr.models.encoding import Batch, EncodedText
from xattr.models.loading import LoadedModel
from xattr.neighbours.selection import NeighbourRequest


class MethodParams(BaseModel):
    """Base of every method's parameters: immutable, unknown keys refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class AttributionMethod(ABC):
    """One attribution method: token scores for a batch of texts and one target output each.

    Subclasses set the class attributes and implement :meth:`attribute_batch`.

    Attributes:
        name: Registry name used in configs.
        summary: One line saying what it computes.
        paper: The reference (paper and equation).
        Params: The pydantic model of its parameters.
        multiplies_by_inputs: Whether scores multiply the gradient by the input (Captum's flag).
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    paper: ClassVar[str]
    Params: ClassVar[type[MethodParams]] = MethodParams
    multiplies_by_inputs: ClassVar[bool] = False
    #: Whether the method needs each text's nearest neighbours (see :meth:`bind_corpus`).
    uses_neighbours: ClassVar[bool] = False
    #: Whether the method needs attention-head masks (Mask-LRP; see :meth:`bind_head_masks`).
    uses_head_masks: ClassVar[bool] = False

    def __init__(self, params: MethodParams | None = None) -> None:
        self.params = params if params is not None else self.Params()
        self._corpus: Sequence[EncodedText] = ()
        self._neighbours: Mapping[int, Sequence[int]] = {}
        #: Rows that needed neighbours but had none (they fell back to the method's default).
        self.fallbacks = 0
        self._head_masks: HeadMasks | None = None

    def bind_corpus(
        self, encoded: Sequence[EncodedText], neighbours: Mapping[int, Sequence[int]] | None = None
    ) -> None:
        """Give the method the encoded corpus and, per corpus position, its neighbours' positions.

        Methods with ``uses_neighbours`` read reference texts through :meth:`reference_texts`.
        Binding resets the ``fallbacks`` counter.
        """
        self._corpus = encoded
        self._neighbours = neighbours or {}
        self.fallbacks = 0

    def reference_texts(self, position: int) -> list[EncodedText]:
        """The neighbour texts of the text at corpus ``position`` (empty when none were bound)."""
        return [self._corpus[j] for j in self._neighbours.get(position, ())]

    def bind_head_masks(self, masks: HeadMasks) -> None:
        """Give a method with ``uses_head_masks`` the kept heads (from the head-statistics stage)."""
        if not self.uses_head_masks:
            raise TypeError(f"method {self.name!r} does not use head masks")
        self._head_masks = masks

    def needs_references(self) -> bool:
        """Whether this configured instance needs neighbours bound before running."""
        return self.uses_neighbours

    @abstractmethod
    def attribute_batch(self, loaded: LoadedModel, batch: Batch, targets: torch.Tensor) -> torch.Tensor:
        """Token scores for one padded batch.

        Args:
            loaded: The model (eval mode).
            batch: Padded inputs on the model's device, ``(batch, seq)``.
            targets: ``(batch,)`` output index to explain for each row.

        Returns:
            ``(batch, seq)`` scores; values at padding positions are ignored.
        """


def row_generator(seed: int, input_ids: Sequence[int], device: str | None = None) -> Any:
    """A torch generator seeded from ``seed`` and the row's token ids.

    Random draws then depend on the text and the seed only, never on which other texts share the
    batch, so batched results equal one-by-one results and a seed reproduces a run.
    """
    import torch

    ids = bytes(str(list(input_ids)), "ascii")
    generator = torch.Generator(device=device or "cpu")
    generator.manual_seed((int(seed) * 1_000_003 + zlib.crc32(ids)) % (2**63 - 1))
    return generator


_REGISTRY: dict[str, type[AttributionMethod]] = {}


def register_method(cls: type[AttributionMethod]) -> type[AttributionMethod]:
    """Class decorator adding a method to the registry under ``cls.name``."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"attribution method {cls.name!r} is registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def available_methods() -> dict[str, type[AttributionMethod]]:
    """All registered methods by name, sorted."""
    return dict(sorted(_REGISTRY.items()))


def get_method(name: str, params: dict[str, Any] | None = None) -> AttributionMethod:
    """Instantiate a registered method with validated parameters.

    Args:
        name: Registry name.
        params: Parameter values; unknown keys are refused.

    Returns:
        The method instance.

    Raises:
        ValueError: Unknown name (valid names listed) or invalid parameters (named).
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown attribution method {name!r}; valid methods: {', '.join(sorted(_REGISTRY))}")
    cls = _REGISTRY[name]
    try:
        validated = cls.Params(**(params or {}))
    except ValidationError as exc:
        raise ValueError(f"invalid parameters for method {name!r}: {exc}") from exc
    return cls(validated)


@dataclass(frozen=True)
class Requirements:
    """What a configured method needs besides the model and the encoded corpus."""

    neighbours: NeighbourRequest | None = None
    head_masks: bool = False
    ldav_vectors: bool = False


def method_requirements(name: str, params: dict[str, Any] | None = None) -> Requirements:
    """The resources method ``name`` with ``params`` needs (neighbour request, head masks, LDAV vectors)."""
    method = get_method(name, params)
    request = None
    if method.needs_references():
        finder = getattr(method, "neighbour_request", None)
        request = finder() if finder is not None else NeighbourRequest(10, None)
    return Requirements(request, method.uses_head_masks, name == "ldav")


def describe_parameters(cls: type[AttributionMethod]) -> list[tuple[str, str, Any, str]]:
    """``(name, type, default, description)`` for each parameter of a method."""
    rows = []
    for field_name, info in cls.Params.model_fields.items():
        annotation: Callable[..., Any] | Any = info.annotation
        if get_origin(annotation) is Literal:
            type_name = " | ".join(map(str, get_args(annotation)))
        else:
            type_name = getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")
        rows.append((field_name, type_name, info.get_default(call_default_factory=True), info.description or ""))
    return rows
