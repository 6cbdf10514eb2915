"""LDAV class vectors saved with the model they were trained with, and loaded back for it.

A model directory trained with LDAV holds ``ldav_vectors.safetensors`` (one tensor ``vectors``,
``(k, hidden)`` float32, row ``j`` = class ``j``) and ``ldav.json`` (the training settings and the
text-vector mode). A model directory without them was trained without LDAV.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from xattr.models.loading import LoadedModel

__all__ = [
    "LDAV_JSON",
    "LDAV_VECTORS_FILE",
    "LdavError",
    "LdavVectors",
    "has_ldav_vectors",
    "ldav_vectors_for",
    "load_ldav_vectors",
    "save_ldav_vectors",
]

LDAV_VECTORS_FILE = "ldav_vectors.safetensors"
LDAV_JSON = "ldav.json"
_FORMAT_VERSION = 1


class LdavError(ValueError):
    """LDAV cannot be used as asked: no vectors, a regression model, or mismatched dimensions."""


@dataclass(frozen=True)
class LdavVectors:
    """The class vectors ``z_1..z_k`` and how they were trained.

    Attributes:
        vectors: ``(k, hidden)`` float32, row ``j`` for class ``j``.
        pair_product: Whether text vectors were the element-wise product of the two segments'
            means (Section 4.5, sentence pairs) rather than one mean.
        rho1: Weight of ``L2`` in training.
        rho2: Weight of ``L3`` in training.
        distance: ``L2``'s distance in training (``cosine`` or ``euclidean``).
        vector_class: ``predicted`` or ``label``: which class's vector ``L2`` used.
        labels: Class names by index (``"0"``, ``"1"``, ... when the model has none).
        layer: The space of the vectors: ``None`` the input word embeddings (the paper), else the
            hidden layer whose token states were pooled (``hidden_states[layer]``).
    """

    vectors: torch.Tensor
    pair_product: bool
    rho1: float
    rho2: float
    distance: str
    vector_class: str
    labels: tuple[str, ...]
    layer: int | None = None

    @property
    def num_classes(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def metadata(self) -> dict[str, Any]:
        """The JSON side of the saved vectors."""
        meta: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "vectors"}
        meta["labels"] = list(self.labels)
        return {"format_version": _FORMAT_VERSION, "num_classes": self.num_classes, "dim": self.dim, **meta}


def has_ldav_vectors(directory: Path | str) -> bool:
    """Whether ``directory`` holds LDAV class vectors."""
    return (Path(directory) / LDAV_VECTORS_FILE).is_file()


def save_ldav_vectors(directory: Path | str, vectors: LdavVectors) -> None:
    """Write the vectors and their JSON into an existing model directory (never overwriting).

    Raises:
        FileExistsError: If the directory already holds LDAV vectors.
    """
    directory = Path(directory)
    for name in (LDAV_VECTORS_FILE, LDAV_JSON):
        if (directory / name).exists():
            raise FileExistsError(f"{directory / name} already exists; LDAV vectors are never overwritten")
    save_file(
        {"vectors": vectors.vectors.detach().to("cpu", torch.float32).contiguous()}, directory / LDAV_VECTORS_FILE
    )
    (directory / LDAV_JSON).write_text(json.dumps(vectors.metadata(), indent=2) + "\n")


def load_ldav_vectors(directory: Path | str) -> LdavVectors:
    """Read the class vectors saved in a model directory.

    Raises:
        LdavError: If the directory holds no vectors (the model was trained without LDAV) or the
            files are inconsistent (shape differs from the JSON, missing keys).
    """
    directory = Path(directory)
    tensor_file, meta_file = directory / LDAV_VECTORS_FILE, directory / LDAV_JSON
    if not tensor_file.is_file() or not meta_file.is_file():
        raise LdavError(
            f"model {str(directory)!r} was trained without LDAV: it has no {LDAV_VECTORS_FILE} and {LDAV_JSON} "
            "(train it with the train flow and ldav.enabled: true)"
        )
    try:
        meta = json.loads(meta_file.read_text())
        tensors = load_file(tensor_file)
        vectors = tensors["vectors"]
        result = LdavVectors(
            vectors=vectors,
            pair_product=bool(meta["pair_product"]),
            rho1=float(meta["rho1"]),
            rho2=float(meta["rho2"]),
            distance=str(meta["distance"]),
            vector_class=str(meta["vector_class"]),
            labels=tuple(str(v) for v in meta["labels"]),
            layer=None if meta.get("layer") is None else int(meta["layer"]),
        )
    except (KeyError, ValueError, OSError) as exc:
        raise LdavError(f"LDAV vectors in {str(directory)!r} cannot be read: {exc}") from exc
    if vectors.ndim != 2 or list(vectors.shape) != [meta.get("num_classes"), meta.get("dim")]:
        raise LdavError(
            f"{tensor_file}: vectors have shape {tuple(vectors.shape)}, but {LDAV_JSON} says "
            f"({meta.get('num_classes')}, {meta.get('dim')})"
        )
    return result


def ldav_vectors_for(loaded: LoadedModel) -> LdavVectors:
    """The class vectors of a loaded model, checked against it.

    Args:
        loaded: A model loaded from a local directory (``ModelSpec(...).load()``).

    Returns:
        The vectors on the model's device, in the dtype of its word embeddings.

    Raises:
        LdavError: The model is a regression model, was trained without LDAV, or its vectors do
            not fit it (number of classes or embedding dimension).
    """
    if loaded.task == "regression":
        raise LdavError(
            f"LDAV needs a classifier: model {loaded.source!r} is a regression model "
            "(LDAV learns one vector per class and scores tokens against the predicted class's vector)"
        )
    found = load_ldav_vectors(loaded.source)
    check_vectors_fit(found, loaded, where=str(Path(loaded.source) / LDAV_VECTORS_FILE))
    weight = loaded.model.get_input_embeddings().weight
    return replace(found, vectors=found.vectors.to(weight.device, weight.dtype))


def check_vectors_fit(found: LdavVectors, loaded: LoadedModel, *, where: str) -> None:
    """Refuse vectors whose class count or dimension does not match the model.

    Raises:
        LdavError: Naming ``where``, both shapes and what they should be.
    """
    hidden = int(loaded.model.get_input_embeddings().weight.shape[1])
    if found.dim != hidden:
        raise LdavError(
            f"{where}: class vectors have dimension {found.dim}, but model {loaded.source!r} has word embeddings "
            f"of dimension {hidden}: these vectors belong to another model"
        )
    if found.num_classes != loaded.num_outputs:
        raise LdavError(
            f"{where}: {found.num_classes} class vectors, but model {loaded.source!r} has {loaded.num_outputs} classes"
        )
