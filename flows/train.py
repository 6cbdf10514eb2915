"""The ``train`` flow: corpus file in -> fine-tuned model directory out, tracked in MLflow.

Stages: ``fine_tune`` (read, split, fine-tune with early stopping, optionally LDAV), then the
MLflow record (per-epoch validation metrics as steps, the model directory as the run's ``model``
artifact) and, when configured, the LDAV concept table (Sections 4.7-4.9).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from flows.runtime import fine_tune, flow_run, new_run_id, publish_markdown
from flows.train_settings import TrainSettings
from storage import inside
from storage.text_files import write_text_file
from tasks import tracking
from tasks.fine_tune import CorpusFile
from tasks.train_model import log_directory, log_history, training_summary
from xattr.training.trainer import LdavConfig, TrainConfig


def train_config(settings: TrainSettings) -> TrainConfig:
    """The library's hyper-parameters from the flow settings."""
    return settings.training.train_config(
        # a validation file replaces the hold-out split
        validation_fraction=None if settings.split.validation_path else settings.split.validation_fraction,
        split_seed=settings.split.seed,
        ldav=LdavConfig(**settings.ldav.model_dump()),
    )


def _markdown(frame: Any) -> str:
    """A pandas frame as a markdown table (numbers to 3 decimals)."""
    cells = [[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row] for row in frame.itertuples(index=False)]
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "---|" * len(frame.columns)
    return "\n".join([header, rule, *["| " + " | ".join(row) + " |" for row in cells]])


def _concept_tables(model_dir: Path, settings: TrainSettings) -> dict[str, Any]:
    """LDAV concept scores and class-vector correlations of the trained model."""
    from xattr.ldav import class_vector_correlation, concept_scores, load_ldav_vectors
    from xattr.models.loading import load_model

    loaded = load_model(model_dir, device="cpu")
    concepts: dict[str, str | list[str]] = {p: p for p in settings.concepts.phrases}
    concepts.update(settings.concepts.word_lists)
    scores = concept_scores(loaded, concepts) if concepts else None
    correlation = class_vector_correlation(load_ldav_vectors(model_dir))
    return {"scores": scores, "correlation": correlation}


@flow(name="train", log_prints=True)
def train(settings: TrainSettings) -> dict[str, Any]:
    """Fine-tune ``settings.base_model`` on the corpus and save the model directory.

    Args:
        settings: The resolved configuration (see ``flows.train_settings.TrainSettings``).

    Returns:
        The training summary plus ``mlflow_run_id``, ``tracking_uri`` and, with concepts, the
        ``concepts`` table as records.
    """
    logger = get_run_logger()
    workdir = settings.workdir.resolve()
    run_id = new_run_id()
    output_dir = (settings.output_dir or inside(workdir / "models", f"{settings.name}-{run_id}")).resolve()
    with flow_run(settings, flow="train", run_id=run_id) as run:
        uri, parent = run.tracking_uri, run.parent_run_id
        logger.info("train run %s: model -> %s", run_id, output_dir)
        corpus = settings.corpus
        trained = fine_tune(
            run,
            CorpusFile(
                corpus.path, corpus.columns(), settings.split.validation_path, corpus.empty_texts, corpus.missing_labels
            ),
            settings.base_model,
            train_config(settings),
            task=settings.task,
            stage=f"train-{settings.name}",
            output_dir=str(output_dir),
        )
        summary = training_summary(trained)
        log_history(uri, parent, summary["history"])
        log_directory(uri, parent, output_dir, "model")
        report = output_dir.parent / f"{output_dir.name}.train.json"
        write_text_file(report, json.dumps(summary, indent=2, default=str), name="train report")
        run.log_files({"": report})
        lines = [
            f"# train `{settings.name}`",
            "",
            f"Model: `{output_dir}` ({summary['task']}, {summary['train_rows']} training rows, "
            f"{summary['validation_rows']} validation rows, LDAV {'on' if settings.ldav.enabled else 'off'}).",
            f"Epochs run: {summary['epochs_run']} (best {summary['best_epoch']}, stopped early: "
            f"{summary['stopped_early']}).",
            "",
            "| metric | value |",
            "|---|---|",
            *[f"| {k} | {v:.4f} |" for k, v in summary["metrics"].items()],
        ]
        if settings.ldav.enabled:
            tables = _concept_tables(output_dir, settings)
            correlation_csv = output_dir.parent / f"{output_dir.name}.ldav-correlation.csv"
            write_text_file(correlation_csv, tables["correlation"].to_csv(), name="LDAV class-vector correlation")
            run.log_files({"ldav": correlation_csv})
            lines += [
                "",
                "## LDAV class-vector correlation (Section 4.9)",
                "",
                _markdown(tables["correlation"].reset_index(names="class")),
            ]
            if tables["scores"] is not None:
                concepts_csv = output_dir.parent / f"{output_dir.name}.ldav-concepts.csv"
                write_text_file(concepts_csv, tables["scores"].to_csv(index=False), name="LDAV concept scores")
                run.log_files({"ldav": concepts_csv})
                summary["concepts"] = tables["scores"].to_dict("records")
                lines += ["", "## LDAV concept scores (Table 9)", "", _markdown(tables["scores"])]
        markdown = "\n".join(lines) + "\n"
        tracking.log_text(uri, parent, markdown, "summary.md")
        publish_markdown(markdown, key="xattr-train", description="xattr train summary")
        run.headline = {f"best/{k}": float(v) for k, v in summary["metrics"].items()}
        run.headline.update(epochs_run=float(summary["epochs_run"]), best_epoch=float(summary["best_epoch"]))
        run.headline["seconds"] = float(summary["seconds"])
    summary.update(mlflow_run_id=parent, tracking_uri=uri, run_id=run_id)
    return summary


@flow(name="train-from-config", log_prints=True)
def train_from_config(config: str) -> dict[str, Any]:
    """Deployment entry point: read the YAML config at ``config`` and run :func:`train`."""
    from flows.train_settings import load_train_settings

    return train(load_train_settings(config))
