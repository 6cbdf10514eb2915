"""Attribution methods, one per module, registered by name.

Importing this package registers every method; pick one with :func:`get_method`, ask what it
needs with :func:`method_requirements`, and run it with :func:`attribute_corpus` and a
:class:`MethodContext` holding those resources.
"""

from __future__ import annotations

from xattr.methods.attcat import AttCat
from xattr.methods.base import (
    AttributionMethod,
    MethodParams,
    available_methods,
    describe_parameters,
    get_method,
    method_params,
    method_requirements,
    method_signed,
    register_method,
    signedness_label,
)
from xattr.methods.cam import Cam
from xattr.methods.context import MethodContext, Requirements
from xattr.methods.gae import Gae
from xattr.methods.grad_cam import GradCam
from xattr.methods.grad_input import GradInput
from xattr.methods.integrated_gradients import IntegratedGradients
from xattr.methods.lafa import Lafa
from xattr.methods.ldav import Ldav
from xattr.methods.lime import Lime
from xattr.methods.lrp import Lrp
from xattr.methods.lrp_rollout import LrpRollout
from xattr.methods.mask_lrp import MaskLrp
from xattr.methods.occlusion import Occlusion
from xattr.methods.partial_lrp import PartialLrp
from xattr.methods.random_scores import RandomScores
from xattr.methods.raw_attention import RawAttention
from xattr.methods.rollout import Rollout
from xattr.methods.runner import attribute_corpus
from xattr.methods.shap_deep import ShapDeep
from xattr.methods.shap_grad import ShapGrad
from xattr.methods.simple_grad import SimpleGrad
from xattr.methods.smooth_grad import SmoothGrad
from xattr.types import TokenAttribution

__all__ = [
    "AttCat",
    "Cam",
    "Gae",
    "GradCam",
    "RawAttention",
    "Rollout",
    "AttributionMethod",
    "GradInput",
    "IntegratedGradients",
    "Lafa",
    "Lime",
    "Ldav",
    "MethodContext",
    "MethodParams",
    "Requirements",
    "Occlusion",
    "Lrp",
    "LrpRollout",
    "MaskLrp",
    "PartialLrp",
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
    "method_params",
    "method_requirements",
    "method_signed",
    "signedness_label",
    "register_method",
]
