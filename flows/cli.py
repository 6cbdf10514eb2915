"""The ``xattr`` command line: run a config, list methods, run the embedded demo."""

from __future__ import annotations

import json
import os

# Before Prefect is imported: its temporary server otherwise sends analytics and logs a
# harmless "database is locked" traceback (STACK.md).
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# The temporary server of an in-process run gets 20 s by default, too little on a busy machine.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

#: Set by ``--debug``: known failures then show their traceback instead of one line.
_DEBUG = {"on": False}


def _known_errors() -> tuple[type[Exception], ...]:
    """The project's error classes: a failure of one of these is a known failure (one line, no traceback)."""
    from flows.config_files import SettingsError
    from flows.deploy import DeployError
    from flows.runners import RunnerError
    from flows.tracking_ui import UIError
    from storage import StorageError
    from tasks.attribute import IndexMismatchError
    from xattr.data.ag_news import AgNewsError
    from xattr.data.corpus import CorpusError
    from xattr.data.datasets import DatasetError
    from xattr.data.imdb import ImdbError
    from xattr.data.products import ProductsError
    from xattr.data.sst import SstError
    from xattr.data.webnlg import WebNlgError
    from xattr.heads.masks import HeadMaskError
    from xattr.heads.statistics import HeadStatisticsError
    from xattr.ldav import ConceptError, LdavError
    from xattr.lrp.layout import LrpUnsupportedModelError
    from xattr.metrics.applicability import MetricNotApplicableError
    from xattr.metrics.gold import UndefinedMetricError
    from xattr.models.attention import AttentionUnavailableError
    from xattr.models.loading import ModelLoadError

    return (
        SettingsError,
        DeployError,
        RunnerError,
        UIError,
        StorageError,
        IndexMismatchError,
        AgNewsError,
        CorpusError,
        DatasetError,
        ImdbError,
        ProductsError,
        SstError,
        WebNlgError,
        HeadMaskError,
        HeadStatisticsError,
        ConceptError,
        LdavError,
        LrpUnsupportedModelError,
        MetricNotApplicableError,
        UndefinedMetricError,
        AttentionUnavailableError,
        ModelLoadError,
        FileNotFoundError,
        FileExistsError,
    )


def _fail(exc: BaseException, code: int) -> typer.Exit:
    """Print ``error: <message>`` on one line (markup-safe) and return the exit to raise."""
    message = " ".join(str(exc).split()) or type(exc).__name__
    console.print(f"[red]error:[/] {escape(message)}", soft_wrap=True)
    return typer.Exit(code)


class _OneLineErrors(TyperGroup):
    """The top-level handler: a known failure of any command prints one line and exits non-zero
    (2 for a bad config, 1 otherwise); ``--debug`` shows the traceback instead."""

    def invoke(self, ctx: Any) -> Any:
        from flows.config_files import SettingsError

        try:
            return super().invoke(ctx)
        except Exception as exc:
            if _DEBUG["on"] or not isinstance(exc, _known_errors()):
                raise
            raise _fail(exc, 2 if isinstance(exc, SettingsError) else 1) from exc


app = typer.Typer(
    name="xattr",
    help="Explain fine-tuned transformer text models token by token, over whole corpora.\n\n"
    "Example: xattr demo   (then: xattr ui --workdir xattr-demo)",
    no_args_is_help=True,
    add_completion=False,
    cls=_OneLineErrors,
)
console = Console()


def _version(value: bool) -> None:
    if value:
        from xattr import __version__

        typer.echo(f"xattr {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="print the version and exit")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="show the full traceback of a failure")] = False,
) -> None:
    """Explain fine-tuned transformer text models token by token, over whole corpora.

    Example: xattr demo   (then: xattr ui --workdir xattr-demo)
    """
    _DEBUG["on"] = debug


def _load_config(
    loader: Callable[..., Any],
    config: Path,
    workdir: Path | None,
    *,
    overrides: dict[str, Any] | None = None,
    **extra: Any,
) -> Any:
    """Settings from ``loader``, with their data and model paths checked before any server starts;
    a bad config prints one line and exits 2."""
    from flows.settings import SettingsError

    changes = dict(overrides or {}) | ({"workdir": str(workdir.resolve())} if workdir else {})
    try:
        settings = loader(config, changes or None, **extra)
        settings.check_inputs(config)
        return settings
    except SettingsError as exc:
        if _DEBUG["on"]:
            raise
        raise _fail(exc, 2) from exc


#: Seconds a Ctrl-C'd run has to stop by itself before its process tree is stopped (see _interruptible).
INTERRUPT_GRACE_SECONDS = 20.0


def _stop_process_tree(grace: float) -> None:
    """After ``grace`` seconds, stop this process's children (Dask workers) and exit with 130 (Ctrl-C).

    Run in a daemon thread by the first Ctrl-C; a run that stops by itself exits before it fires.
    The temporary Prefect server's watchdog stops the server once this process is gone.
    """
    import psutil

    time.sleep(grace)
    line = f"error: interrupted; the run did not stop within {grace:g} s, so its processes were stopped"
    print(line, file=sys.stderr)
    children = psutil.Process().children(recursive=True)
    for child in children:
        try:
            child.terminate()
        except psutil.Error:
            continue
    _, alive = psutil.wait_procs(children, timeout=5)
    for child in alive:
        try:
            child.kill()
        except psutil.Error:
            continue
    os._exit(130)


@contextmanager
def _interruptible(grace: float | None = None) -> Iterator[threading.Event]:
    """Ctrl-C stops the flow run inside, even where Python drops the ``KeyboardInterrupt``.

    Python raises a signal's exception wherever the main thread is, and drops it ("Exception
    ignored in") when that is a garbage-collector callback, such as distributed's GC diagnostics:
    the Dask workers had died of the same Ctrl-C and the run then waited forever. So the first
    Ctrl-C also starts :func:`_stop_process_tree`, a run that returns after a Ctrl-C still exits
    with 130, and a second Ctrl-C stops everything at once. The handler is installed explicitly: a
    process started in the background inherits SIGINT as ignored.
    """
    import signal

    grace = INTERRUPT_GRACE_SECONDS if grace is None else grace
    interrupted = threading.Event()

    def stop(signum: int, frame: object) -> None:
        if interrupted.is_set():  # a second Ctrl-C: stop now
            threading.Thread(target=_stop_process_tree, args=(0.0,), daemon=True).start()
        else:
            interrupted.set()
            threading.Thread(target=_stop_process_tree, args=(grace,), daemon=True).start()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, stop)
    try:
        yield interrupted
    finally:
        signal.signal(signal.SIGINT, previous)


def _run_flow(flow_function: Callable[[Any], dict[str, Any]], settings: Any, *known: type[Exception]) -> dict[str, Any]:
    """Run a flow; a known failure prints one line and exits 1 (the run is already marked failed).

    Ctrl-C stops it with exit code 130 (:func:`_interruptible`).
    """
    from flows.runners import start_prefect_api

    try:
        with _interruptible() as interrupted:
            start_prefect_api(lambda line: console.print(f"[yellow]warning:[/] {line}"))
            summary = flow_function(settings)
    except (ValueError, *_known_errors(), *known) as exc:
        if _DEBUG["on"]:
            raise
        raise _fail(exc, 1) from exc
    except KeyboardInterrupt as exc:
        console.print("[red]error:[/] interrupted (Ctrl-C); finished stages are cached: run again to resume")
        raise typer.Exit(130) from exc
    if interrupted.is_set():  # the interrupt was dropped inside and the run went on to its end
        console.print("[red]error:[/] interrupted (Ctrl-C) after the run had finished its stages")
        raise typer.Exit(130)
    return summary


def typeable(command: str = "xattr") -> str:
    """How to type ``command`` (``xattr``, or ``prefect`` from the same venv) in the user's shell:
    the bare name when that name on PATH is this venv's script, else the script's path
    (``.venv/bin/xattr`` after ``make demo``, whose venv is not on PATH)."""
    script = Path(sys.argv[0])
    if script.name != "xattr":
        return command  # python -m flows.cli, or a test runner
    sibling = script.with_name(command)
    on_path = shutil.which(command)
    if on_path and Path(on_path).resolve() == sibling.resolve():
        return command
    try:
        return str(sibling.absolute().relative_to(Path.cwd()))
    except ValueError:
        return str(sibling.absolute())


def ui_command(tracking_uri: str) -> str:
    """The ``xattr ui`` command that serves the MLflow store ``tracking_uri``, as the user can type it."""
    prefix = "sqlite:///"
    if tracking_uri.startswith(prefix) and tracking_uri.endswith("/mlflow.db"):
        return f"{typeable()} ui --workdir {Path(tracking_uri[len(prefix) :]).parent}"
    return f"{typeable()} ui --tracking-uri {tracking_uri}"


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
    console.print(f"[bold]Artifacts:[/] {summary['artifacts_dir']}", soft_wrap=True)
    console.print(f"[bold]Summary:[/]   {summary['summary_path']}", soft_wrap=True)
    console.print(f"[bold]MLflow:[/]    run {summary['mlflow_run_id']} in {uri}", soft_wrap=True)
    console.print(f"           open the UI with: {ui_command(uri)}  (then http://127.0.0.1:5000)", soft_wrap=True)
    console.print(f"[bold]Stages served from cache:[/] {summary['cache_hits']} of {len(summary['stages'])}")


def _viewer_lines(summary: dict[str, Any]) -> None:
    """The run's explanation viewer and how to open MLflow on its workdir (the last lines of run and demo)."""
    # soft_wrap: a path is never broken across lines (it is copied from the terminal).
    console.print(f"[bold]Viewer:[/]    {summary['viewer']}", soft_wrap=True)
    console.print(f"[bold]MLflow UI:[/] {ui_command(summary['tracking_uri'])}", soft_wrap=True)


@app.command()
def run(
    config: Annotated[Path, typer.Argument(help="YAML config of explain_corpus (see README)")],
    workdir: Annotated[Path | None, typer.Option(help="override the config's workdir")] = None,
) -> None:
    """Run the explain_corpus flow in-process on CONFIG.

    Example: xattr run xattr-demo/demo-config.yaml --workdir runs
    """
    from flows.explain_corpus import explain_corpus_with_runner
    from flows.runners import RunnerError
    from flows.settings import load_settings

    summary = _run_flow(explain_corpus_with_runner, _load_config(load_settings, config, workdir), RunnerError)
    console.print(_metrics_table(summary))
    _where(summary)
    _viewer_lines(summary)


def _method_facts(cls: Any) -> dict[str, str]:
    """What ``xattr methods`` shows of one registered method, with its default parameters."""
    from pydantic import ValidationError

    try:
        params = cls.Params()
        signed, cost, needs = cls.scores_signed(params), cls.cost_for(params), cls.requirements(params)
    except (ValidationError, ValueError):  # a parameter without a default: show the templates
        signed, cost, needs = cls.signed is True, cls.cost, None
    wanted = [
        label
        for label, on in (
            ("index", needs is not None and needs.neighbours is not None),
            ("head masks", needs is not None and needs.head_masks),
            ("LDAV model", needs is not None and needs.ldav_vectors),
        )
        if on
    ]
    reduction = "reduction" in cls.Params.model_fields or cls.name == "lafa"
    from xattr.methods.base import ALL_TASKS

    return {
        "needs": ", ".join(wanted) or "-",
        "scores": ("signed" if signed else "magnitude") + ("*" if reduction else ""),
        "cost per text": cost,
        "tasks": "all" if set(cls.tasks) == set(ALL_TASKS) else ", ".join(cls.tasks),
    }


@app.command()
def methods(
    name: Annotated[str | None, typer.Argument(help="show this method in full")] = None,
) -> None:
    """List the registered attribution methods: what each needs, whether scores are signed, what it costs.

    Cost: forward (fwd) and backward (bwd) passes per text and explained output (default parameters).

    Piped or in a narrow terminal, cells wrap; no name or value is cut.

    Example: xattr methods integrated_gradients
    """
    from xattr.methods import available_methods, describe_parameters
    from xattr.methods.base import method_class

    if name is not None:
        try:
            cls = method_class(name)
        except ValueError as exc:
            raise _fail(exc, 1) from exc
        console.print(f"[bold]{cls.name}[/]: {escape(cls.summary)}", soft_wrap=True)
        console.print(f"reference: {escape(cls.paper)}", soft_wrap=True)
        for key, value in _method_facts(cls).items():
            console.print(f"{key}: {escape(value)}", soft_wrap=True)
        console.print(f"cost template: {escape(cls.cost)}", soft_wrap=True)
        console.print("parameters:")
        for p, t, d, desc in describe_parameters(cls):
            console.print(f"  {p}: {escape(str(t))} = {escape(repr(d))}  {escape(desc)}", soft_wrap=True)
        return
    from rich import box

    # Fixed widths that hold each column's longest word, the cost column takes the rest: at 80
    # columns (or piped) every value wraps at spaces and none is cut.
    wide = console.width >= 120
    table = Table(
        title="Attribution methods",
        box=box.SIMPLE_HEAD,
        show_lines=True,
        pad_edge=False,
        expand=True,
        padding=(0, 1, 0, 0),
    )
    table.add_column("name", no_wrap=True, width=len("integrated_gradients"))
    table.add_column("needs", width=10)
    table.add_column("scores", no_wrap=True, width=10)
    table.add_column("cost per text", ratio=1, overflow="fold")
    table.add_column("tasks", width=40 if wide else len("pair_classification"))
    for method, cls in available_methods().items():
        facts = _method_facts(cls)
        table.add_row(method, facts["needs"], facts["scores"], facts["cost per text"], facts["tasks"])
    console.print(table)
    console.print(
        "cost: forward (fwd) and backward (bwd) passes per text and explained output, default parameters."
        "  * signed with reduction: sum (LAFA: with its base method's).  `xattr methods NAME`: what NAME"
        " computes, its reference and parameters.",
        soft_wrap=False,
    )


@app.command()
def demo(
    workdir: Annotated[Path, typer.Option(help="where data, models, artifacts and mlflow.db go")] = Path("xattr-demo"),
    rows: Annotated[int, typer.Option(min=50, help="listings in the synthetic catalogue")] = 3000,
    epochs: Annotated[int, typer.Option(min=1, help="fine-tuning epochs")] = 2,
    eval_texts: Annotated[int, typer.Option(min=1, help="texts scored for faithfulness")] = 150,
) -> None:
    """Explain a MiniLM price regressor on a synthetic laptop catalogue with known price drivers.

    Example: xattr demo --workdir xattr-demo   (what `make demo` runs)
    """
    from flows.demo import DemoPlan, run_demo

    started = time.perf_counter()
    plan = DemoPlan(rows=rows, epochs=epochs, eval_texts=eval_texts)
    console.print(
        f"[bold]xattr demo[/]: {rows} synthetic listings, MiniLM price regressor, workdir {workdir.resolve()}"
    )
    # The fine-tune stage (the run's first) logs its optimiser steps; a second demo reuses the model.
    summary = _run_flow(lambda p: run_demo(workdir, p), plan)
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
    """Mine dependency-based head statistics (Mask-LRP Eq. 6-8) on CONFIG's corpus and model.

    Example: xattr heads my-explain-config.yaml --workdir runs
    """
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
    console.print(f"            open the UI with: {ui_command(result['tracking_uri'])}", soft_wrap=True)


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
    """Fine-tune a model on a corpus (optionally with LDAV class vectors) with the train flow.

    base_model defaults to the bundled all-MiniLM-L6-v2.

    Example: xattr train my-train-config.yaml --workdir runs
    """
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
    console.print(f"        open the UI with: {ui_command(summary['tracking_uri'])}", soft_wrap=True)


@app.command()
def concepts(
    model_dir: Annotated[Path, typer.Argument(help="model directory trained with LDAV")],
    phrases: Annotated[list[str], typer.Argument(help="phrases to score against every class vector")],
    word_list: Annotated[
        list[str] | None, typer.Option(help="NAME=FILE: a word list (one word per line) pooled into one concept")
    ] = None,
) -> None:
    """Score phrases or word lists against every LDAV class vector (LDAV paper Table 9, Sec. 4.7-4.9).

    Example: xattr concepts runs/models/sst2-ldav "a masterpiece" "a waste of time"
    """
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
    """Check prefect.yaml (configs, data and model paths), create the work pool if missing, deploy to a server.

    Example: xattr deploy --name price-drivers-weekly
    """
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
    console.print(f"start a worker to run them: {typeable('prefect')} worker start --pool {pools}", soft_wrap=True)


@app.command()
def ui(
    config: Annotated[Path | None, typer.Argument(help="YAML config whose MLflow store to show")] = None,
    workdir: Annotated[Path | None, typer.Option(help="a run workdir holding mlflow.db")] = None,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI (sqlite:///...)")] = None,
    port: Annotated[int, typer.Option(min=1, max=65535, help="port of the MLflow UI")] = 5000,
) -> None:
    """Serve the MLflow UI of the configured store on 127.0.0.1 until Ctrl-C.

    Example: xattr ui --workdir xattr-demo   (then open http://127.0.0.1:5000)
    """
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
        # soft_wrap: a URL or path is never broken across lines (it is copied from the terminal).
        console.print(
            f"[bold]MLflow UI:[/] http://127.0.0.1:{port}  (store {uri}; server pid {server.pid})", soft_wrap=True
        )
        for name, link in links.items():
            console.print(f"  experiment {name}: {link}", soft_wrap=True)
        console.print(
            f"[bold]Prefect UI:[/] `{typeable('prefect')} server start --host 127.0.0.1`, then open "
            "http://127.0.0.1:4200 (runs appear there when PREFECT_API_URL=http://127.0.0.1:4200/api is set)",
            soft_wrap=True,
        )
        console.print("Ctrl-C stops the MLflow server.")
        server.wait()
        console.print(f"[red]error:[/] the MLflow server stopped (exit code {server.returncode})")
        raise typer.Exit(1)
    except KeyboardInterrupt:
        console.print("stopping the MLflow server")
    finally:
        stop_server(server)


@app.command()
def prune(
    workdir: Annotated[Path, typer.Argument(help="a flow workdir (holding artifacts/ and stage-cache/)")],
    older_than: Annotated[float, typer.Option(min=0, help="remove runs and cache entries older than this many days")],
    dry_run: Annotated[bool, typer.Option(help="only list what would be removed")] = False,
) -> None:
    """Remove runs and stage-cache entries older than --older-than days, keeping what newer runs point at.

    Example: xattr prune xattr-demo --older-than 30 --dry-run
    """
    from flows.retention import prune_workdir

    try:
        report = prune_workdir(workdir.resolve(), older_than, dry_run=dry_run)
    except ValueError as exc:
        console.print(f"[red]error:[/] {exc}", soft_wrap=True)
        raise typer.Exit(1) from exc
    verb = "would remove" if dry_run else "removed"
    for run_dir in report.removed_runs:
        console.print(f"{verb} run {run_dir.name}")
    for run_dir in report.kept_runs:
        console.print(f"kept run {run_dir.name}: a newer run still uses its artifacts")
    console.print(
        f"{verb} {len(report.removed_runs)} runs and {len(report.removed_cache_entries)} stage-cache entries"
        f" ({report.freed_bytes / 1e6:.1f} MB); kept {len(report.kept_runs)} old runs still in use"
    )


report_app = typer.Typer(
    help="Reports built from whole-corpus explanations.\n\n"
    "Example: xattr report price-drivers configs/price-drivers-walmart-amazon.yaml",
    no_args_is_help=True,
)
app.add_typer(report_app, name="report")


@report_app.command("price-drivers")
def report_price_drivers(
    config: Annotated[Path, typer.Argument(help="YAML config of the price_drivers flow (see README)")],
    workdir: Annotated[Path | None, typer.Option(help="override the config's workdir")] = None,
    data_root: Annotated[
        Path | None, typer.Option(help="where the datasets are, for a config with data_root (or XATTR_DATA_ROOT)")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="show the model's drivers normally even when it is worse than the baseline")
    ] = False,
) -> None:
    """What drives predicted price across a catalogue: drivers table, HTML report, MLflow run.

    Example: xattr report price-drivers configs/price-drivers-walmart-amazon.yaml --workdir runs
    """
    from flows.price_drivers import price_drivers
    from flows.price_settings import load_price_settings

    overrides = {"drivers": {"show_untrusted": True}} if force else None
    settings = _load_config(load_price_settings, config, workdir, overrides=overrides, data_root=data_root)
    summary = _run_flow(price_drivers, settings)
    m = summary["metrics"]
    table = Table(title="Model quality on held-out listings")
    for column in ("model", "R^2 (log price)", "MAPE"):
        table.add_column(column)
    table.add_row("explained model", f"{m['r2']:.3f}", f"{m['mape']:.1%}")
    table.add_row("TF-IDF + ridge", f"{m['baseline_r2']:.3f}", f"{m['baseline_mape']:.1%}")
    console.print(table)
    colour = "green" if m.get("model_trusted", 1.0) else "red"
    console.print(f"[bold {colour}]Verdict:[/] {escape(summary.get('verdict', ''))}", soft_wrap=True)
    console.print(f"[bold]Prices:[/]  {summary['price_rule']}", soft_wrap=True)
    console.print(f"[bold]Report:[/]  {summary['report']}", soft_wrap=True)
    console.print(f"[bold]Drivers:[/] {summary['drivers']}", soft_wrap=True)
    console.print(f"[bold]MLflow:[/]  run {summary['mlflow_run_id']} in {summary['tracking_uri']}", soft_wrap=True)
    console.print(f"         open the UI with: {ui_command(summary['tracking_uri'])}", soft_wrap=True)


@report_app.command("explanations")
def report_explanations(
    run_dir: Annotated[Path, typer.Argument(help="an explain run's directory: <workdir>/artifacts/<run id>")],
    method: Annotated[list[str] | None, typer.Option(help="show only this method's rows (repeatable)")] = None,
    doc: Annotated[list[str] | None, typer.Option(help="list only this document id (repeatable)")] = None,
    output: Annotated[
        Path | None, typer.Option(help="the new HTML file; default <run dir>/viewer/explanations-<UTC time>.html")
    ] = None,
    max_documents: Annotated[int, typer.Option(min=1, help="documents listed at most (a seeded sample)")] = 200,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="show the drivers normally even when the classifier is not better than the majority class"
        ),
    ] = False,
) -> None:
    """Re-render a run's explanation viewer from its artifacts (no model needed).

    Example: xattr report explanations xattr-demo/artifacts/RUN_ID --method integrated_gradients --max-documents 50
    """
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
    settings = ViewerSettings(
        max_documents=max_documents, title=f"xattr explanations: {run_dir.name}", show_untrusted=force
    )
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
    """Benchmark every configured method on one dataset: fine-tune, attribute, all metrics, MLflow.

    Example: xattr benchmark configs/benchmarks/sst2.yaml --data-root ../shared/data
    """
    from flows.benchmark import benchmark as benchmark_flow
    from flows.benchmark_settings import load_benchmark_settings

    settings = _load_config(load_benchmark_settings, config, workdir, data_root=data_root)
    started = time.perf_counter()
    summary = _run_flow(benchmark_flow, settings)
    typer.echo(summary["table"])  # plain markdown: readable at any width, pastes into reports
    console.print(f"[bold]Table:[/] {summary['table_path']}")
    uri = summary["tracking_uri"]
    console.print(f"[bold]MLflow:[/] run {summary['mlflow_run_id']} in {uri} (one child run per method)")
    console.print(f"        open the UI with: {ui_command(uri)}", soft_wrap=True)
    console.print(f"[bold]Wall time:[/] {time.perf_counter() - started:.0f} s")


def main() -> None:
    """Entry point for ``python -m flows.cli`` (the ``xattr`` script is ``app`` itself)."""
    app()


if __name__ == "__main__":
    main()
