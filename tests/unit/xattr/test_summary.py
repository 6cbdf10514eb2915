"""Run summaries from metric dicts: exact markdown lines, tables, paired tests and merged notes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from xattr.metrics.uncertainty import paired_difference
from xattr.reporting.summary import (
    MethodSummary,
    benchmark_markdown,
    explain_markdown,
    merged_notes,
    metric_cell,
    metrics_table,
    paired_vs_reference,
    per_text_values,
    verdicts_vs_reference,
)

METHODS = {
    "simple_grad": MethodSummary(
        {
            "texts": 3.0,
            "aopc": 0.25,
            "aopc_ci_low": 0.125,
            "aopc_ci_high": 0.375,
            "comprehensiveness_curve@50": 0.5,
            "mape": 0.5,
            "vs_random/aopc_difference": 0.125,
            "vs_random/aopc_p": 0.03125,
        },
        1.0,
        2.5,
    ),
    "lafa": MethodSummary(
        {"texts": 3.0, "aopc": 0.5, "vs_random/aopc_difference": -0.25, "vs_random/aopc_p": 0.5}, 3.0, 4.0
    ),
    "random": MethodSummary(
        {
            "texts": 3.0,
            "aopc": 0.125,
            "aopc_ci_low": 0.0,
            "aopc_ci_high": 0.25,
            "mape": 0.75,
            "mape_ci_low": 0.5,
            "mape_ci_high": 1.0,
        }
    ),
}


def test_metric_cell() -> None:
    metrics = {"aopc": 0.25, "aopc_ci_low": 0.125, "aopc_ci_high": 0.375, "mape": 0.5, "mape_ci_low": 0.25}
    assert metric_cell(metrics, "aopc") == "0.250 [0.125, 0.375]"
    assert metric_cell(metrics, "mape") == "0.500"  # one bound only: no interval
    assert metric_cell(metrics, "log_odds") == "-"


def test_benchmark_markdown_of_three_methods() -> None:
    markdown = benchmark_markdown(
        name="tiny",
        run_id="run-1",
        dataset="sst2",
        task="classification",
        model="/m",
        fine_tune={"reused": False, "metrics": {"r2": 0.5}},
        replacement="mask",
        fractions=(0.1, 0.5),
        families=("aopc", "mape"),
        methods=METHODS,
        notes=["MAPE texts: 3"],
    )
    assert markdown.split("\n") == [
        "# xattr benchmark `tiny` (run `run-1`)",
        "",
        'Dataset `sst2` (classification); model `/m` (fine-tune metrics: {"r2": 0.5})',
        "",
        "Replacement `mask`; removal fractions 0.1, 0.5; metrics: aopc, mape. "
        "Values: mean over evaluated texts [95% percentile-bootstrap CI over texts].",
        "",
        "| method | texts | AOPC (higher better) | MAPE (higher better) | attribute s | evaluate s |",
        "|---|---|---|---|---|---|",
        "| simple_grad | 3 | 0.250 [0.125, 0.375] | 0.500 | 1.0 | 2.5 |",
        "| lafa | 3 | 0.500 | - | 3.0 | 4.0 |",
        "| random | 3 | 0.125 [0.000, 0.250] | 0.750 [0.500, 1.000] | 0.0 | 0.0 |",
        "",
        "Paired sign-flip test against `random` on the same texts (difference, p):",
        "",
        "- simple_grad: AOPC +0.125 (p=0.0312)",
        "- lafa: AOPC -0.250 (p=0.5)",
        "",
        "Notes:",
        "",
        "- MAPE texts: 3",
        "",
    ]


def test_benchmark_markdown_without_reference_or_fine_tune_metrics() -> None:
    markdown = benchmark_markdown(
        name="tiny",
        run_id="r",
        dataset="d",
        task="regression",
        model="/m",
        fine_tune={"reused": True},
        replacement="pad",
        fractions=(0.5,),
        families=("aopc",),
        methods={"lafa": METHODS["lafa"]},
        notes=[],
    )
    lines = markdown.split("\n")
    assert lines[2] == "Dataset `d` (regression); model `/m`"
    assert lines[-3:] == ["|---|---|---|---|---|", "| lafa | 3 | 0.500 | 3.0 | 4.0 |", ""]
    assert "Paired" not in markdown and "Notes" not in markdown


def test_explain_markdown() -> None:
    markdown = explain_markdown(
        run_id="run-1",
        model="/models/m",
        corpus="reviews.csv",
        texts=16,
        replacement="mask",
        max_texts=None,
        methods={
            "grad_input": MethodSummary({"aopc": 0.5, "aopc_ci_low": 0.25, "aopc_ci_high": 0.75, "log_odds": -1.0}, 2.0)
        },
        top_words={
            "grad_input": {
                "top": [{"word": "good", "mean_share": 0.5, "texts": 2}, {"word": "bad", "mean_share": 0.25}],
                "positive": [{"word": "good"}],
                "negative": [{"word": "bad"}, {"word": "dull"}],
            }
        },
        stages=[("load_corpus", 1.5, False), ("attribute-grad_input", 0.0, True)],
    )
    assert (
        markdown
        == "\n".join(
            [
                "# xattr run `run-1`",
                "",
                "Model: `/models/m`; corpus: `reviews.csv` (16 texts).",
                "",
                "## Faithfulness (replacement: `mask`; CIs: bootstrap over texts; texts: all)",
                "",
                "| method | AOPC [95% CI] | AOPC sufficiency [95% CI] | log-odds [95% CI] | vs random | attribute s |",
                "|---|---|---|---|---|---|",
                "| grad_input | 0.5000 [0.2500, 0.7500] | nan [nan, nan] | -1.0000 [nan, nan] | - | 2.0 |",
                "",
                "## Top words: grad_input",
                "",
                "good (0.500), bad (0.250)",
                "\npositive: good",
                "\nnegative: bad, dull",
                "",
                "## Stages",
                "",
                "| stage | seconds | cached |",
                "|---|---|---|",
                "| load_corpus | 1.5 | no |",
                "| attribute-grad_input | 0.0 | yes |",
            ]
        )
        + "\n"
    )


def test_metrics_table_keeps_or_drops_curve_points() -> None:
    metrics = {key: method.metrics for key, method in METHODS.items()}
    full = metrics_table(metrics)
    assert full["method"].tolist() == ["simple_grad", "lafa", "random"]
    assert list(full.columns[:4]) == ["method", "texts", "aopc", "aopc_ci_low"]
    assert full.loc[0, "comprehensiveness_curve@50"] == 0.5
    assert np.isnan(full.loc[1, "mape"])
    assert "comprehensiveness_curve@50" not in metrics_table(metrics, curves=False).columns


def _evaluation(rows: list[tuple[str | None, str, float | None, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["doc_id", "metric", "fraction", "value"])


def test_per_text_values_skip_curves_and_means_and_number_targets() -> None:
    table = _evaluation(
        [
            ("a", "aopc", None, 0.5),
            ("a", "aopc", None, 0.25),
            ("b", "aopc", None, 1.0),
            ("a", "comprehensiveness", 0.5, 9.0),
            (None, "aopc", None, 0.6),
            ("a", "mape", None, 7.0),
        ]
    )
    values = per_text_values(table, "aopc")
    assert values.to_dict() == {("a", 0): 0.5, ("a", 1): 0.25, ("b", 0): 1.0}


def test_paired_tests_against_the_reference_on_shared_texts() -> None:
    method = _evaluation([("a", "aopc", None, 0.5), ("b", "aopc", None, 0.75), ("c", "aopc", None, 0.25)])
    reference = _evaluation([("b", "aopc", None, 0.25), ("a", "aopc", None, 0.5), ("d", "aopc", None, 9.0)])
    same = _evaluation([("a", "aopc", None, 0.5), ("b", "aopc", None, 0.25)])
    alone = _evaluation([("a", "aopc", None, 0.5)])
    tests = paired_vs_reference(
        {"m": {"aopc": 0.5, "mape": 1.0}, "same": {"aopc": 0.375}, "alone": {"aopc": 0.5}, "random": {"aopc": 0.4}},
        {"m": method, "same": same, "alone": alone, "random": reference},
    )
    # Shared texts a and b: differences 0 and 0.5 (mape is not the reference's, so it is not tested).
    expected = paired_difference(np.array([0.5, 0.75]), np.array([0.5, 0.25]))
    assert tests["m"] == {"vs_random/aopc_difference": 0.25, "vs_random/aopc_p": expected.p_value}
    # Equal values on every text: no difference, and every sign flip is as extreme (p = 1).
    assert tests["same"] == {"vs_random/aopc_difference": 0.0, "vs_random/aopc_p": 1.0}
    assert tests["alone"] == {}  # one shared text is too few
    assert "random" not in tests
    assert paired_vs_reference({"m": {"aopc": 0.5}}, {"m": method}) == {}


def test_paired_p_value_of_two_texts_by_hand() -> None:
    # Differences (1, 1): a sign flip reaches |mean| = 1 only as (+,+) or (-,-), half of the flips.
    method = _evaluation([("a", "aopc", None, 2.0), ("b", "aopc", None, 3.0)])
    reference = _evaluation([("a", "aopc", None, 1.0), ("b", "aopc", None, 2.0)])
    p = paired_vs_reference({"m": {"aopc": 1.0}, "random": {"aopc": 1.0}}, {"m": method, "random": reference})["m"][
        "vs_random/aopc_p"
    ]
    assert p == pytest.approx(0.5, abs=0.04)


def test_verdicts_flag_a_method_that_is_not_better_than_random() -> None:
    # 12 texts; "good" beats random by 0.25 on every text, "noisy" differs by +-0.1 in turn (mean 0),
    # "worse" is 0.25 below; log_odds is lower-better, so "good" is better there with a lower value.
    ids = [f"t{i}" for i in range(12)]
    base = {d: 0.5 for d in ids}
    rows = {
        "random": {d: (v, 0.0) for d, v in base.items()},
        "good": {d: (v + 0.25, -0.5) for d, v in base.items()},
        "noisy": {d: (v + (0.1 if i % 2 else -0.1), 0.0) for i, (d, v) in enumerate(base.items())},
        "worse": {d: (v - 0.25, 0.5) for d, v in base.items()},
    }
    evaluations = {
        key: _evaluation([(d, m, None, v[j]) for d, v in per.items() for j, m in enumerate(("aopc", "log_odds"))])
        for key, per in rows.items()
    }
    tests = paired_vs_reference({key: {"aopc": 0.5, "log_odds": 0.0} for key in rows}, evaluations)
    verdicts = verdicts_vs_reference(tests)
    by = {(r["method"], r["metric"]): r for r in verdicts}
    assert [(r["method"], r["metric"]) for r in verdicts] == [
        (m, k) for m in ("good", "noisy", "worse") for k in ("aopc", "log_odds")
    ]
    # Constant differences: only the all-plus and all-minus flips are as extreme, p = (1 + ~2000/2048) / 2001.
    assert by[("good", "aopc")]["p_value"] < 0.01 and by[("good", "aopc")]["better_than_reference"]
    good_log_odds = by[("good", "log_odds")]
    assert good_log_odds["difference"] == pytest.approx(-0.5) and good_log_odds["better_than_reference"]
    assert by[("noisy", "aopc")]["difference"] == pytest.approx(0.0, abs=1e-15)
    assert not by[("noisy", "aopc")]["better_than_reference"]  # p = 1
    assert by[("worse", "aopc")]["p_value"] < 0.01 and not by[("worse", "aopc")]["better_than_reference"]
    primary = {(r["method"], r["metric"]) for r in verdicts if r["primary"]}
    assert primary == {(m, "aopc") for m in ("good", "noisy", "worse")}
    assert all(r["reference"] == "random" and r["alpha"] == 0.05 for r in verdicts)
    markdown = explain_markdown(
        run_id="r",
        model="m",
        corpus="c",
        texts=12,
        replacement="mask",
        max_texts=None,
        methods={key: MethodSummary({"aopc": 0.5}, 1.0) for key in rows},
        top_words={},
        stages=[],
        verdicts=verdicts,
    )
    assert "| random | " in markdown and "| baseline |" in markdown
    assert "| good | " in markdown and "better (AOPC +0.250, p=" in markdown
    assert markdown.count("**not better than random**") == 2  # noisy and worse


def test_merged_notes() -> None:
    notes = [("a", ("MAPE texts: 12", "cut")), ("b", ("MAPE texts: 12",))]
    assert merged_notes(notes) == ["every method: MAPE texts: 12", "a: cut"]
    assert merged_notes(notes, ["MAPE texts: 12 (pool of 40)"]) == ["a: cut"]
    assert merged_notes([("a", ("x", "y"))]) == ["a: x", "a: y"]  # one method: nothing is "every method"
    assert merged_notes([]) == []


def test_benchmark_markdown_states_the_majority_class_verdict_of_a_fine_tuned_classifier() -> None:
    def markdown(accuracy: float) -> list[str]:
        fine_tune = {
            "validation_rows": 40,
            "metrics": {"accuracy": accuracy, "majority_accuracy": 0.55, "majority_class": 1.0, "macro_f1": 0.4},
        }
        return benchmark_markdown(
            name="tiny", run_id="r", dataset="sst2", task="classification", model="/m", fine_tune=fine_tune,
            replacement="mask", fractions=(0.1,), families=("aopc",), methods=METHODS, notes=[],
        ).split("\n")  # fmt: skip

    assert markdown(0.5)[4] == (
        "**Do not trust these explanations:** The model is not better than the majority class (accuracy 0.500 vs "
        "0.550 for always predicting the majority class '1', on the 40 validation rows held out of the fine-tune)."
    )
    assert markdown(0.8)[4].startswith("**Verdict:** The model is better than the majority class (accuracy 0.800")
    assert markdown(0.8)[5] == "" and markdown(0.8)[6].startswith("Replacement `mask`")
