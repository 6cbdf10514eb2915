"""Attribution methods, one per module, registered by name.

Importing this package registers every method; pick one with :func:`get_method`.
"""

from __future__ import annotations

from xattr.methods.base import (
    AttributionMethod,
    MethodParams,
    available_methods,
    describe_parameters,
    get_method,
    register_method,
)
from xattr.methods.grad_input import GradInput
from xattr.methods.integrated_gradients import IntegratedGradients
from xattr.methods.lafa import Lafa
from xattr.methods.ldav import Ldav
from xattr.methods.random_scores import RandomScores
from xattr.methods.runner import TokenAttribution, attribute_corpus
from xattr.methods.shap_deep import ShapDeep
from xattr.methods.shap_grad import ShapGrad
from xattr.methods.simple_grad import SimpleGrad
from xattr.methods.smooth_grad import SmoothGrad

__all__ = [
    "AttributionMethod",
    "GradInput",
    "IntegratedGradients",
    "Lafa",
    "Ldav",
    "MethodParams",
    "RandomScores",
    "ShapDeep",
    "ShapGrad",
    "SimpleGrad",
    "SmoothGrad",
    "TokenAttribution",
    "attribute_corpus",
    "available_methods",
    "describe_parameters",
    "get_method",
    "register_method",
]
