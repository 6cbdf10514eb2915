"""Which methods give signed scores: declared once at registration, resolved for given parameters."""

from __future__ import annotations

import pytest

from xattr.methods import available_methods, method_signed, register_method, signedness_label
from xattr.methods.base import AttributionMethod, MethodParams


@pytest.mark.parametrize(
    ("name", "params", "signed"),
    [
        ("simple_grad", {}, False),
        ("simple_grad", {"reduction": "sum"}, True),
        ("grad_input", {"reduction": "sum"}, True),
        ("integrated_gradients", {}, False),
        ("shap_deep", {"reduction": "sum"}, True),
        ("lafa", {}, False),
        ("lafa", {"base": "grad_input", "base_params": {"reduction": "sum"}}, True),
        ("random", {}, False),
        ("occlusion", {}, True),
        ("lime", {}, True),
        ("lrp", {}, True),
        ("cam", {}, True),
        ("rollout", {}, False),
        ("grad_cam", {}, False),
        ("mask_lrp", {}, False),
    ],
)
def test_signedness_follows_the_parameters(name: str, params: dict, signed: bool) -> None:
    assert method_signed(name, params) is signed


def test_every_method_has_a_listing_label() -> None:
    labels = {name: signedness_label(cls) for name, cls in available_methods().items()}
    assert labels["simple_grad"] == "with reduction: sum"
    assert labels["lafa"] == "as its base method"
    assert labels["occlusion"] == "yes"
    assert labels["raw_attention"] == "no (magnitude only)"


def test_registration_refuses_an_unknown_signedness() -> None:
    with pytest.raises(ValueError, match="signed must be True, False, 'reduction' or 'base'"):

        @register_method("never_registered", summary="-", paper="-", signed="maybe", cost="1 fwd")  # type: ignore[arg-type]
        class Never(AttributionMethod[MethodParams]):
            def attribute_batch(self, loaded, batch, targets, context):  # pragma: no cover
                raise AssertionError
