"""xattr: token-level explanations of fine-tuned transformer text models over whole corpora.

The pure library: models, attribution methods and metrics. It never imports prefect, mlflow,
storage, tasks or flows (a test checks this).

The Python API is :class:`Explainer` (``xattr.Explainer(path).explain(texts, methods=[...])``) and
:func:`bundled_minilm` (the pretrained MiniLM shipped with xattr); both are imported on first use,
so ``import xattr`` stays light.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
#: The distribution this package ships in; the PyPI name ``xattr`` is an unrelated project.
__distribution__ = "xattr-explain"

__all__ = ["Explainer", "Explanation", "bundled_minilm"]


def __getattr__(name: str) -> Any:
    """``Explainer``, ``Explanation`` and ``bundled_minilm``, imported on first use (they pull in torch)."""
    if name in ("Explainer", "Explanation"):
        from xattr import explainer

        return getattr(explainer, name)
    if name == "bundled_minilm":
        from xattr.models.loading import bundled_minilm

        return bundled_minilm
    raise AttributeError(f"module 'xattr' has no attribute {name!r}")
