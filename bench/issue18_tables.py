"""Issue 18's tables: per method variant, mean [95% CI] per metric and a paired test against a named base.

Reads the ``evaluation`` artifacts of finished benchmark runs (``<workdir>/artifacts/<run id>/``),
so variants from different runs (e.g. LDAV on models fine-tuned with other settings) can be
paired with their base on the same texts (rows are matched by ``doc_id``). Each row:
``variant | base | metric mean [CI] ... | difference vs base [CI], p | attribute seconds``.
Seconds come from the run's ``benchmark/benchmark.csv`` and were measured under contention.

Run:
    python bench/issue18_tables.py RUN_DIR [RUN_DIR ...] --metrics gold_pearson aopc \\
        --row mask_lrp=lrp_rollout --row sst2-dev:ldav=sst2-dev:integrated_gradients
A row is ``variant=base``; a name is ``label`` (unique over the runs) or ``<run dir name>:label``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from xattr.metrics.uncertainty import bootstrap_mean, paired_difference  # noqa: E402
from xattr.reporting.summary import per_text_values  # noqa: E402


def load_runs(
    run_dirs: list[Path], diagnostics: dict[str, dict[str, float]] | None = None
) -> tuple[dict[str, pd.DataFrame], dict[str, float]]:
    """Per ``<run>:<label>``, its evaluation rows and attribute seconds, from the run's ``benchmark.csv``;
    with ``diagnostics`` given, each method's attribute-stage diagnostics (``attribute/<name>``) go into it."""
    evaluations: dict[str, pd.DataFrame] = {}
    seconds: dict[str, float] = {}
    for run in run_dirs:
        csv = run / "benchmark" / "benchmark.csv"
        if not csv.is_file():
            # A run still going (or stopped): the evaluate stages it has finished, without seconds.
            for path in sorted(run.glob("evaluate-*/evaluation.parquet")):
                key = f"{run.name}:{path.parent.name.removeprefix('evaluate-')}"
                evaluations[key] = pq.read_table(path).to_pandas()
            continue
        table = pd.read_csv(csv)
        for label, path, value in zip(
            table["method"], table["evaluation_path"], table["attribute_seconds"], strict=True
        ):
            evaluations[f"{run.name}:{label}"] = pq.read_table(path).to_pandas()
            seconds[f"{run.name}:{label}"] = float(value)
        if diagnostics is not None:
            columns = [c for c in table.columns if c.startswith("attribute/")]
            for _, found in table.iterrows():
                values = {c.removeprefix("attribute/"): float(found[c]) for c in columns if pd.notna(found[c])}
                if values:
                    diagnostics[f"{run.name}:{found['method']}"] = values
    return evaluations, seconds


def resolve(name: str, known: dict[str, pd.DataFrame], run_names: dict[str, str]) -> str:
    """The ``<run>:<label>`` key of ``name`` (a run given by its directory name or its alias)."""
    if ":" in name:
        run, label = name.split(":", 1)
        key = f"{run_names.get(run, run)}:{label}"
        if key not in known:
            raise SystemExit(f"unknown method {name!r}")
        return key
    matches = [k for k in known if k.split(":", 1)[1] == name]
    if len(matches) != 1:
        raise SystemExit(f"method {name!r} matches {matches or 'nothing'}; qualify it as <run>:<label>")
    return matches[0]


def row(variant: str, base: str | None, evaluations, seconds, metrics: list[str]) -> list[str]:
    cells = [variant.split(":", 1)[1], base.split(":", 1)[1] if base else ""]
    for metric in metrics:
        values = per_text_values(evaluations[variant], metric).dropna()
        if values.empty:
            cells.append("")
            continue
        est = bootstrap_mean(values.to_numpy())
        cells.append(f"{est.mean:.3f} [{est.low:.3f}, {est.high:.3f}]")
    for metric in metrics:
        if base is None:
            cells.append("")
            continue
        a = per_text_values(evaluations[variant], metric).dropna()
        b = per_text_values(evaluations[base], metric).dropna()
        shared = a.index.intersection(b.index)
        if len(shared) < 2:
            cells.append("")
            continue
        test = paired_difference(a[shared].to_numpy(), b[shared].to_numpy())
        cells.append(f"{test.mean_difference:+.3f} [{test.low:+.3f}, {test.high:+.3f}], p={test.p_value:.4f}")
    cells.append(f"{seconds[variant]:.0f}" if variant in seconds and np.isfinite(seconds[variant]) else "")
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories <workdir>/artifacts/<run id> (alias=DIR)")
    parser.add_argument("--metrics", nargs="+", default=["gold_pearson", "aopc"])
    parser.add_argument("--row", action="append", default=[], help="variant=base, or variant alone")
    parser.add_argument(
        "--diagnostics",
        action="store_true",
        help="also print each row's attribute-stage diagnostics (kept heads, relevance shares, LAFA kernel spread)",
    )
    args = parser.parse_args()
    run_dirs, run_names = [], {}
    for given in args.runs:
        alias, _, path = str(given).rpartition("=")
        directory = Path(path)
        run_dirs.append(directory)
        if alias:
            run_names[alias] = directory.name
    diagnostics: dict[str, dict[str, float]] = {}
    evaluations, seconds = load_runs(run_dirs, diagnostics)
    header = ["variant", "base", *args.metrics, *(f"{m} vs base" for m in args.metrics), "attribute s"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for spec in args.row:
        variant, _, base = spec.partition("=")
        v = resolve(variant, evaluations, run_names)
        b = resolve(base, evaluations, run_names) if base else None
        print("| " + " | ".join(row(v, b, evaluations, seconds, args.metrics)) + " |")
    if args.diagnostics:
        print("\n| variant | attribute-stage diagnostics |\n|---|---|")
        for spec in dict.fromkeys(spec.partition("=")[0] for spec in args.row):
            key = resolve(spec, evaluations, run_names)
            if key in diagnostics:
                shown = ", ".join(f"{k} {v:.4g}" for k, v in diagnostics[key].items())
                print(f"| {key.split(':', 1)[1]} | {shown} |")


if __name__ == "__main__":
    main()
