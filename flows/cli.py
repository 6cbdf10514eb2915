"""The ``xattr`` command line: run a config, list methods, run the embedded demo."""

from __future__ import annotations

import json
import os

# Before Prefect is imported: its temporary server otherwise sends analytics and logs a
# harmless "database is locked" traceback (STACK.md).
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    name="xattr",
    help="Explain fine-tuned transformer text models token by token, over whole corpora.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()


def _load_config(loader: Callable[..., Any], config: Path, workdir: Path | None, **extra: Any) -> Any:
    """Settings from ``loader``; a bad config prints one line and exits 2."""
    from flows.settings import SettingsError

    try:
        return loader(config, {"workdir": str(workdir.resolve())} if workdir else None, **extra)
    except SettingsError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc


def _run_flow(flow_function: Callable[[Any], dict[str, Any]], settings: Any, *known: type[Exception]) -> dict[str, Any]:
    """Run a flow; a known failure prints one line and exits 1 (the run is already marked failed)."""
    from storage import StorageError
    from xattr.data.corpus import CorpusError
    from xattr.models.loading import ModelLoadError

    try:
        return flow_function(settings)
    except (CorpusError, ModelLoadError, StorageError, ValueError, *known) as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc


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


def _viewer_lines(summary: dict[str, Any]) -> None:
    """The run's explanation viewer and how to open MLflow on its workdir (the last lines of run and demo)."""
    workdir = Path(summary["artifacts_dir"]).parent.parent
    console.print(f"[bold]Viewer:[/]    {summary['viewer']}")
    console.print(f"[bold]MLflow UI:[/] xattr ui --workdir {workdir}")


@app.command()
def run(
    config: Annotated[Path, typer.Argument(help="YAML config of explain_corpus (see README)")],
    workdir: Annotated[Path | None, typer.Option(help="override the config's workdir")] = None,
) -> None:
    """Run the explain_corpus flow in-process on CONFIG."""
    from flows.explain_corpus import explain_corpus_with_runner
    from flows.runners import RunnerError
    from flows.settings import load_settings

    summary = _run_flow(explain_corpus_with_runner, _load_config(load_settings, config, workdir), RunnerError)
    console.print(_metrics_table(summary))
    _where(summary)
    _viewer_lines(summary)


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
    # The fine-tune stage (the run's first) logs its optimiser steps; a second demo reuses the model.
    summary = run_demo(workdir, plan)
    ft = summary["fine_tune"]
    how = "reused" if ft["reused"] else "fine-tuned in {:.0f} s".format(ft["seconds"])
    r2 = ft["metrics"].get("r2", float("nan"))
    console.print(f"[bold]Model:[/] {summary['model_dir']} ({how}; validation R^2 on log price {r2:.3f})")
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
    _viewer_lines(summary)


@app.command()
def heads(
    config: Annotated[Path, typer.Argument(help="YAML config of explain_corpus (corpus, model, heads)")],
    workdir: Annotated[Path | None, typer.Option(help="override the config's workdir")] = None,
) -> None:
    """Mine dependency-based head statistics (Mask-LRP Eq. 6-8) on CONFIG's corpus and model."""
    from flows.head_statistics import head_statistics_flow
    from flows.settings import load_settings

    settings = _load_config(load_settings, config, workdir)
    result = _run_flow(head_statistics_flow, settings)
    console.print(_kept_heads_table(result["statistics"], settings.heads.xi_synt, settings.heads.xi_pos))
    metrics = result["metrics"]
    console.print(
        f"[bold]Kept heads:[/] {int(metrics['kept_heads'])} ({int(metrics['syntactic_heads'])} syntactic, "
        f"{int(metrics['positional_heads'])} positional) from {int(metrics['texts'])} texts, "
        f"{int(metrics['arcs'])} arcs; parse {metrics['parse_seconds']:.1f} s, model {metrics['model_seconds']:.1f} s"
        + (" (served from cache)" if result["cached"] else "")
    )
    console.print(f"[bold]Statistics:[/] {result['statistics'].path}")
    console.print(f"[bold]Heatmap:[/]    {result['heatmap']}")
    console.print(f"[bold]MLflow:[/]     run {result['mlflow_run_id']} in {result['tracking_uri']}")


def _kept_heads_table(ref: Any, xi_synt: float, xi_pos: float) -> Table:
    """One row per kept head: why it is kept (best relation margin, best offset frequency)."""
    from storage import read_artifact

    frame = read_artifact(ref).to_pandas()
    frame = frame[frame["layer"] >= 0]
    masks = frame[frame["kind"] == "mask"].pivot_table(index=["layer", "head"], columns="key", values="frequency")
    table = Table(title=f"Kept heads (syntactic: alpha - lambda > {xi_synt}; positional: frequency > {xi_pos})")
    for column in ("layer", "head", "kind", "best relation: alpha (lambda)", "best offset: frequency"):
        table.add_column(column)
    for (layer, head), flags in masks.iterrows():
        syntactic, positional = flags["syntactic"] > 0.5, flags["positional"] > 0.5
        if not (syntactic or positional):
            continue
        rows = frame[(frame["layer"] == layer) & (frame["head"] == head)]
        relations = rows[rows["kind"] == "relation"].assign(margin=lambda r: r["frequency"] - r["baseline"])
        best = relations.loc[relations["margin"].fillna(-1.0).idxmax()]
        offsets = rows[rows["kind"] == "position"]
        top = offsets.loc[offsets["frequency"].idxmax()]
        kind = "both" if syntactic and positional else "syntactic" if syntactic else "positional"
        table.add_row(
            str(layer),
            str(head),
            kind,
            f"{best['key']}: {best['frequency']:.2f} ({best['baseline']:.2f})",
            f"{top['key']}: {top['frequency']:.2f}",
        )
    return table


@app.command()
def train(
    config: Annotated[Path, typer.Argument(help="YAML config of the train flow (see README)")],
    workdir: Annotated[Path | None, typer.Option(help="override the config's workdir")] = None,
) -> None:
    """Fine-tune a model on a corpus (optionally with LDAV class vectors) with the train flow."""
    from flows.train import train as train_flow
    from flows.train_settings import load_train_settings

    summary = _run_flow(
        train_flow, _load_config(load_train_settings, config, workdir), FileExistsError, FileNotFoundError
    )
    table = Table(title=f"Validation metrics of the best epoch ({summary['best_epoch']} of {summary['epochs_run']})")
    table.add_column("metric")
    table.add_column("value")
    for key, value in summary["metrics"].items():
        table.add_row(key, f"{value:.4f}")
    console.print(table)
    console.print(f"[bold]Model:[/]  {summary['output_dir']}")
    console.print(f"[bold]MLflow:[/] run {summary['mlflow_run_id']} in {summary['tracking_uri']}")


@app.command()
def concepts(
    model_dir: Annotated[Path, typer.Argument(help="model directory trained with LDAV")],
    phrases: Annotated[list[str], typer.Argument(help="phrases to score against every class vector")],
    word_list: Annotated[
        list[str] | None, typer.Option(help="NAME=FILE: a word list (one word per line) pooled into one concept")
    ] = None,
) -> None:
    """Score phrases or word lists against every LDAV class vector (LDAV paper Table 9, Sec. 4.7-4.9)."""
    from xattr.ldav import ConceptError, LdavError, class_vector_correlation, concept_scores, load_ldav_vectors
    from xattr.models.loading import ModelLoadError, load_model

    wanted: dict[str, str | list[str]] = {p: p for p in phrases}
    for item in word_list or []:
        name, _, file = item.partition("=")
        if not file or not Path(file).is_file():
            console.print(f"[red]error:[/] --word-list {item!r}: expected NAME=FILE with an existing file")
            raise typer.Exit(2)
        wanted[name] = [w.strip() for w in Path(file).read_text().splitlines() if w.strip()]
    try:
        loaded = load_model(model_dir, device="cpu")
        scores = concept_scores(loaded, wanted)
        correlation = class_vector_correlation(load_ldav_vectors(model_dir))
    except (ConceptError, LdavError, ModelLoadError) as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc
    labels = [c for c in scores.columns if c not in ("concept", "pieces", "unknown_pieces") and ":" not in c]
    table = Table(title="LDAV scores (higher = closer to the class vector; z-normalised over classes)")
    for column in ("concept", *labels, "pieces (unknown)"):
        table.add_column(column)
    for row in scores.to_dict("records"):
        cells = [f"{row[label]:+.2f}" for label in labels]
        table.add_row(row["concept"], *cells, f"{row['pieces']} ({row['unknown_pieces']})")
    console.print(table)
    corr = Table(title="Correlation between class vectors (Sec. 4.9)")
    corr.add_column("")
    for label in correlation.columns:
        corr.add_column(str(label))
    for label, row in correlation.iterrows():
        corr.add_row(str(label), *[f"{v:+.2f}" for v in row])
    console.print(corr)


@app.command()
def deploy(
    prefect_file: Annotated[Path, typer.Option(help="the deployments file")] = Path("prefect.yaml"),
    name: Annotated[list[str] | None, typer.Option(help="deploy only this deployment (repeatable; globs work)")] = None,
    api_url: Annotated[str | None, typer.Option(help="Prefect API URL; default PREFECT_API_URL or local")] = None,
) -> None:
    """Check prefect.yaml, create its work pool if missing and deploy to a running Prefect server."""
    from flows.deploy import DeployError
    from flows.deploy import deploy as deploy_all

    try:
        plans, created = deploy_all(prefect_file, name or None, api_url)
    except DeployError as exc:
        console.print(f"[red]error:[/] {exc}", soft_wrap=True)
        raise typer.Exit(1) from exc
    for pool in created:
        console.print(f"created work pool {pool!r} (type process)")
    for plan in plans:
        crons = ", ".join(f"{c} ({tz})" for c, tz in plan.crons) or "no schedule"
        console.print(f"deployed [bold]{plan.name}[/] ({plan.entrypoint}, config {plan.config}): {crons}")
    pools = " ".join(sorted({p.work_pool for p in plans}))
    console.print(f"start a worker to run them: prefect worker start --pool {pools}")


@app.command()
def ui(
    config: Annotated[Path | None, typer.Argument(help="YAML config whose MLflow store to show")] = None,
    workdir: Annotated[Path | None, typer.Option(help="a run workdir holding mlflow.db")] = None,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI (sqlite:///...)")] = None,
    port: Annotated[int, typer.Option(min=1, max=65535, help="port of the MLflow UI")] = 5000,
) -> None:
    """Serve the MLflow UI of the configured store on 127.0.0.1 until Ctrl-C."""
    from flows.tracking_ui import UIError, runs_table_urls, start_mlflow_server, stop_server

    if tracking_uri:
        uri = tracking_uri
    elif config is not None:
        from flows.settings import SettingsError, load_settings

        try:
            settings = load_settings(config, {"workdir": str(workdir.resolve())} if workdir else None)
        except SettingsError as exc:
            console.print(f"[red]error:[/] {exc}", soft_wrap=True)
            raise typer.Exit(2) from exc
        uri = settings.tracking_uri()
    elif workdir is not None:
        uri = f"sqlite:///{workdir.resolve() / 'mlflow.db'}"
    else:
        console.print("[red]error:[/] give a CONFIG, --workdir or --tracking-uri", soft_wrap=True)
        raise typer.Exit(2)
    import signal

    def _stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # SIGTERM stops the server like Ctrl-C does

    # Explicit handlers: a process started in the background inherits SIGINT as ignored.
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        server = start_mlflow_server(uri, host="127.0.0.1", port=port)
    except UIError as exc:
        console.print(f"[red]error:[/] {exc}", soft_wrap=True)
        raise typer.Exit(1) from exc
    try:
        links = runs_table_urls(uri, f"http://127.0.0.1:{port}")
        console.print(f"[bold]MLflow UI:[/] http://127.0.0.1:{port}  (store {uri}; server pid {server.pid})")
        for name, link in links.items():
            console.print(f"  experiment {name}: {link}")
        console.print(
            "[bold]Prefect UI:[/] `prefect server start --host 127.0.0.1`, then open http://127.0.0.1:4200"
            " (runs appear there when PREFECT_API_URL=http://127.0.0.1:4200/api is set)"
        )
        console.print("Ctrl-C stops the MLflow server.")
        server.wait()
        console.print(f"[red]error:[/] the MLflow server stopped (exit code {server.returncode})")
        raise typer.Exit(1)
    except KeyboardInterrupt:
        console.print("stopping the MLflow server")
    finally:
        stop_server(server)


report_app = typer.Typer(help="Reports built from whole-corpus explanations.", no_args_is_help=True)
app.add_typer(report_app, name="report")


@report_app.command("price-drivers")
def report_price_drivers(
    config: Annotated[Path, typer.Argument(help="YAML config of the price_drivers flow (see README)")],
    workdir: Annotated[Path | None, typer.Option(help="override the config's workdir")] = None,
) -> None:
    """What drives predicted price across a catalogue: drivers table, HTML report, MLflow run."""
    from flows.price_drivers import price_drivers
    from flows.price_settings import load_price_settings
    from xattr.data.products import ProductsError

    summary = _run_flow(price_drivers, _load_config(load_price_settings, config, workdir), ProductsError)
    m = summary["metrics"]
    table = Table(title="Model quality on held-out listings")
    for column in ("model", "R^2 (log price)", "MAPE"):
        table.add_column(column)
    table.add_row("explained model", f"{m['r2']:.3f}", f"{m['mape']:.1%}")
    table.add_row("TF-IDF + ridge", f"{m['baseline_r2']:.3f}", f"{m['baseline_mape']:.1%}")
    console.print(table)
    console.print(f"[bold]Prices:[/]  {summary['price_rule']}")
    console.print(f"[bold]Report:[/]  {summary['report']}")
    console.print(f"[bold]Drivers:[/] {summary['drivers']}")
    console.print(f"[bold]MLflow:[/]  run {summary['mlflow_run_id']} in {summary['tracking_uri']}")


@report_app.command("explanations")
def report_explanations(
    run_dir: Annotated[Path, typer.Argument(help="an explain run's directory: <workdir>/artifacts/<run id>")],
    method: Annotated[list[str] | None, typer.Option(help="show only this method's rows (repeatable)")] = None,
    doc: Annotated[list[str] | None, typer.Option(help="list only this document id (repeatable)")] = None,
    output: Annotated[
        Path | None, typer.Option(help="the new HTML file; default <run dir>/viewer/explanations-<UTC time>.html")
    ] = None,
    max_documents: Annotated[int, typer.Option(min=1, help="documents listed at most (a seeded sample)")] = 200,
) -> None:
    """Re-render a run's explanation viewer from its artifacts (no model needed)."""
    from storage.errors import StorageError
    from storage.text_files import write_text_file
    from tasks.explanations import ViewerInputs, explanations_page
    from xattr.reporting.viewer import ViewerSettings

    summary_file = run_dir / "summary" / "summary.json"
    try:
        viewer = json.loads(summary_file.read_text(encoding="utf-8"))["viewer"]
        inputs = ViewerInputs.from_dict(viewer["inputs"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        console.print(
            f"[red]error:[/] {str(run_dir)!r} is not an explain run directory: cannot read the viewer inputs of "
            f"{str(summary_file)!r} ({type(error).__name__}: {error})",
            soft_wrap=True,
        )
        raise typer.Exit(1) from None
    settings = ViewerSettings(max_documents=max_documents, title=f"xattr explanations: {run_dir.name}")
    try:
        page = explanations_page(inputs, settings, methods=method, documents=doc)
    except (ValueError, OSError) as error:
        console.print(f"[red]error:[/] {run_dir}: {error}", soft_wrap=True)
        raise typer.Exit(1) from None
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = output or run_dir / "viewer" / f"explanations-{stamp}.html"
    try:
        write_text_file(target, page, name=str(target))  # the run's own viewer stays as it was written
    except StorageError as error:
        console.print(f"[red]error:[/] {error}", soft_wrap=True)
        raise typer.Exit(1) from None
    console.print(f"[bold]Viewer:[/] {target}")


@app.command()
def benchmark(
    config: Annotated[Path, typer.Argument(help="benchmark YAML config (see configs/benchmarks/)")],
    workdir: Annotated[Path | None, typer.Option(help="override the config's workdir")] = None,
    data_root: Annotated[
        Path | None, typer.Option(help="where the datasets are (default: the config's data_root, ../shared/data)")
    ] = None,
) -> None:
    """Benchmark every configured method on one dataset: fine-tune, attribute, all metrics, MLflow."""
    from flows.benchmark import benchmark as benchmark_flow
    from flows.benchmark_settings import load_benchmark_settings

    settings = _load_config(load_benchmark_settings, config, workdir, data_root=data_root)
    started = time.perf_counter()
    summary = _run_flow(benchmark_flow, settings)
    typer.echo(summary["table"])  # plain markdown: readable at any width, pastes into reports
    console.print(f"[bold]Table:[/] {summary['table_path']}")
    uri = summary["tracking_uri"]
    console.print(f"[bold]MLflow:[/] run {summary['mlflow_run_id']} in {uri} (one child run per method)")
    console.print(f"[bold]Wall time:[/] {time.perf_counter() - started:.0f} s")


def main() -> None:
    """Entry point for ``python -m flows.cli``."""
    app()


if __name__ == "__main__":
    main()
