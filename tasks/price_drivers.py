"""Stages of the price-driver flow: prepare the catalogue, train a price model, compute and report drivers."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
from prefect.logging import get_run_logger

from storage import ArtifactRef, ArtifactStore, read_artifact
from storage.text_files import write_binary_file, write_text_file
from tasks.caching import stage_task
from tasks.corpus_io import read_corpus
from tasks.models import loaded_model
from tasks.progress import StageProgress
from tasks.results import RunContext, StageResult
from xattr.data.corpus import read_table_file
from xattr.data.products import catalogue_from_table, prepare_catalogue, read_products
from xattr.models.loading import ModelSpec
from xattr.reporting.price_drivers import DriverOptions, analyse_price_drivers, holdout_mask
from xattr.reporting.price_report import figure_pngs, price_report_data, render_price_report, report_figures


@stage_task(name="prepare_catalogue")
def prepare_catalogue_stage(
    path: Path,
    file_format: str,
    columns: dict[str, str | None],
    iqr_factor: float,
    min_category_items: int,
    max_rows: int | None,
    seed: int,
    context: RunContext,
    holdout_fraction: float,
    holdout_seed: int,
) -> StageResult:
    """Read the catalogue, exclude unusable prices (reported), group rare categories, sample rows.

    Writes the ``corpus`` artifact (``label`` = price, ``group`` = category), its ``train`` part
    (the listings outside the ``holdout_fraction`` held out by doc_id hash with ``holdout_seed``,
    see :func:`xattr.reporting.price_drivers.holdout_mask`: what a price model is fine-tuned on),
    the kept catalogue (``catalogue.csv``: ``doc_id, brand``) and every excluded row with its
    reason (``excluded_prices.csv``).
    """
    started = time.perf_counter()
    if file_format == "products":
        frame = read_products(path)
    else:
        frame = catalogue_from_table(read_table_file(Path(path)), columns, source=path)
    prepared = prepare_catalogue(
        frame,
        iqr_factor=iqr_factor,
        min_category_items=min_category_items,
        max_rows=max_rows,
        seed=seed,
        source=path,
    )
    cleaned = prepared.cleaned
    get_run_logger().warning("price rule: %s", cleaned.describe())
    out_dir = context.artifacts_root / context.run_id / "prepare_catalogue"
    excluded_path = out_dir / "excluded_prices.csv"
    write_text_file(
        excluded_path,
        cleaned.excluded[["doc_id", "text", "price_raw", "reason"]].to_csv(index=False),
        name="prepare_catalogue/excluded_prices.csv",
    )
    catalogue_path = out_dir / "catalogue.csv"
    write_text_file(
        catalogue_path,
        prepared.kept[["doc_id", "brand"]].to_csv(index=False),
        name="prepare_catalogue/catalogue.csv",
    )
    store = ArtifactStore(context.artifacts_root, context.run_id)
    metadata = {"source": str(path), "price_rule": cleaned.describe()}
    corpus = prepared.corpus
    ref = store.write(
        "corpus", "prepare_catalogue", "corpus", pa.Table.from_pandas(corpus, preserve_index=False), metadata=metadata
    )
    train = corpus[~holdout_mask(corpus["doc_id"].tolist(), holdout_fraction, holdout_seed)].reset_index(drop=True)
    train_ref = store.write(
        "corpus",
        "prepare_catalogue",
        "train",
        pa.Table.from_pandas(train, preserve_index=False),
        metadata={**metadata, "holdout": f"{holdout_fraction:g} by doc_id hash, seed {holdout_seed}"},
    )
    return StageResult(
        "prepare_catalogue",
        {"corpus": ref, "train": train_ref},
        prepared.metrics,
        {
            "path": str(path),
            "iqr_factor": str(iqr_factor),
            "min_category_items": str(min_category_items),
            "max_rows": str(max_rows),
            "excluded_prices": str(excluded_path),
            "catalogue": str(catalogue_path),
        },
        time.perf_counter() - started,
        (cleaned.describe(),),
    )


@stage_task(name="price_drivers")
def price_drivers_stage(
    corpus: ArtifactRef,
    attributions: ArtifactRef,
    catalogue: Path,
    excluded: Path,
    price_rule: str,
    model: ModelSpec,
    options: dict[str, Any],
    context: RunContext,
) -> StageResult:
    """Drivers table (overall and per category), model quality vs the linear baseline, HTML report.

    ``options``: ``method`` (label), ``effect``, ``replacement``, ``rules`` (None: defaults),
    ``noun_chunks``, ``spacy_model``, ``min_texts``, ``confidence``, ``resamples``, ``seed``,
    ``batch_size``, ``holdout_fraction``, ``examples``, ``top_k``, ``title``, ``baseline_alpha``,
    ``stop_words``, ``numbers``, ``min_word_chars``, ``laptop_rules_min_share``, ``min_r2_gain``,
    ``max_mape_ratio``, ``show_untrusted`` (see :class:`xattr.reporting.price_drivers.DriverOptions`).
    """
    started = time.perf_counter()
    loaded = loaded_model(model)
    view = read_corpus(corpus, loaded)
    brands = pd.read_csv(catalogue, dtype=str, keep_default_na=False, na_values=[""]).set_index("doc_id")["brand"]
    settings = DriverOptions(**options)
    analysis = analyse_price_drivers(
        loaded,
        view.encoded,
        view.frame,
        brands.to_dict(),
        read_artifact(attributions).to_pandas(),
        settings,
        progress=StageProgress("price_drivers-mask") if settings.effect == "mask" else None,
    )
    out_dir = context.artifacts_root / context.run_id / "price_drivers"
    ref = ArtifactStore(context.artifacts_root, context.run_id).write(
        "price_drivers",
        "price_drivers",
        "drivers",
        pa.Table.from_pandas(analysis.drivers, preserve_index=False),
        metadata={
            "method": settings.method,
            "effect": settings.effect,
            "replacement": settings.replacement,
            "output_transform": loaded.output_transform,
        },
    )
    data = price_report_data(
        analysis,
        view.frame,
        pd.read_csv(excluded, dtype=str, keep_default_na=False),
        settings,
        price_rule=price_rule,
        model_name=Path(model.source).name,
    )
    figures = report_figures(data)
    plot_paths: dict[str, str] = {}
    for name, png in figure_pngs(figures).items():
        path = out_dir / "plots" / f"{name}.png"
        write_binary_file(path, png, name=f"price_drivers/plots/{name}.png")
        plot_paths[name] = str(path)
    report_path = out_dir / "report.html"
    write_text_file(report_path, render_price_report(data, figures), name="price_drivers/report.html")
    metrics = analysis.metrics
    get_run_logger().info(
        "price drivers: %d overall, model R^2 %.3f vs baseline %.3f -> %s",
        metrics["drivers_overall"],
        metrics["r2"],
        metrics["baseline_r2"],
        report_path,
    )
    if not analysis.verdict.trusted:
        get_run_logger().warning("%s", analysis.verdict.reason)
    return StageResult(
        "price_drivers",
        {"drivers": ref},
        metrics,
        {
            "report": str(report_path),
            "plots": json.dumps(plot_paths),
            "method": settings.method,
            "effect": settings.effect,
            "replacement": settings.replacement,
            "verdict": analysis.verdict.reason,
        },
        time.perf_counter() - started,
    )


__all__ = [
    "prepare_catalogue_stage",
    "price_drivers_stage",
]
