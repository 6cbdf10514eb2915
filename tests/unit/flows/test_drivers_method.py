"""Which method the class drivers rank by when the config names none."""

from __future__ import annotations

from flows.explain_corpus import drivers_method
from flows.settings import MethodConfig


def _verdict(method: str, difference: float, better: bool, primary: bool = True) -> dict[str, object]:
    return {
        "method": method,
        "reference": "random",
        "metric": "aopc",
        "better": "higher",
        "difference": difference,
        "p_value": 0.01 if better else 0.5,
        "better_than_reference": better,
        "alpha": 0.05,
        "primary": primary,
    }


METHODS = [
    MethodConfig(name="grad_input", label="grad_input_signed", params={"reduction": "sum"}),
    MethodConfig(name="simple_grad"),
    MethodConfig(name="integrated_gradients"),
    MethodConfig(name="random"),
]


def test_the_most_faithful_method_better_than_random_ranks_the_drivers() -> None:
    # The AG News case: signed Grad*Input below random, SimpleGrad the largest gain.
    verdicts = [
        _verdict("grad_input_signed", -0.07, False),
        _verdict("simple_grad", 0.16, True),
        _verdict("integrated_gradients", 0.09, True),
        _verdict("simple_grad", 0.90, True, primary=False),  # another metric's row does not count
    ]
    assert drivers_method(METHODS, verdicts) == "simple_grad"


def test_without_a_method_better_than_random_the_first_signed_one_ranks() -> None:
    verdicts = [_verdict("grad_input_signed", -0.07, False), _verdict("simple_grad", 0.01, False)]
    assert drivers_method(METHODS, verdicts) == "grad_input_signed"
    assert drivers_method(METHODS, []) == "grad_input_signed"
    assert drivers_method([MethodConfig(name="simple_grad"), MethodConfig(name="random")], []) == "simple_grad"
