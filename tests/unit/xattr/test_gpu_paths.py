"""What the GPU machine needs of the library, checked on the CPU.

The GPU machine has no prefect, mlflow, faiss or spacy: the library imports and runs without them.
Eager attention (slow, materialised attention maps) is used only by the methods that read
attention weights; every other method runs the model's own (sdpa) attention.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from xattr.heads.masks import HeadMasks
from xattr.ldav.vectors import LdavVectors
from xattr.methods import attribute_corpus, available_methods, get_method
from xattr.methods.context import MethodContext
from xattr.models.encoding import encode_texts
from xattr.models.loading import load_model

ROOT = Path(__file__).resolve().parents[3]

#: The methods whose scores are made from attention weights (and LRP, which propagates through them).
READS_ATTENTION = {
    "attcat", "cam", "gae", "grad_cam", "raw_attention", "rollout", "lrp", "lrp_rollout", "mask_lrp", "partial_lrp"
}  # fmt: skip

WITHOUT_GPU_MACHINE_MODULES = """
import importlib, importlib.abc, pkgutil, sys
BLOCKED = {"prefect", "mlflow", "faiss", "spacy", "storage", "tasks", "flows"}
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
        return None
sys.meta_path.insert(0, Blocker())
import xattr
failed = []
for info in pkgutil.walk_packages(xattr.__path__, "xattr."):
    try:
        importlib.import_module(info.name)
    except ImportError as exc:
        failed.append(f"{info.name}: {exc}")
print("FAILED:", failed)
sys.path.insert(0, "tests")
from pathlib import Path
import tempfile
import numpy as np
from conftest import save_tiny_model
from xattr.methods import MethodContext, attribute_corpus, get_method
from xattr.models.encoding import encode_texts
from xattr.models.forward import mean_pooled_hidden_states
from xattr.models.loading import load_model
from xattr.neighbours.index import TorchExactIndex
from xattr.neighbours.selection import NeighbourRequest, select_neighbours
loaded = load_model(save_tiny_model(Path(tempfile.mkdtemp()) / "m"))
texts = ["the movie was good", "a bad plot", "great acting , fun film", "boring and awful", "good fun"]
corpus = encode_texts(loaded.tokenizer, texts, max_length=32)
vectors = mean_pooled_hidden_states(loaded, corpus, layer=-1)
selection = select_neighbours(TorchExactIndex(vectors), vectors, NeighbourRequest(2, None))
for name in ("simple_grad", "lafa"):
    context = MethodContext(corpus=corpus, neighbours=selection.neighbours)
    scores = attribute_corpus(get_method(name), loaded, corpus, [[1]] * len(corpus), context=context)
    print(name, "finite", all(np.isfinite(s.scores).all() and s.scores.any() for s in scores))
print("LOADED:", sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED))
"""


def test_library_imports_and_runs_without_prefect_mlflow_faiss_and_spacy() -> None:
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_GPU_MACHINE_MODULES], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "FAILED: []" in done.stdout, done.stdout
    assert "simple_grad finite True" in done.stdout and "lafa finite True" in done.stdout
    assert "LOADED: []" in done.stdout


def test_eager_attention_only_for_the_methods_that_read_attention(tiny_classifier_dir: Path) -> None:
    loaded = load_model(tiny_classifier_dir, device="cpu")
    loaded.model.set_attn_implementation("sdpa")
    seen: list[str] = []
    hook = loaded.model.register_forward_pre_hook(lambda module, args: seen.append(module.config._attn_implementation))
    corpus = encode_texts(loaded.tokenizer, ["the movie was good", "a bad plot , boring"], max_length=32)
    config = loaded.model.config
    kept = np.ones((config.num_hidden_layers, config.num_attention_heads), dtype=bool)
    z = torch.randn((2, config.hidden_size), generator=torch.Generator().manual_seed(0))
    context_resources = {
        "neighbours": {0: [1], 1: [0]},
        "head_masks": HeadMasks(kept, kept),
        "ldav_vectors": LdavVectors(z, False, 1.0, 1.0, "cosine", "predicted", ("0", "1")),
    }
    eager = set()
    try:
        for name in available_methods():
            seen.clear()
            context = MethodContext(corpus=corpus, **context_resources)
            attribute_corpus(get_method(name), loaded, corpus, [[1], [0]], context=context)
            assert seen or name in {"random", "ldav"}, name  # these read no model output (ldav: word embeddings)
            if "eager" in seen:
                eager.add(name)
            assert loaded.model.config._attn_implementation == "sdpa", name  # restored after the run
    finally:
        hook.remove()
    assert eager == READS_ATTENTION
