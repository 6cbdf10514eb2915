"""The ``xattr`` command line: run a config, list methods, run the embedded demo."""

from __future__ import annotations

import os

# Before Prefect is imported: its temporary server otherwise sends analytics and logs a
# harmless "database is locked" traceback (STACK.md).
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

app = typer.Typer(
    name="xattr",
    help="Explain fine-tuned transformer text models token by token, over whole corpora.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()


def _metrics_table(summary: dict[str, Any]) -> Table:
    table = Table(title="Faithfulness (higher AOPC, lower log-odds = more faithful; 95% bootstrap CI over texts)")
    for column in ("method", "AOPC [CI]", "log-odds [CI]", "texts"):
        table.add_column(column)
    for method, metrics in summary["metrics"].items():
        cells = [
            f"{metrics.get(k, float('nan')):.4f} [{metrics.get(k + '_ci_low', float('nan')):.3f}, "
            f"{metrics.get(k + '_ci_high', float('nan')):.3f}]"
            for k in ("aopc", "log_odds")
        ]
        table.add_row(method, cells[0], cells[1], f"{int(metrics.get('texts', 0))}")
    return table


def _where(summary: dict[str, Any]) -> None:
    uri = summary["tracking_uri"]
    console.print(f"[bold]Artifacts:[/] {summary['artifacts_dir']}")
    console.print(f"[bold]Summary:[/]   {summary['summary_path']}")
    console.print(f"[bold]MLflow:[/]    run {summary['mlflow_run_id']} in {uri}")
    console.print(f"           open the UI with: mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000")
    console.print(f"[bold]Stages served from cache:[/] {summary['cache_hits']} of {len(summary['stages'])}")


@app.command()
def run(
    config: Annotated[Path, typer.Argument(help="YAML config of explain_corpus (see README)")],
    workdir: Annotated[Path | None, typer.Option(help="override the config's workdir")] = None,
) -> None:
    """Run the explain_corpus flow in-process on CONFIG."""
    from flows.explain_corpus import explain_corpus_with_runner
    from flows.runners import RunnerError
    from flows.settings import SettingsError, load_settings

    try:
        settings = load_settings(config, {"workdir": str(workdir.resolve())} if workdir else None)
    except SettingsError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    from storage import StorageError
    from xattr.data.corpus import CorpusError
    from xattr.models.loading import ModelLoadError

    try:
        summary = explain_corpus_with_runner(settings)
    except (CorpusError, ModelLoadError, StorageError, ValueError, RunnerError) as exc:
        # The flow run is already marked failed in Prefect and MLflow; say why in one line.
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc
    console.print(_metrics_table(summary))
    _where(summary)


@app.command()
def methods() -> None:
    """List every registered attribution method with its parameters and paper reference."""
    from xattr.methods import available_methods, describe_parameters

    table = Table(title="Attribution methods", show_lines=True)
    for column in ("name", "what it computes", "parameters (default)", "reference"):
        table.add_column(column)
    for name, cls in available_methods().items():
        params = "\n".join(f"{p}: {t} = {d!r}  {desc}" for p, t, d, desc in describe_parameters(cls))
        table.add_row(name, cls.summary, params or "-", cls.paper)
    console.print(table)


@app.command()
def demo(
    workdir: Annotated[Path, typer.Option(help="where data, models, artifacts and mlflow.db go")] = Path("xattr-demo"),
    rows: Annotated[int, typer.Option(min=50, help="listings in the synthetic catalogue")] = 3000,
    epochs: Annotated[int, typer.Option(min=1, help="fine-tuning epochs")] = 2,
    eval_texts: Annotated[int, typer.Option(min=1, help="texts scored for faithfulness")] = 150,
) -> None:
    """Explain a MiniLM price regressor on a synthetic laptop catalogue with known price drivers."""
    from flows.demo import DemoPlan, run_demo

    started = time.perf_counter()
    plan = DemoPlan(rows=rows, epochs=epochs, eval_texts=eval_texts)
    console.print(
        f"[bold]xattr demo[/]: {rows} synthetic listings, MiniLM price regressor, workdir {workdir.resolve()}"
    )
    with Progress(
        TextColumn("fine-tuning"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} steps loss {task.fields[loss]:.3f}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    ) as bar:
        task_id = bar.add_task("fine-tune", total=None, loss=float("nan"))

        def on_step(step: int, total: int, loss: float) -> None:
            bar.update(task_id, completed=step, total=total, loss=loss)

        summary = run_demo(workdir, plan, progress=on_step)
    ft = summary["fine_tune"]
    how = "reused" if ft["reused"] else "fine-tuned in {:.0f} s".format(ft["seconds"])
    console.print(
        f"[bold]Model:[/] {summary['model_dir']} ({how}; validation R^2 on log price {ft.get('r2', float('nan')):.3f})"
    )
    console.print(_metrics_table(summary))
    truth = {d["word"].lower(): d for d in summary["true_drivers"]}
    found: set[str] = set()
    for method in ("simple_grad", "grad_input"):
        top = summary["top_words"].get(method, {}).get("top", [])
        table = Table(title=f"Top price-driving words by {method} (mean share of each listing's attribution)")
        for column in ("rank", "word", "share", "true effect on log price"):
            table.add_column(column)
        for rank, entry in enumerate(top, start=1):
            driver = truth.get(entry["word"])
            found |= {entry["word"]} if driver else set()
            effect = f"{driver['effect']:+.2f} ({driver['attribute']})" if driver else "no effect"
            table.add_row(str(rank), entry["word"], f"{entry['mean_share']:.3f}", effect)
        console.print(table)
    console.print(
        f"[bold]True drivers among the top words:[/] {len(found)} of {len(truth)}: {', '.join(sorted(found))}"
        " (gradient scores rank importance, not direction; i3/8GB/256GB are the reference levels of"
        " priced attributes)"
    )
    _where(summary)
    console.print(f"[bold]Demo wall time:[/] {time.perf_counter() - started:.0f} s")


def main() -> None:
    """Entry point for ``python -m flows.cli``."""
    app()


if __name__ == "__main__":
    main()
