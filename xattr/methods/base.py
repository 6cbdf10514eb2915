"""The attribution-method interface and the registry that configs and the CLI pick from.

A method is configured by its parameters only. What it needs besides the model and the batch it
declares from those parameters (:meth:`AttributionMethod.requirements`); it receives those
resources per call in a :class:`~xattr.methods.context.MethodContext` and reports what the run did
(fallbacks, base computations) through :meth:`AttributionMethod.diagnostics`. Flows ask
:func:`method_requirements` by name without building a method.
"""

from __future__ import annotations

import re
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Generic, Literal, TypeVar, cast, get_args, get_origin

import torch
from pydantic import BaseModel, ConfigDict, ValidationError

from xattr.methods.context import MethodContext, Requirements
from xattr.models.encoding import Batch
from xattr.models.loading import LoadedModel
from xattr.types import TaskName


class MethodParams(BaseModel):
    """Base of every method's parameters: immutable, unknown keys refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")


#: The parameters' type of a method (``AttributionMethod[LafaParams]``).
P = TypeVar("P", bound=MethodParams)


#: Whether a method's scores carry a sign: ``True``/``False``, or ``"reduction"`` (signed with
#: ``reduction: sum``, a magnitude with ``sum_of_squares``) or ``"base"`` (as its base method).
Signedness = bool | Literal["reduction", "base"]
#: How :data:`Signedness` reads in a method listing.
SIGNEDNESS_LABELS: dict[str, str] = {
    "True": "yes",
    "False": "no (magnitude only)",
    "reduction": "with reduction: sum",
    "base": "as its base method",
}


class AttributionMethod(ABC, Generic[P]):
    """One attribution method: token scores for a batch of texts and one target output each.

    Subclasses name their parameters' type (``class Lafa(AttributionMethod[LafaParams])``: that
    type becomes ``Params``), are named by :func:`register_method` and implement
    :meth:`attribute_batch`; a method that needs resources
    overrides :meth:`requirements`. A method keeps no state of a run on ``self``: caches and
    counters of a run live in its context (``context.workspace(self.name)``).

    Attributes:
        name: Registry name used in configs.
        summary: One line saying what it computes.
        paper: The reference (paper and equation).
        Params: The pydantic model of its parameters (``P``).
        multiplies_by_inputs: Whether scores multiply the gradient by the input (Captum's flag).
        signed: Whether scores carry a sign (see :data:`Signedness`; read it through
            :meth:`scores_signed`, which resolves ``"reduction"`` and ``"base"`` for given parameters).
        cost: Forward/backward passes per text and target, with ``{param}`` placeholders
            (:meth:`cost_for` fills them in).
        tasks: Model tasks the method supports.
        params: This instance's validated parameters.
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    paper: ClassVar[str]
    signed: ClassVar[Signedness] = False
    cost: ClassVar[str]
    tasks: ClassVar[tuple[TaskName, ...]]
    Params: ClassVar[type[MethodParams]] = MethodParams
    multiplies_by_inputs: ClassVar[bool] = False
    params: P

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """``Params`` is the parameter type the subclass names (``AttributionMethod[LafaParams]``)."""
        super().__init_subclass__(**kwargs)
        if "Params" in cls.__dict__:
            return
        for base in cls.__dict__.get("__orig_bases__", ()):
            for arg in get_args(base):
                if isinstance(arg, type) and issubclass(arg, MethodParams):
                    cls.Params = arg

    def __init__(self, params: P | None = None) -> None:
        self.params = params if params is not None else cast(P, self.Params())

    @classmethod
    def scores_signed(cls, params: P) -> bool:
        """Whether this method configured with ``params`` gives signed scores (viewers colour them diverging).

        ``"reduction"``: signed when ``params.reduction`` is ``"sum"`` (``sum_of_squares`` is a
        magnitude); ``"base"``: signed when the configured base method is (LAFA adds non-negative
        kernel weights times the neighbours' base scores, so it keeps its base's sign).
        """
        if isinstance(cls.signed, bool):
            return cls.signed
        values = params.model_dump()
        if cls.signed == "reduction":
            return bool(values["reduction"] == "sum")
        return method_signed(values["base"], values["base_params"])

    @classmethod
    def requirements(cls, params: P) -> Requirements:
        """What the method configured with ``params`` needs in its context (default: nothing)."""
        return Requirements()

    @classmethod
    def cost_for(cls, params: P) -> str:
        """:attr:`cost` with the values of ``params`` filled in."""
        return cls.cost.format(**params.model_dump())

    def diagnostics(self, context: MethodContext) -> dict[str, float]:
        """What the run with ``context`` did besides scoring, as metrics.

        The default reports ``fallbacks`` for a method that needs neighbours (rows that had none
        and fell back to the method's default, see :meth:`count_fallback`) and nothing otherwise.
        """
        if self.requirements(self.params).neighbours is None:
            return {}
        return {"fallbacks": float(context.counter(self.name, "fallbacks"))}

    def count_fallback(self, context: MethodContext, rows: int = 1) -> None:
        """Count ``rows`` rows that needed neighbours but had none (reported as ``fallbacks``)."""
        context.count(self.name, "fallbacks", rows)

    @abstractmethod
    def attribute_batch(
        self, loaded: LoadedModel, batch: Batch, targets: torch.Tensor, context: MethodContext
    ) -> torch.Tensor:
        """Token scores for one padded batch.

        Args:
            loaded: The model (eval mode).
            batch: Padded inputs on the model's device, ``(batch, seq)``; ``batch.indices`` are
                positions in ``context.corpus``.
            targets: ``(batch,)`` output index to explain for each row.
            context: The run's resources (see :meth:`requirements`).

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


_REGISTRY: dict[str, type[AttributionMethod[Any]]] = {}


MethodClass = TypeVar("MethodClass", bound=type[AttributionMethod[Any]])


#: Every model task (``xattr.types.TaskName``).
ALL_TASKS: tuple[TaskName, ...] = get_args(TaskName)


def register_method(
    name: str,
    *,
    summary: str,
    paper: str,
    signed: Signedness = False,
    cost: str,
    tasks: tuple[TaskName, ...] = ALL_TASKS,
) -> Callable[[MethodClass], MethodClass]:
    """Class decorator naming a method and adding it to the registry (as zennit's ``register_composite``).

    What a method needs (neighbour index, head masks, LDAV vectors) is in its
    :meth:`~AttributionMethod.requirements`; everything else the CLI lists is given here.

    Args:
        name: Registry name used in configs and the CLI.
        summary: One line saying what it computes.
        paper: The reference (paper and equation).
        signed: Whether its scores carry a sign (:data:`Signedness`; default: magnitudes only).
        cost: Forward/backward passes per text and target, ``{param}`` placeholders allowed
            (``"{steps} fwd + {steps} bwd"``).
        tasks: Model tasks it supports.

    Raises:
        ValueError: Another class is already registered under ``name``, or ``cost`` names an
            unknown parameter.
    """

    def register(cls: MethodClass) -> MethodClass:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"attribution method {name!r} is registered twice")
        if signed not in (True, False, "reduction", "base"):
            raise ValueError(f"attribution method {name!r}: signed must be True, False, 'reduction' or 'base'")
        unknown = {f for f in re.findall(r"{(\w+)}", cost)} - set(cls.Params.model_fields)
        if unknown:
            raise ValueError(f"attribution method {name!r}: cost names unknown parameter(s) {sorted(unknown)}")
        cls.name, cls.summary, cls.paper = name, summary, paper
        cls.signed, cls.cost, cls.tasks = signed, cost, tuple(tasks)
        _REGISTRY[name] = cls
        return cls

    return register


def available_methods() -> dict[str, type[AttributionMethod[Any]]]:
    """All registered methods by name, sorted."""
    return dict(sorted(_REGISTRY.items()))


def method_class(name: str) -> type[AttributionMethod[Any]]:
    """The registered method class called ``name``.

    Raises:
        ValueError: Unknown name (valid names listed).
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown attribution method {name!r}; valid methods: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def method_params(name: str, params: dict[str, Any] | None = None) -> MethodParams:
    """The validated parameters of method ``name``.

    Raises:
        ValueError: Unknown name (valid names listed) or invalid parameters (named).
    """
    try:
        return method_class(name).Params(**(params or {}))
    except ValidationError as exc:
        raise ValueError(f"invalid parameters for method {name!r}: {exc}") from exc


def get_method(name: str, params: dict[str, Any] | None = None) -> AttributionMethod[Any]:
    """Instantiate a registered method with validated parameters.

    Args:
        name: Registry name.
        params: Parameter values; unknown keys are refused.

    Returns:
        The method instance.

    Raises:
        ValueError: Unknown name (valid names listed) or invalid parameters (named).
    """
    return method_class(name)(method_params(name, params))


def method_signed(name: str, params: dict[str, Any] | None = None) -> bool:
    """Whether method ``name`` configured with ``params`` gives signed scores (:meth:`AttributionMethod.scores_signed`).

    Raises:
        ValueError: Unknown name (valid names listed) or invalid parameters (named).
    """
    return method_class(name).scores_signed(method_params(name, params))


def method_requirements(name: str, params: dict[str, Any] | None = None) -> Requirements:
    """What method ``name`` configured with ``params`` needs in its context, without building it.

    Raises:
        ValueError: Unknown name (valid names listed) or invalid parameters (named).
    """
    return method_class(name).requirements(method_params(name, params))


def signedness_label(cls: type[AttributionMethod[Any]]) -> str:
    """How a method's :data:`Signedness` reads in a listing (``"yes"``, ``"with reduction: sum"``, ...)."""
    return SIGNEDNESS_LABELS[str(cls.signed)]


def describe_parameters(cls: type[AttributionMethod[Any]]) -> list[tuple[str, str, Any, str]]:
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
