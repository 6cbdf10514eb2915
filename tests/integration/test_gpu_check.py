"""bench/gpu_check.py runs before any GPU does: its smoke mode, with what the GPU machine lacks blocked.

The GPU machine has no prefect, mlflow, faiss or spacy (pydantic and captum travel as wheels, see
bench/gpu_check.sh), so the smoke run blocks those modules, and storage, tasks and flows: the check
runs the pure library only. CPU serves as both devices; the memory probe gets injected numbers.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BLOCKED = ("prefect", "mlflow", "faiss", "spacy", "storage", "tasks", "flows")

RUNNER = """
import importlib.abc, runpy, sys
BLOCKED = {blocked!r}
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked: the GPU machine lacks it)", name=name)
        return None
sys.meta_path.insert(0, Blocker())
sys.argv = ["bench/gpu_check.py", *{args!r}]
try:
    runpy.run_path("bench/gpu_check.py", run_name="__main__")
finally:
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    print("BLOCKED MODULES LOADED:", loaded)
"""


def run_check(tmp_path: Path, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    code = RUNNER.format(blocked=BLOCKED, args=[*args, "--out", str(tmp_path)])
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.mark.integration
def test_smoke_run_covers_every_method_and_cell_without_the_missing_modules(tmp_path: Path) -> None:
    from xattr.methods import available_methods

    done = run_check(tmp_path, "--smoke", "--budget-s", "1500", timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "BLOCKED MODULES LOADED: []" in done.stdout
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert result["skipped"] == []
    correctness = {row["method"]: row for row in result["correctness"]}
    assert set(correctness) == set(available_methods())
    assert all(row["ok"] and row["max_rel_error"] == 0.0 for row in correctness.values()), correctness
    cells = {(row["shape"], row["method"], row["bf16"]): row for row in result["throughput"]}
    timed = ("encode", "simple_grad", "lafa", "grad_input", "integrated_gradients", "lrp", "lrp_rollout")
    assert set(cells) == {(s, m, b) for s in ("minilm", "bert-base") for m in timed for b in (False, True)}
    for row in cells.values():
        assert "error" not in row, row
        assert row["best_texts_per_s"] > 0
        # Injected memory: 20 MiB free, 1 MiB per text, 80% usable -> 16 texts per batch.
        assert row["per_text_bytes"] == 1 << 20 and row["memory_batch"] == 16
        assert set(row["texts_per_s"]) == {"4", "8"}  # the small batch and the cap (8 < 16)
        if row["bf16"]:
            assert -1.0 <= row["spearman_min"] <= row["spearman_mean"] <= 1.0
    assert result["knn"]["recall_at_10"] == 1.0  # float32 torch search vs float64 exact
    figures = result["extrapolated_1m_seconds"]
    assert set(figures) == {"fp32", "bf16"}  # the CPU line needs a device other than the CPU
    assert all(v > 0 for v in figures["fp32"].values())
    assert result["measured_end_to_end"]["texts"] > 0
    assert "== summary" in done.stdout and "1M texts end to end" in done.stdout


@pytest.mark.integration
def test_the_deadline_skips_what_is_left_and_says_so(tmp_path: Path) -> None:
    done = run_check(tmp_path, "--smoke", "--budget-s", "0", timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert result["correctness"] == [] and result.get("throughput", []) == []
    assert {"knn", "throughput minilm", "throughput bert-base", "measured end to end"} <= set(result["skipped"])
    assert "skipped (deadline): knn" in done.stdout and "skipped at the deadline:" in done.stdout
