"""The ``price_drivers`` flow: what drives predicted price across a catalogue, overall and per category.

Stages: prepare the catalogue (price rule, rare categories grouped) -> fine-tune a log-price
regressor unless one is given -> encode + neighbour index (for neighbour methods such as LAFA)
-> signed token attributions -> drivers (words, attribute-value pairs, phrases; masked-price
effects with bootstrap CIs), model quality vs TF-IDF + ridge, and the HTML report.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows.explain_corpus import _result_storage, _run_id, _Stages
from flows.price_settings import PriceDriverSettings
from storage import read_artifact
from storage.text_files import write_text_file
from tasks import tracking
from tasks.attribute import attribute_stage
from tasks.build_index import build_index_stage
from tasks.encode_corpus import encode_corpus_stage
from tasks.fine_tune import fine_tune_stage
from tasks.price_drivers import prepare_catalogue_stage, price_drivers_stage
from tasks.results import RunContext, StageResult
from xattr.methods import get_method


def _base_model(settings: PriceDriverSettings) -> Path:
    if settings.model.base_model:
        return Path(settings.model.base_model)
    from flows.demo import base_model_dir

    return base_model_dir()


def _markdown(settings: PriceDriverSettings, context: RunContext, prepared: StageResult, result: StageResult) -> str:
    drivers = read_artifact(result.refs["drivers"]).to_pandas()
    overall = drivers[drivers["scope"] == "overall"]
    m = result.metrics
    lines = [
        f"# Price drivers `{context.run_id}`",
        "",
        f"Catalogue: `{settings.catalogue.path}`; report: `{result.params['report']}`.",
        "",
        f"Price rule: {prepared.notes[0] if prepared.notes else 'n/a'}",
        "",
        "| model (held-out listings) | R^2 (log price) | MAPE |",
        "|---|---|---|",
        f"| explained model | {m['r2']:.3f} | {m['mape']:.1%} |",
        f"| TF-IDF + ridge | {m['baseline_r2']:.3f} | {m['baseline_mape']:.1%} |",
        "",
        f"Method `{result.params['method']}`, effect `{result.params['effect']}`, replacement "
        f"`{result.params['replacement']}`; effects are mean changes of predicted price"
        " (95% bootstrap CI over listings).",
    ]
    for title, rows in (
        ("Raise price", overall[overall["mean_effect"] > 0].head(10)),
        ("Lower price", overall[overall["mean_effect"] < 0].sort_values("mean_effect").head(10)),
    ):
        lines += [
            "",
            f"## {title}",
            "",
            "| driver | kind | listings | mean effect [95% CI] | relative |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {r.driver} | {r.kind} | {r.texts} | {r.mean_effect:+,.2f} [{r.effect_ci_low:+,.2f}, "
            f"{r.effect_ci_high:+,.2f}] | {r.mean_relative_effect:+.1%} |"
            for r in rows.itertuples()
        ]
    return "\n".join(lines) + "\n"


@flow(name="price-drivers", log_prints=True)
def price_drivers(settings: PriceDriverSettings) -> dict[str, Any]:
    """Explain a price model over a whole catalogue and write the drivers table and HTML report.

    Args:
        settings: The resolved configuration (see ``flows.price_settings.PriceDriverSettings``).

    Returns:
        Run id, MLflow run id, the drivers artifact, the report and plot paths, quality metrics.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logger = get_run_logger()
    workdir = settings.workdir.resolve()
    context = RunContext(workdir / "artifacts", _run_id())
    uri = settings.tracking_uri()
    parent = tracking.start_parent_run(
        uri,
        settings.tracking.experiment,
        workdir / "mlflow-artifacts",
        settings.name,
        settings.model_dump(mode="json"),
        {"xattr.run_id": context.run_id, "xattr.flow": "price-drivers"},
    )
    logger.info("run %s: artifacts under %s, MLflow run %s (%s)", context.run_id, context.artifacts_root, parent, uri)
    stages = _Stages(_result_storage(workdir), uri, parent)
    cat = settings.catalogue
    method = settings.drivers.method
    try:
        prepared = stages.run(
            prepare_catalogue_stage,
            path=cat.path,
            file_format=cat.format,
            columns=cat.columns(),
            iqr_factor=cat.iqr_factor,
            min_category_items=cat.min_category_items,
            max_rows=cat.max_rows,
            seed=cat.seed,
            context=context,
            holdout_fraction=settings.model.holdout_fraction,
            holdout_seed=settings.model.seed,
        )
        corpus = prepared.refs["corpus"]
        model_path = settings.model.path
        if model_path is None:
            trained = stages.run(
                fine_tune_stage,
                rows=prepared.refs["train"],
                base_model=_base_model(settings),
                config=settings.model.fine_tune_config(),
                # A string, not a Path: the cache key must not hash the models it will hold.
                models_dir=str(workdir / "models"),
                task="regression",
                name="price",
                stage="train_price_model",
            )
            model_path = trained.params["model_path"]
        model = settings.model.spec(model_path)
        embeddings = index = None
        if get_method(method.name, method.params).needs_references():
            embeddings = stages.run(
                encode_corpus_stage,
                corpus=corpus,
                model=model,
                layer=settings.encode.layer,
                batch_size=settings.encode.batch_size,
                context=context,
            ).refs["embeddings"]
            index = stages.run(
                build_index_stage,
                embeddings=embeddings,
                index_type=settings.index.type,
                neighbours=settings.index.neighbours,
                context=context,
            ).refs["index"]
        attributed = stages.run(
            attribute_stage,
            corpus=corpus,
            model=model,
            method=method.name,
            label=method.key,
            params=method.params,
            target="predicted",
            batch_size=settings.drivers.batch_size,
            context=context,
            embeddings=embeddings,
            index=index,
            seed=settings.drivers.seed,
        )
        d = settings.drivers
        result = stages.run(
            price_drivers_stage,
            corpus=corpus,
            attributions=attributed.refs["attributions"],
            catalogue=Path(prepared.params["catalogue"]),
            excluded=Path(prepared.params["excluded_prices"]),
            price_rule=prepared.notes[0],
            model=model,
            options={
                "method": method.key,
                "effect": d.effect,
                "replacement": d.replacement,
                "rules": [r.model_dump() for r in d.rules] if d.rules is not None else None,
                "noun_chunks": d.noun_chunks,
                "spacy_model": d.spacy_model,
                "min_texts": d.min_texts,
                "confidence": d.confidence,
                "resamples": d.resamples,
                "seed": d.seed,
                "batch_size": d.batch_size,
                "holdout_fraction": settings.model.holdout_fraction,
                "examples": d.examples,
                "top_k": d.top_k,
                "title": settings.title,
                "baseline_alpha": d.baseline_alpha,
            },
            context=context,
        )
        markdown = _markdown(settings, context, prepared, result)
    except BaseException:
        tracking.finish_parent_run(uri, parent, {}, status="FAILED")
        raise
    summary_path = context.artifacts_root / context.run_id / "summary" / "price_drivers.md"
    write_text_file(summary_path, markdown, name="summary/price_drivers.md")
    plots = {name: Path(p) for name, p in json.loads(result.params["plots"]).items()}
    tracking.log_files(
        uri,
        parent,
        {
            "report": Path(result.params["report"]),
            "summary": summary_path,
            "drivers": Path(result.refs["drivers"].path),
        },
    )
    for path in plots.values():
        tracking.log_files(uri, parent, {"plots": path})
    try:
        create_markdown_artifact(markdown=markdown, key="xattr-price-drivers", description="price-driver summary")
    except Exception:  # noqa: BLE001 - the UI artifact is a convenience; files and MLflow hold the record
        logger.warning("could not create the Prefect markdown artifact")
    headline = {k: float(v) for k, v in result.metrics.items()} | {
        k: v for k, v in prepared.metrics.items() if k.startswith("excluded")
    }
    headline["cache_hits"] = float(sum(cached for _, cached in stages.results))
    tracking.finish_parent_run(uri, parent, headline)
    logger.info("report: %s", result.params["report"])
    return {
        "run_id": context.run_id,
        "mlflow_run_id": parent,
        "tracking_uri": uri,
        "artifacts_dir": str(context.artifacts_root / context.run_id),
        "drivers": result.refs["drivers"].path,
        "report": result.params["report"],
        "plots": {k: str(v) for k, v in plots.items()},
        "summary_path": str(summary_path),
        "model_path": model_path,
        "metrics": result.metrics,
        "catalogue": prepared.metrics,
        "price_rule": prepared.notes[0] if prepared.notes else "",
        "cache_hits": int(headline["cache_hits"]),
        "stages": [r.stage for r, _ in stages.results],
    }


@flow(name="price-drivers-from-config", log_prints=True)
def price_drivers_from_config(config: str) -> dict[str, Any]:
    """Deployment entry point: read the YAML config at ``config`` and run :func:`price_drivers`."""
    from flows.price_settings import load_price_settings

    return price_drivers(load_price_settings(config))


__all__ = ["price_drivers", "price_drivers_from_config"]
