"""GPU check: every method on CUDA equals CPU, throughput per method and shape, 1M-text figures.

Runs the pure library (``xattr/``) on random BERTs built from a config (random weights cost what
trained ones do), in one run inside a global deadline (remaining sections are skipped and named):

1. correctness: every registered method on the device equals CPU on one small batch, same seeded
   weights, float32, within the tolerance of :data:`TOLERANCES` (max |device - cpu| of a text over
   the text's max |cpu|);
2. throughput (texts/s) of encode, simple_grad, grad_input, integrated_gradients (25 steps), lafa,
   lrp and lrp_rollout with MiniLM's shape and BERT-base's, float32 and bf16 autocast, at batch
   sizes up to the one free memory allows (:func:`xattr.device.batch_size_for_memory`), with, for
   bf16, the per-text Spearman of the scores against float32;
3. exact nearest-neighbour search over 1M x 384 vectors with :class:`TorchExactIndex` and its
   recall@10 against float64 exact search on a sample;
4. the same work on the CPU (a sample, for the ratio) and the extrapolated 1M-text end to end
   (tokenise, encode, neighbours, simple_grad, lafa), measured on as many texts as time allows.

It prints one table and writes ``gpu_check.json`` to ``$OUT`` (or ``--out``) when set.

    python3 bench/gpu_check.py            # on the GPU machine (bench/gpu_check.sh carries what it needs)
    python3 bench/gpu_check.py --smoke    # tiny shapes, CPU as both devices, memory probe injected
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast  # noqa: E402

from xattr.device import BatchCost, MemoryStats, batch_size_for_memory, free_memory, measure_batch_cost  # noqa: E402
from xattr.heads.masks import HeadMasks  # noqa: E402
from xattr.ldav.vectors import LdavVectors  # noqa: E402
from xattr.methods import MethodContext, attribute_corpus, available_methods, get_method  # noqa: E402
from xattr.models.encoding import EncodedText, encode_texts  # noqa: E402
from xattr.models.forward import mean_pooled_hidden_states  # noqa: E402
from xattr.models.loading import LoadedModel, from_modules  # noqa: E402
from xattr.neighbours.index import TorchExactIndex, nearest_neighbours, recall_at_k  # noqa: E402
from xattr.neighbours.selection import NeighbourRequest, select_neighbours  # noqa: E402

#: (layers, heads, hidden, intermediate, vocabulary) of the two measured shapes, and of the smoke run's.
SHAPES = {"minilm": (6, 12, 384, 1536, 30522), "bert-base": (12, 12, 768, 3072, 30522)}
SMOKE_SHAPES = {"minilm": (2, 2, 32, 64, 400), "bert-base": (2, 4, 48, 96, 400)}

#: Tolerance of each method's device-vs-CPU comparison (float32): max |device - cpu| over max |cpu|
#: per text. Default for the rest: DEFAULT_TOLERANCE.
DEFAULT_TOLERANCE = (1e-3, "float32 kernels sum in another order (cuBLAS vs MKL): ~1e-6 per op, 1e-3 allowed")
TOLERANCES: dict[str, tuple[float, str]] = {
    "random_scores": (0.0, "draws from a CPU generator: identical"),
    "lrp": (1e-2, "epsilon-rule divisions amplify float32 rounding near small denominators"),
    "lrp_rollout": (1e-2, "as lrp"),
    "partial_lrp": (1e-2, "as lrp"),
    "mask_lrp": (1e-2, "as lrp"),
    "lime": (1e-2, "ridge fit over perturbed outputs (CPU draws) amplifies output rounding"),
    "shap_grad": (1e-2, "sums of gradients over many references"),
    "shap_deep": (1e-2, "sums over many references"),
    "occlusion": (1e-2, "differences of nearly equal logits"),
}
#: Parameters of the correctness run where a method's defaults do not suit it.
CHECK_PARAMS: dict[str, dict[str, Any]] = {
    # SmoothGrad draws its noise on the model's device (documented), so a CUDA draw is not a CPU
    # draw; without noise the CUDA path is compared exactly.
    "smooth_grad": {"noise_scale": 0.0, "samples": 4},
}
#: The measured methods; "encode" is mean-pooled last-layer states (the neighbour embeddings).
TIMED = ("encode", "simple_grad", "lafa", "grad_input", "integrated_gradients", "lrp", "lrp_rollout")
BF16_SPEARMAN_MIN = 0.99
#: The sections, in the order they run (``--only`` picks some).
SECTIONS = ("correctness", "knn", "throughput", "cpu", "e2e")


class Deadline:
    """The run's global time budget: sections ask before they start and are skipped when it is spent."""

    def __init__(self, seconds: float) -> None:
        self.end = time.perf_counter() + seconds
        self.skipped: list[str] = []

    def left(self) -> float:
        return self.end - time.perf_counter()

    def allows(self, what: str, need: float = 0.0) -> bool:
        if self.left() > need:
            return True
        self.skipped.append(what)
        print(f"  skipped (deadline): {what}", flush=True)
        return False


class InjectedMemory:
    """Smoke runs only: stands in for ``torch.cuda`` so the memory-sizing path runs on the CPU.

    A batch of ``r`` texts "peaks" at ``r * per_text_bytes`` above what is allocated; the runner
    wrapped by :meth:`wrap` tells it ``r``.
    """

    def __init__(self, per_text_bytes: int, free_bytes: int) -> None:
        self.per_text, self.free, self.rows = per_text_bytes, free_bytes, 0

    def wrap(self, run: Callable[[int], object]) -> Callable[[int], object]:
        def counted(rows: int) -> object:
            self.rows = rows
            return run(rows)

        return counted

    def mem_get_info(self, device: torch.device) -> tuple[int, int]:
        return self.free, self.free

    def synchronize(self, device: torch.device) -> None:
        pass

    def reset_peak_memory_stats(self, device: torch.device) -> None:
        self.rows = 0

    def memory_allocated(self, device: torch.device) -> int:
        return 0

    def max_memory_allocated(self, device: torch.device) -> int:
        return self.rows * self.per_text

    def memory_reserved(self, device: torch.device) -> int:
        return 0


@dataclasses.dataclass
class Setup:
    smoke: bool
    device: torch.device
    deadline: Deadline
    memory: MemoryStats | None  # None: torch.cuda
    probe_device: torch.device  # the device the memory probe asks about
    batch_cap: int
    small_batch: int
    probe_rows: int  # texts of the smaller memory-probe batch
    cell_seconds: float  # timed work per batch size after the warm-up (up to 3 repeats of the batch)
    knn_n: int
    knn_dim: int
    texts: int
    results: dict[str, Any]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def tokenizer_with_vocabulary(size: int, directory: Path) -> BertTokenizerFast:
    """A word-piece tokenizer whose vocabulary is ``size`` entries: the specials and words ``w0, w1, ...``."""
    words = [f"w{i}" for i in range(size - 5)]
    (directory / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    return BertTokenizerFast(vocab_file=str(directory / "vocab.txt"), do_lower_case=True)


def random_texts(n: int, vocabulary: int, *, seed: int, words: tuple[int, int] = (24, 32)) -> list[str]:
    """``n`` texts of ``words`` random vocabulary words each (about 30 word pieces with [CLS] and [SEP])."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(words[0], words[1] + 1, size=n)
    ids = rng.integers(0, vocabulary - 5, size=int(lengths.sum()))
    out, at = [], 0
    for length in lengths:
        out.append(" ".join(f"w{i}" for i in ids[at : at + length]))
        at += int(length)
    return out


def random_bert(shape: tuple[int, int, int, int, int], *, seed: int = 0) -> BertForSequenceClassification:
    layers, heads, hidden, intermediate, vocabulary = shape
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=vocabulary,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        max_position_embeddings=512,
        num_labels=2,
    )
    return BertForSequenceClassification(config).eval()


def spearman_rows(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> np.ndarray:
    """Per pair of equal-length vectors, Spearman's rho (average ranks for ties); 1.0 for constant pairs."""
    from scipy.stats import spearmanr

    out = []
    for x, y in zip(a, b, strict=True):
        if np.ptp(x) == 0 and np.ptp(y) == 0:
            out.append(1.0)
            continue
        rho = spearmanr(x, y)[0]
        out.append(float(rho) if np.isfinite(rho) else 0.0)
    return np.asarray(out)


def method_context(
    name: str, method: Any, loaded: LoadedModel, corpus: Sequence[EncodedText], neighbours: dict[int, list[int]]
) -> MethodContext:
    """The resources ``method`` asks for: the given neighbours, all-kept head masks with some dropped, LDAV vectors."""
    needs = method.requirements(method.params)
    masks = None
    if needs.head_masks:
        config = loaded.model.config
        keep = np.random.default_rng(1).random((config.num_hidden_layers, config.num_attention_heads)) < 0.5
        masks = HeadMasks(keep, np.zeros_like(keep), source="gpu_check")
    vectors = None
    if needs.ldav_vectors:
        weight = loaded.model.get_input_embeddings().weight
        generator = torch.Generator().manual_seed(2)
        z = torch.randn((loaded.num_outputs, weight.shape[1]), generator=generator)
        vectors = LdavVectors(z.to(weight.device, weight.dtype), False, 1.0, 1.0, "cosine", "predicted", ("0", "1"))
    return MethodContext(
        corpus=corpus,
        neighbours=neighbours if needs.neighbours is not None else {},
        head_masks=masks,
        ldav_vectors=vectors,
    )


def check_correctness(setup: Setup, tokenizer: BertTokenizerFast, shape: tuple[int, ...]) -> None:
    """Section 1: every registered method, device against CPU, float32."""
    print("== correctness: device vs CPU, float32, MiniLM shape", flush=True)
    cpu_model = random_bert(shape, seed=0)
    dev_model = copy.deepcopy(cpu_model).to(setup.device)
    cpu, dev = from_modules(cpu_model, tokenizer), from_modules(dev_model, tokenizer)
    texts = random_texts(4 if setup.smoke else 8, shape[4], seed=7, words=(3, 40))
    corpus = encode_texts(tokenizer, texts, max_length=64)
    targets = [[1]] * len(corpus)
    # The same neighbours on both devices: each text's 3 nearest by mean-pooled CPU states, no cut-off.
    vectors = mean_pooled_hidden_states(cpu, corpus, layer=-1)
    _, ids = nearest_neighbours(TorchExactIndex(vectors), vectors, 3)
    neighbours = {i: [int(j) for j in row if j >= 0] for i, row in enumerate(ids)}
    rows = []
    for name in available_methods():
        if not setup.deadline.allows(f"correctness {name}", 5.0):
            continue
        tolerance, why = TOLERANCES.get(name, DEFAULT_TOLERANCE)
        row: dict[str, Any] = {"method": name, "tolerance": tolerance, "why": why}
        try:
            params = CHECK_PARAMS.get(name, {})
            results = []
            for loaded in (cpu, dev):
                method = get_method(name, params)
                context = method_context(name, method, loaded, corpus, neighbours)
                results.append(attribute_corpus(method, loaded, corpus, targets, context=context, batch_size=4))
            errors = [
                float(np.max(np.abs(d.scores - c.scores)) / max(float(np.max(np.abs(c.scores))), 1e-30))
                for c, d in zip(*results, strict=True)
            ]
            rho = spearman_rows([c.scores for c in results[0]], [d.scores for d in results[1]])
            row |= {"max_rel_error": max(errors), "min_spearman": float(rho.min())}
            row["ok"] = bool(max(errors) <= tolerance)
        except Exception as exc:  # one method's failure is a row of the table, not the end of the run
            row |= {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
        rows.append(row)
        status = "ok" if row["ok"] else "FAIL"
        detail = (
            row.get("error") or f"err {row['max_rel_error']:.2e} (tol {tolerance:.0e}) rho {row['min_spearman']:.4f}"
        )
        print(f"  {name:22s} {status:4s} {detail}", flush=True)
    setup.results["correctness"] = rows


class Cell:
    """One method on one model on one device: runs batches of a corpus and times them."""

    def __init__(
        self,
        name: str,
        loaded: LoadedModel,
        corpus: Sequence[EncodedText],
        neighbours: Callable[[int], dict[int, list[int]]],
        bf16: bool,
    ) -> None:
        self.name, self.corpus, self.neighbours, self.bf16 = name, corpus, neighbours, bf16
        self.loaded = dataclasses.replace(loaded, autocast_dtype=torch.bfloat16 if bf16 else None)
        params: dict[str, Any] = {}
        if name == "integrated_gradients":
            params = {"steps": 25}
        self.params = params

    def run(self, n: int, batch_size: int) -> list[np.ndarray]:
        """Scores (or embeddings, for encode) of the first ``n`` texts in batches of ``batch_size``."""
        corpus = list(self.corpus[:n])
        loaded = self.loaded
        device_type = loaded.device.type
        autocast = (
            torch.autocast(device_type, dtype=torch.bfloat16)
            if self.bf16
            else torch.autocast(device_type, enabled=False)
        )
        with autocast:
            if self.name == "encode":
                return list(mean_pooled_hidden_states(loaded, corpus, layer=-1, batch_size=batch_size))
            params = dict(self.params)
            if self.name == "integrated_gradients":
                # Every (text, step) row of a batch in one pass, at least IG's default 256.
                params["rows_per_pass"] = max(256, batch_size)
            method = get_method(self.name, params)
            context = method_context(self.name, method, loaded, corpus, self.neighbours(n))
            out = attribute_corpus(method, loaded, corpus, [[1]] * n, context=context, batch_size=batch_size)
        return [a.scores for a in out]


def measure_cell(setup: Setup, cell: Cell, cost: BatchCost | None, label: str) -> dict[str, Any]:
    """Texts/s of one cell at a small batch and at the largest that memory allows (capped), timed after a warm-up."""
    device = cell.loaded.device
    row: dict[str, Any] = {"cell": label, "method": cell.name, "bf16": cell.bf16}
    free = free_memory(setup.probe_device, memory=setup.memory) if setup.memory or device.type == "cuda" else None
    limit = setup.batch_cap
    if cost is not None and free is not None:
        limit = batch_size_for_memory(free, cost, limit=setup.batch_cap)
        row |= {"per_text_bytes": cost.per_text_bytes, "free_bytes": free}
        row["memory_batch"] = batch_size_for_memory(free, cost)
    rates: dict[int, float] = {}
    small = min(setup.small_batch, limit)
    for size in (small, limit):
        if size in rates:
            continue
        if size != small and setup.cell_seconds > 0 and rates.get(small, 0.0) > 0:
            # The large batch is kept to ~1.5 cell_seconds of work at the small batch's rate (a
            # larger batch runs faster), so slow cells (IG, BERT-base LRP) stay inside the budget.
            by_time = int(rates[small] * 1.5 * setup.cell_seconds) // 8 * 8
            size = min(size, max(small, by_time))
            row["time_capped_batch"] = size < limit
            if size in rates:
                break
        if not setup.deadline.allows(f"{label} batch {size}", 10.0):
            break
        try:
            sync(device)
            started = time.perf_counter()
            cell.run(size, size)  # warm-up (and the time of one batch)
            sync(device)
            one = time.perf_counter() - started
            reps = int(max(1, min(3, setup.cell_seconds // max(one, 1e-6))))
            n = min(len(cell.corpus), size * reps)
            started = time.perf_counter()
            cell.run(n, size)
            sync(device)
            rates[size] = n / (time.perf_counter() - started)
        except torch.cuda.OutOfMemoryError:
            rates[size] = float("nan")
            row["oom_at"] = size
            torch.cuda.empty_cache()
    row["texts_per_s"] = {str(k): v for k, v in rates.items()}
    row["best_texts_per_s"] = max((v for v in rates.values() if v == v), default=float("nan"))
    return row


def probe_cost(setup: Setup, cell: Cell) -> BatchCost | None:
    """Memory per text of a cell (two probe batches), or ``None`` where the device has no memory statistics."""
    if setup.memory is None and cell.loaded.device.type != "cuda":
        return None
    run: Callable[[int], object] = lambda r: cell.run(r, r)  # noqa: E731
    if isinstance(setup.memory, InjectedMemory):
        run = setup.memory.wrap(run)
    return measure_batch_cost(run, setup.probe_device, rows=setup.probe_rows, memory=setup.memory)


def throughput(setup: Setup, tokenizer: BertTokenizerFast, corpus: list[EncodedText]) -> None:
    """Section 2: texts/s per (shape, method, precision), bf16 rankings against float32."""
    print("== throughput: texts/s (batch: rate), bf16 Spearman vs float32", flush=True)
    rows = setup.results.setdefault("throughput", [])
    shapes = SMOKE_SHAPES if setup.smoke else SHAPES
    neighbour_cache: dict[int, dict[int, list[int]]] = {}

    def neighbours(n: int) -> dict[int, list[int]]:
        # LAFA's cost depends on how many neighbours a text has, not on which: M = 10, no cut-off.
        if n not in neighbour_cache:
            generator = torch.Generator().manual_seed(3)
            vectors = torch.randn((n, 64), generator=generator)
            index = TorchExactIndex(vectors, setup.device)
            request = NeighbourRequest(max_neighbours=10, epsilon_quantile=None)
            neighbour_cache[n] = select_neighbours(index, vectors.numpy(), request).neighbours
        return neighbour_cache[n]

    for shape_name, shape in shapes.items():
        if not setup.deadline.allows(f"throughput {shape_name}", 20.0):
            continue
        model = random_bert(shape, seed=0).to(setup.device)
        loaded = from_modules(model, tokenizer)
        for name in TIMED:
            costs: dict[bool, BatchCost | None] = {}
            for bf16 in (False, True):
                label = f"{shape_name} {name} {'bf16' if bf16 else 'fp32'}"
                if not setup.deadline.allows(label, 15.0):
                    continue
                cell = Cell(name, loaded, corpus, neighbours, bf16)
                try:
                    costs[bf16] = probe_cost(setup, cell)
                    row = measure_cell(setup, cell, costs[bf16], label)
                    row["shape"] = shape_name
                    if bf16 and setup.deadline.allows(f"{label} spearman", 10.0):
                        n = min(256, len(corpus), 2 * setup.small_batch)
                        base = Cell(name, loaded, corpus, neighbours, False).run(n, min(n, setup.small_batch))
                        low = cell.run(n, min(n, setup.small_batch))
                        rho = spearman_rows(base, low)
                        row |= {
                            "spearman_min": float(rho.min()),
                            "spearman_p01": float(np.quantile(rho, 0.01)),
                            "spearman_mean": float(rho.mean()),
                            "share_spearman_ge_0.99": float((rho >= BF16_SPEARMAN_MIN).mean()),
                        }
                except Exception as exc:  # a failed cell is a row of the table, not the end of the run
                    row = {"cell": label, "shape": shape_name, "method": name, "bf16": bf16}
                    row["error"] = f"{type(exc).__name__}: {exc}"[:300]
                rows.append(row)
                print("  " + format_cell(row), flush=True)
        del model, loaded
        if setup.device.type == "cuda":
            torch.cuda.empty_cache()


def format_cell(row: dict[str, Any]) -> str:
    if "error" in row:
        return f"{row['cell']:36s} ERROR {row['error']}"
    rates = " ".join(f"{k}:{v:,.0f}" for k, v in row["texts_per_s"].items())
    extra = f" mem-batch {row['memory_batch']:,}" if "memory_batch" in row else ""
    if "spearman_min" in row:
        extra += f" rho min {row['spearman_min']:.4f} mean {row['spearman_mean']:.4f}"
    return f"{row['cell']:36s} {rates}{extra}"


def knn(setup: Setup) -> None:
    """Section 3: exact neighbours of every vector among n x dim on the device; recall@10 vs float64 exact."""
    n, dim, k = setup.knn_n, setup.knn_dim, 10
    print(f"== neighbours: {n:,} x {dim} exact search on {setup.device}", flush=True)
    if not setup.deadline.allows("knn", 40.0):
        return
    generator = torch.Generator(device=setup.device).manual_seed(4)
    # Clustered, as text embeddings are: 1000 centres plus noise.
    centres = torch.randn((1000, dim), generator=generator, device=setup.device)
    pick = torch.randint(0, 1000, (n,), generator=generator, device=setup.device)
    vectors = centres[pick] + 0.5 * torch.randn((n, dim), generator=generator, device=setup.device)
    index = TorchExactIndex(vectors, setup.device, block_bytes=4 << 30)
    sync(setup.device)
    started = time.perf_counter()
    distances, ids = nearest_neighbours(index, vectors.cpu().numpy(), k, device=setup.device)
    sync(setup.device)
    seconds = time.perf_counter() - started
    rng = np.random.default_rng(0)
    sample = np.sort(rng.choice(n, size=min(1000, n), replace=False))
    exact = vectors.double()
    queries = exact[torch.as_tensor(sample, device=setup.device)]
    full = (queries.pow(2).sum(1, keepdim=True) - 2 * queries @ exact.T + exact.pow(2).sum(1)).clamp_(min=0)
    full[torch.arange(len(sample)), torch.as_tensor(sample, device=setup.device)] = float("inf")
    truth = torch.topk(full, k, dim=1, largest=False).indices.cpu().numpy()
    recall = recall_at_k(ids[sample], truth)
    row = {"n": n, "dim": dim, "k": k, "seconds": seconds, "queries_per_s": n / seconds, "recall_at_10": recall}
    print(f"  all {n:,} queries: {seconds:.1f} s ({n / seconds:,.0f} queries/s), recall@10 vs float64 {recall:.4f}")
    # The CPU's rate for the ratio, from a slice of the queries against the whole set.
    if setup.device.type != "cpu" and setup.deadline.allows("knn cpu", 30.0):
        cpu_index = TorchExactIndex(vectors.cpu(), "cpu", block_bytes=1 << 30)
        m = min(n, 2000)
        started = time.perf_counter()
        cpu_index.search(vectors[:m].cpu().numpy(), k + 1)
        row["cpu_queries_per_s"] = m / (time.perf_counter() - started)
        print(f"  CPU ({torch.get_num_threads()} threads): {row['cpu_queries_per_s']:,.0f} queries/s on {m:,} queries")
    setup.results["knn"] = row
    del index, vectors, exact, full


def cpu_rates(setup: Setup, tokenizer: BertTokenizerFast, corpus: list[EncodedText]) -> None:
    """Section 4a: the CPU's texts/s for the 1M figure's methods (MiniLM shape, float32), for the ratio."""
    if setup.device.type == "cpu":
        return
    print(f"== CPU rates ({torch.get_num_threads()} threads), MiniLM shape, float32", flush=True)
    shape = (SMOKE_SHAPES if setup.smoke else SHAPES)["minilm"]
    loaded = from_modules(random_bert(shape, seed=0), tokenizer)
    rates = {}
    for name in ("encode", "simple_grad", "lafa"):
        if not setup.deadline.allows(f"cpu {name}", 15.0):
            continue
        cell = Cell(name, loaded, corpus, lambda n: cpu_neighbours(n), False)
        cell.run(32, 32)
        started = time.perf_counter()
        cell.run(128, 64)
        rates[name] = 128 / (time.perf_counter() - started)
        print(f"  {name:12s} {rates[name]:,.0f} texts/s", flush=True)
    setup.results["cpu_texts_per_s"] = rates


def cpu_neighbours(n: int) -> dict[int, list[int]]:
    vectors = torch.randn((n, 64), generator=torch.Generator().manual_seed(3))
    request = NeighbourRequest(max_neighbours=10, epsilon_quantile=None)
    return select_neighbours(TorchExactIndex(vectors), vectors.numpy(), request).neighbours


def best_rate(setup: Setup, method: str, bf16: bool) -> float:
    for row in setup.results.get("throughput", []):
        if row.get("shape") == "minilm" and row["method"] == method and row["bf16"] == bf16 and "error" not in row:
            return float(row["best_texts_per_s"])
    return float("nan")


def end_to_end(setup: Setup, tokenizer: BertTokenizerFast, tokenize_rate: float) -> None:
    """Section 4b: 1M texts of ~30 pieces, extrapolated from the rates; measured on as many texts as fit."""
    print("== 1M texts end to end (MiniLM shape): tokenise, encode, neighbours, simple_grad, lafa", flush=True)
    million = 1_000_000
    knn_row = setup.results.get("knn", {})
    knn_seconds = knn_row.get("seconds", float("nan")) * (million / knn_row["n"]) ** 2 if knn_row else float("nan")
    figures = {}
    for precision, bf16 in (("fp32", False), ("bf16", True)):
        parts = {
            "tokenise (CPU)": million / tokenize_rate,
            "encode": million / best_rate(setup, "encode", bf16),
            "neighbours": knn_seconds,
            "simple_grad": million / best_rate(setup, "simple_grad", bf16),
            "lafa": million / best_rate(setup, "lafa", bf16),
        }
        parts["total"] = sum(parts.values())
        figures[precision] = parts
    cpu = setup.results.get("cpu_texts_per_s", {})
    if cpu and knn_row.get("cpu_queries_per_s"):
        parts = {
            "tokenise (CPU)": million / tokenize_rate,
            "encode": million / cpu.get("encode", float("nan")),
            "neighbours": million / knn_row["cpu_queries_per_s"] * (million / knn_row["n"]),
            "simple_grad": million / cpu.get("simple_grad", float("nan")),
            "lafa": million / cpu.get("lafa", float("nan")),
        }
        parts["total"] = sum(parts.values())
        figures["cpu fp32"] = parts
    for precision, parts in figures.items():
        text = ", ".join(f"{k} {v:,.1f} s" for k, v in parts.items())
        print(f"  extrapolated {precision}: {text}", flush=True)
    if "cpu fp32" in figures:
        print(f"  CPU / GPU fp32 total: {figures['cpu fp32']['total'] / figures['fp32']['total']:,.1f}x")
    setup.results["extrapolated_1m_seconds"] = figures
    measured_e2e(setup, tokenizer, tokenize_rate)


def measured_e2e(setup: Setup, tokenizer: BertTokenizerFast, tokenize_rate: float) -> None:
    """The pipeline's work on ``n`` fresh texts, as many as the time left allows, timed stage by stage."""
    rate = best_rate(setup, "lafa", False)
    budget = setup.deadline.left() - 20.0
    if not rate == rate or budget < 20.0:
        setup.deadline.allows("measured end to end", 1e9)
        return
    # Tokenising and LAFA are the slow stages: each gets at most a fifth of the time left.
    n = int(min(setup.texts * 4, 1_000_000, max(100, budget / 5.0 * min(rate, tokenize_rate))))
    shape = (SMOKE_SHAPES if setup.smoke else SHAPES)["minilm"]
    loaded = from_modules(random_bert(shape, seed=0).to(setup.device), tokenizer)
    batch = setup.batch_cap
    stages: dict[str, float] = {}
    started = time.perf_counter()
    corpus = encode_texts(tokenizer, random_texts(n, shape[4], seed=11), max_length=64)
    stages["tokenise"] = time.perf_counter() - started
    started = time.perf_counter()
    vectors = mean_pooled_hidden_states(loaded, corpus, layer=-1, batch_size=batch)
    sync(setup.device)
    stages["encode"] = time.perf_counter() - started
    started = time.perf_counter()
    selection = select_neighbours(
        TorchExactIndex(vectors, setup.device), vectors, NeighbourRequest(max_neighbours=10), device=setup.device
    )
    stages["neighbours"] = time.perf_counter() - started
    targets = [[1]] * n
    for name in ("simple_grad", "lafa"):
        method = get_method(name)
        context = method_context(name, method, loaded, corpus, selection.neighbours)
        started = time.perf_counter()
        attribute_corpus(method, loaded, corpus, targets, context=context, batch_size=batch)
        sync(setup.device)
        stages[name] = time.perf_counter() - started
    stages["total"] = sum(stages.values())
    with_neighbours = sum(1 for v in selection.neighbours.values() if v) / n
    setup.results["measured_end_to_end"] = {"texts": n, "seconds": stages, "share_with_neighbours": with_neighbours}
    text = ", ".join(f"{k} {v:,.1f} s" for k, v in stages.items())
    print(f"  measured on {n:,} texts (batch {batch}): {text}; x{1_000_000 / n:,.1f} for 1M", flush=True)


def print_table(setup: Setup) -> None:
    r = setup.results
    print("\n== summary", flush=True)
    bad = [row["method"] for row in r.get("correctness", []) if not row["ok"]]
    n_checked = len(r.get("correctness", []))
    print(
        f"correctness: {n_checked - len(bad)}/{n_checked} methods within tolerance"
        + (f"; FAILED: {bad}" if bad else "")
    )
    columns = ("fp32 texts/s", "bf16 texts/s", "bf16 rho min")
    print(f"{'shape':10s} {'method':22s} " + " ".join(f"{c:>13s}" for c in columns) + f" {'mem batch':>10s}")
    for shape in SMOKE_SHAPES if setup.smoke else SHAPES:
        for name in TIMED:
            cells = {
                row["bf16"]: row
                for row in r.get("throughput", [])
                if row.get("shape") == shape and row["method"] == name
            }
            if not cells:
                continue
            fp32, bf16 = cells.get(False, {}), cells.get(True, {})
            print(
                f"{shape:10s} {name:22s} {fp32.get('best_texts_per_s', float('nan')):13,.0f} "
                f"{bf16.get('best_texts_per_s', float('nan')):13,.0f} {bf16.get('spearman_min', float('nan')):13.4f} "
                f"{fp32.get('memory_batch', 0):10,}"
            )
    sg, lafa = best_rate(setup, "simple_grad", False), best_rate(setup, "lafa", False)
    print(
        f"targets: MiniLM simple_grad fp32 {sg:,.0f} texts/s (target >= 20,000); "
        f"lafa time / simple_grad time {sg / lafa:.2f} (target <= 1.2)"
    )
    total = r.get("extrapolated_1m_seconds", {}).get("fp32", {}).get("total", float("nan"))
    print(f"1M texts end to end, extrapolated fp32: {total:,.0f} s (target < 300)")
    if setup.deadline.skipped:
        print(f"skipped at the deadline: {', '.join(setup.deadline.skipped)}")


def timed_section(setup: Setup, name: str, run: Callable[..., None], *args: Any) -> None:
    """Run one section and record its wall time in ``section_seconds``."""
    started = time.perf_counter()
    run(*args)
    seconds = time.perf_counter() - started
    setup.results.setdefault("section_seconds", {})[name] = seconds
    print(f"  ({name}: {seconds:.1f} s, {setup.deadline.left():.0f} s left)", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny shapes, CPU as both devices (runs anywhere)")
    parser.add_argument("--device", default=None, help="device under test (default: cuda when present, else cpu)")
    parser.add_argument("--budget-s", type=float, default=None, help="global deadline (default 420, smoke 600)")
    parser.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help=f"comma-separated sections to run (default all: {','.join(SECTIONS)})",
    )
    parser.add_argument("--out", default=os.environ.get("OUT"), help="folder for gpu_check.json (default $OUT)")
    args = parser.parse_args(argv)
    sections = set(args.only.split(","))
    if not sections <= set(SECTIONS):
        parser.error(f"unknown sections {sorted(sections - set(SECTIONS))}; valid: {','.join(SECTIONS)}")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    budget = args.budget_s if args.budget_s is not None else (600.0 if args.smoke else 420.0)
    deadline = Deadline(budget)
    smoke = bool(args.smoke)
    memory: MemoryStats | None = None
    probe_device = device
    if smoke or device.type != "cuda":
        # Device logic injected: the memory probe asks a stand-in about a named CUDA device.
        memory, probe_device = InjectedMemory(per_text_bytes=1 << 20, free_bytes=20 << 20), torch.device("cuda", 0)
    setup = Setup(
        smoke=smoke,
        device=device,
        deadline=deadline,
        memory=memory,
        probe_device=probe_device,
        batch_cap=8 if smoke else 8192,
        small_batch=4 if smoke else 512,
        cell_seconds=0.0 if smoke else 2.0,
        probe_rows=2 if smoke else 16,
        knn_n=3000 if smoke else 1_000_000,
        knn_dim=16 if smoke else 384,
        texts=24 if smoke else 3 * 8192,
        results={},
    )
    setup.results["environment"] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "cpu_threads": torch.get_num_threads(),
        "smoke": smoke,
        "budget_s": budget,
    }
    print(f"gpu_check on {setup.results['environment']}", flush=True)
    shapes = SMOKE_SHAPES if smoke else SHAPES
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = tokenizer_with_vocabulary(shapes["minilm"][4], Path(tmp))
        if "correctness" in sections:
            timed_section(setup, "correctness", check_correctness, setup, tokenizer, shapes["minilm"])
        started = time.perf_counter()
        corpus = encode_texts(tokenizer, random_texts(setup.texts, shapes["minilm"][4], seed=5), max_length=64)
        tokenize_rate = len(corpus) / (time.perf_counter() - started)
        pieces = float(np.mean([len(e) for e in corpus]))
        setup.results["corpus"] = {"texts": len(corpus), "mean_pieces": pieces, "tokenise_texts_per_s": tokenize_rate}
        print(f"== corpus: {len(corpus):,} texts, {pieces:.1f} pieces on average, tokenised at {tokenize_rate:,.0f}/s")
        for name, run, args_ in (
            ("knn", knn, (setup,)),
            ("throughput", throughput, (setup, tokenizer, corpus)),
            ("cpu", cpu_rates, (setup, tokenizer, corpus)),
            ("e2e", end_to_end, (setup, tokenizer, tokenize_rate)),
        ):
            if name in sections:
                timed_section(setup, name, run, *args_)
    setup.results["skipped"] = deadline.skipped
    print_table(setup)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "gpu_check.json").write_text(json.dumps(setup.results, indent=2, default=float) + "\n")
        print(f"wrote {out / 'gpu_check.json'}")
    failed = [row["method"] for row in setup.results.get("correctness", []) if not row["ok"]]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
