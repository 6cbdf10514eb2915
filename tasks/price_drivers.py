"""Stages of the price-driver flow: prepare the catalogue, train a price model, compute and report drivers."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from prefect import task
from prefect.logging import get_run_logger

from storage import ArtifactRef, ArtifactStore, read_artifact
from storage.text_files import write_binary_file, write_text_file
from tasks.caching import stage_cache_key
from tasks.corpus_io import read_corpus
from tasks.models import loaded_model
from tasks.progress import StageProgress
from tasks.results import RunContext, StageResult
from xattr.data.corpus import read_table_file
from xattr.data.products import OTHER_CATEGORY, PRICE_PROBLEMS, clean_prices, group_rare_categories, read_products
from xattr.metrics.perturbation import replacement_id
from xattr.models.forward import predict_logits
from xattr.models.loading import ModelSpec
from xattr.reporting.baseline import fit_linear_baseline
from xattr.reporting.phrases import AttributeRule, extract_units, load_spacy, noun_chunk_spans
from xattr.reporting.price_drivers import (
    ALL_CATEGORIES,
    aggregate_drivers,
    driver_occurrences,
    holdout_mask,
    regression_quality,
    to_price,
    word_score_table,
)
from xattr.reporting.price_report import ExampleListing, PriceReportData, render_price_report, report_figures


def _table_catalogue(path: Path, columns: dict[str, str | None]) -> pd.DataFrame:
    """A user's table in canonical product columns (``format: table``)."""
    frame = read_table_file(path)
    for role in ("text", "price"):
        if columns.get(role) not in frame.columns:
            raise ValueError(f"{path}: the {role} column {columns.get(role)!r} is missing (has {list(frame.columns)})")
    for role in ("category", "brand", "id"):
        if columns.get(role) and columns[role] not in frame.columns:
            raise ValueError(f"{path}: the {role} column {columns[role]!r} is missing (has {list(frame.columns)})")
    raw = frame[columns["price"]]
    ids = frame[columns["id"]].astype(str) if columns.get("id") else pd.Series([f"row-{i}" for i in range(len(frame))])
    if ids.duplicated().any():
        raise ValueError(
            f"{path}: id column {columns['id']!r} has duplicate values, e.g. {ids[ids.duplicated()].iloc[0]!r}"
        )

    def optional(role: str) -> pd.Series:
        name = columns.get(role)
        return frame[name].astype(object).where(frame[name].notna(), None) if name else pd.Series([None] * len(frame))

    return pd.DataFrame(
        {
            "doc_id": ids.to_numpy(),
            "text": frame[columns["text"]].fillna("").astype(str).to_numpy(),
            "label": pd.to_numeric(raw, errors="coerce").astype("float64").to_numpy(),
            "group": optional("category").to_numpy(),
            "brand": optional("brand").to_numpy(),
            "price_raw": raw.astype(object)
            .where(raw.notna(), None)
            .astype(object)
            .map(lambda v: None if v is None else str(v))
            .to_numpy(),
        }
    )


@task(name="prepare_catalogue", cache_key_fn=stage_cache_key, persist_result=True)
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
    logger = get_run_logger()
    frame = read_products(path) if file_format == "products" else _table_catalogue(Path(path), columns)
    empty = frame["text"].str.strip() == ""
    if empty.any():
        raise ValueError(
            f"{path}: {int(empty.sum())} listings have no text, e.g. {frame.loc[empty, 'doc_id'].iloc[0]!r}"
        )
    cleaned = clean_prices(frame, iqr_factor=iqr_factor)
    logger.warning("price rule: %s", cleaned.describe())
    kept = cleaned.kept
    if max_rows is not None and len(kept) > max_rows:
        rng = np.random.default_rng(seed)
        kept = kept.iloc[np.sort(rng.choice(len(kept), size=max_rows, replace=False))].reset_index(drop=True)
    has_groups = kept["group"].notna().any()
    if has_groups:
        kept = group_rare_categories(kept, min_category_items)
    out_dir = context.artifacts_root / context.run_id / "prepare_catalogue"
    excluded_path = out_dir / "excluded_prices.csv"
    write_text_file(
        excluded_path,
        cleaned.excluded[["doc_id", "text", "price_raw", "reason"]].to_csv(index=False),
        name="prepare_catalogue/excluded_prices.csv",
    )
    catalogue_path = out_dir / "catalogue.csv"
    write_text_file(
        catalogue_path, kept[["doc_id", "brand"]].to_csv(index=False), name="prepare_catalogue/catalogue.csv"
    )
    corpus = pd.DataFrame(
        {
            "doc_id": kept["doc_id"],
            "text": kept["text"],
            "text_pair": None,
            "label": kept["label"].astype("float64"),
            "label_set": None,
            "group": kept["group"] if has_groups else None,
        }
    )
    store = ArtifactStore(context.artifacts_root, context.run_id)
    metadata = {"source": str(path), "price_rule": cleaned.describe()}
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
    metrics = {
        "rows_read": float(len(frame)),
        "rows_kept": float(len(cleaned.kept)),
        "rows": float(len(kept)),
        "excluded": float(len(cleaned.excluded)),
        "log_fence_low": cleaned.log_fence[0],
        "log_fence_high": cleaned.log_fence[1],
        "categories": float(kept["group"].nunique()) if has_groups else 0.0,
        "in_other_category": float((kept["group"] == OTHER_CATEGORY).sum()) if has_groups else 0.0,
    } | {f"excluded_{k}": float(v) for k, v in cleaned.counts.items()}
    return StageResult(
        "prepare_catalogue",
        {"corpus": ref, "train": train_ref},
        metrics,
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


def _rules(rules: list[dict[str, str]] | None) -> tuple[AttributeRule, ...] | None:
    return None if rules is None else tuple(AttributeRule(**r) for r in rules)


def _examples(
    frame: pd.DataFrame, predicted_price: np.ndarray, held_out: np.ndarray, word_scores: dict, count: int
) -> list[ExampleListing]:
    """Held-out listings with the smallest relative error, one per category first (METHOD-NOTES:
    listings within 1% of the price are too few with a model of this quality, so take the best N)."""
    candidates = np.flatnonzero(held_out) if held_out.any() else np.arange(len(frame))
    error = np.abs(np.log(predicted_price[candidates]) - np.log(frame["label"].to_numpy()[candidates]))
    order = candidates[np.argsort(error, kind="stable")]
    picked: list[int] = []
    seen: set[object] = set()
    for i in order:
        if frame["group"].iloc[i] not in seen:
            picked.append(int(i))
            seen.add(frame["group"].iloc[i])
        if len(picked) == count:
            break
    picked += [int(i) for i in order if int(i) not in picked][: count - len(picked)]
    out = []
    for i in picked:
        doc_id, text = frame["doc_id"].iloc[i], frame["text"].iloc[i]
        words = text.split()
        scores = word_scores.get(doc_id, {})
        out.append(
            ExampleListing(
                doc_id,
                frame["group"].iloc[i],
                tuple((w, float(scores.get(j, 0.0))) for j, w in enumerate(words)),
                float(frame["label"].iloc[i]),
                float(predicted_price[i]),
            )
        )
    return out


@task(name="price_drivers", cache_key_fn=stage_cache_key, persist_result=True)
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
    ``batch_size``, ``holdout_fraction``, ``examples``, ``top_k``, ``title``, ``baseline_alpha``.
    """
    started = time.perf_counter()
    logger = get_run_logger()
    loaded = loaded_model(model)
    view = read_corpus(corpus, loaded)
    frame = view.frame
    doc_ids = view.doc_ids
    brands = pd.read_csv(catalogue, dtype=str, keep_default_na=False, na_values=[""]).set_index("doc_id")["brand"]
    outputs = predict_logits(loaded, view.encoded, batch_size=options["batch_size"])[:, 0]
    transform = loaded.output_transform
    predicted_price = to_price(outputs, transform)

    chunks = None
    if options["noun_chunks"]:
        chunks = noun_chunk_spans(load_spacy(options["spacy_model"]), frame["text"].tolist())
    rules = _rules(options["rules"])
    units = [
        extract_units(
            text,
            brand=brands.get(doc_id) if isinstance(brands.get(doc_id), str) else None,
            chunks=chunks[i] if chunks is not None else (),
            **({"rules": rules} if rules is not None else {}),
        )
        for i, (doc_id, text) in enumerate(zip(doc_ids, frame["text"], strict=True))
    ]
    scores = word_score_table(read_artifact(attributions).to_pandas(), doc_ids)
    groups = [g if isinstance(g, str) else None for g in frame["group"]]

    def predict(encoded: list) -> np.ndarray:
        return predict_logits(loaded, encoded, batch_size=options["batch_size"])[:, 0]

    occurrences = driver_occurrences(
        doc_ids,
        groups,
        view.encoded,
        units,
        scores,
        outputs,
        predict,
        output_transform=transform,
        replacement=replacement_id(loaded.tokenizer, options["replacement"]),
        min_texts=options["min_texts"],
        effect=options["effect"],
        progress=StageProgress("price_drivers-mask") if options["effect"] == "mask" else None,
    )
    per_group = {ALL_CATEGORIES: len(doc_ids)} | {str(k): int(v) for k, v in pd.Series(groups).value_counts().items()}
    drivers = aggregate_drivers(
        occurrences,
        per_group,
        min_texts=options["min_texts"],
        confidence=options["confidence"],
        resamples=options["resamples"],
        seed=options["seed"],
    )

    held_out = holdout_mask(doc_ids, options["holdout_fraction"], options["seed"])
    prices = frame["label"].to_numpy(dtype=np.float64)
    texts = frame["text"].tolist()
    train_idx, test_idx = np.flatnonzero(~held_out), np.flatnonzero(held_out)
    if len(test_idx) < 2:
        raise ValueError(f"only {len(test_idx)} held-out listings; raise model.holdout_fraction or add listings")
    baseline_target = np.log(prices) if transform == "log" else prices
    baseline = fit_linear_baseline(
        [texts[i] for i in train_idx], baseline_target[train_idx], alpha=options["baseline_alpha"]
    )
    model_quality = regression_quality(outputs[test_idx], prices[test_idx], transform=transform)
    base_quality = regression_quality(
        baseline.predict([texts[i] for i in test_idx]), prices[test_idx], transform=transform
    )
    quality_rows = [
        {"model": f"explained model ({Path(model.source).name})", **model_quality},
        {"model": f"TF-IDF + ridge, alpha {baseline.alpha:g} ({baseline.backend})", **base_quality},
    ]

    out_dir = context.artifacts_root / context.run_id / "price_drivers"
    ref = ArtifactStore(context.artifacts_root, context.run_id).write(
        "price_drivers",
        "price_drivers",
        "drivers",
        pa.Table.from_pandas(drivers, preserve_index=False),
        metadata={
            "method": options["method"],
            "effect": options["effect"],
            "replacement": options["replacement"],
            "output_transform": transform,
        },
    )
    excluded_frame = pd.read_csv(excluded, dtype=str, keep_default_na=False)
    found = excluded_frame["reason"].value_counts().to_dict() if len(excluded_frame) else {}
    counts = {reason: int(found.get(reason, 0)) for reason in PRICE_PROBLEMS}
    examples_excluded = excluded_frame.groupby("reason", sort=True).head(3) if len(excluded_frame) else excluded_frame
    data = PriceReportData(
        title=options["title"],
        drivers=drivers,
        quality=quality_rows,
        actual=prices[test_idx],
        predicted=predicted_price[test_idx],
        price_rule=price_rule,
        excluded_counts={k: int(v) for k, v in counts.items()},
        excluded_examples=examples_excluded.reset_index(drop=True),
        examples=_examples(frame, predicted_price, held_out, scores, options["examples"]),
        baseline_terms=baseline.top_terms(12),
        settings={
            "attribution method": options["method"],
            "effect": "masked forward pass per driver occurrence"
            if options["effect"] == "mask"
            else "estimated from attributions (y - attribution)",
            "replacement": options["replacement"],
            "listings": f"{len(doc_ids):,} ({len(train_idx):,} train / {len(test_idx):,} held out)",
            "driver occurrences": f"{len(occurrences):,} (drivers in >= {options['min_texts']} listings)",
            "categories": f"{len(per_group) - 1}",
        },
        top_k=options["top_k"],
    )
    figures = report_figures(data)
    plot_paths: dict[str, str] = {}
    for name, fig in figures.items():
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
        path = out_dir / "plots" / f"{name}.png"
        write_binary_file(path, buffer.getvalue(), name=f"price_drivers/plots/{name}.png")
        plot_paths[name] = str(path)
    report = render_price_report(data, figures)
    report_path = out_dir / "report.html"
    write_text_file(report_path, report, name="price_drivers/report.html")
    overall = drivers[drivers["scope"] == "overall"]
    metrics = {
        "r2": model_quality["r2"],
        "mape": model_quality["mape"],
        "baseline_r2": base_quality["r2"],
        "baseline_mape": base_quality["mape"],
        "held_out": float(len(test_idx)),
        "occurrences": float(len(occurrences)),
        "drivers_overall": float(len(overall)),
        "drivers_per_category": float((drivers["scope"] == "category").sum()),
    }
    logger.info(
        "price drivers: %d overall, model R^2 %.3f vs baseline %.3f -> %s",
        len(overall),
        metrics["r2"],
        metrics["baseline_r2"],
        report_path,
    )
    return StageResult(
        "price_drivers",
        {"drivers": ref},
        metrics,
        {
            "report": str(report_path),
            "plots": json.dumps(plot_paths),
            "method": options["method"],
            "effect": options["effect"],
            "replacement": options["replacement"],
        },
        time.perf_counter() - started,
    )


__all__ = [
    "prepare_catalogue_stage",
    "price_drivers_stage",
]
