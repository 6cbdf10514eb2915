"""FAISS index types side by side: build time, query time, recall@10 against exact search, size.

Synthetic, seeded, clustered float32 vectors shaped like sentence embeddings (cluster centres
plus a shared low-rank direction set plus isotropic noise). One copy of the data is held
(``n * dim * 4`` bytes, 1.5 GB at the default 1M x 384) and one index at a time.

    python bench/bench_faiss_indexes.py                     # 1M x 384, 10k queries, k=10
    python bench/bench_faiss_indexes.py --rows 100000       # a quick look

Times depend on the FAISS thread count (OMP_NUM_THREADS), printed with the table.
"""

from __future__ import annotations

import argparse
import gc
import time

import faiss
import numpy as np

from xattr.neighbours.index import INDEX_TYPES, IndexParams, build_index, recall_at_k


def clustered_vectors(rows: int, dim: int, clusters: int, seed: int, chunk: int = 100_000) -> np.ndarray:
    """``rows`` float32 vectors: one of ``clusters`` centres + a 32-dim latent mix + noise."""
    rng = np.random.default_rng(seed)
    structure = np.random.default_rng(12345)  # centres and directions shared by data and queries
    centres = structure.standard_normal((clusters, dim), dtype=np.float32)
    directions = structure.standard_normal((32, dim), dtype=np.float32) / np.float32(np.sqrt(32))
    out = np.empty((rows, dim), np.float32)
    for start in range(0, rows, chunk):
        m = min(chunk, rows - start)
        block = centres[rng.integers(0, clusters, m)]
        block += np.float32(0.4) * (rng.standard_normal((m, 32), dtype=np.float32) @ directions)
        block += np.float32(0.2) * rng.standard_normal((m, dim), dtype=np.float32)
        out[start : start + m] = block
    return out


def _main_setting(index_type: str, args: argparse.Namespace) -> str:
    if index_type.startswith("ivf"):
        return f"nprobe={args.nprobe}"
    return f"efSearch={args.ef_search}" if index_type == "hnsw" else "exact"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--nlist", type=int, default=1024)
    parser.add_argument("--nprobe", type=int, default=16)
    parser.add_argument("--hnsw-m", type=int, default=32)
    parser.add_argument("--ef-search", type=int, default=64)
    parser.add_argument("--pq-m", type=int, default=48)
    parser.add_argument("--types", default=",".join(INDEX_TYPES))
    parser.add_argument("--nprobe-sweep", default="4", help="extra nprobe values searched on the built ivf_*")
    parser.add_argument("--ef-sweep", default="16,128", help="extra efSearch values searched on the built hnsw")
    args = parser.parse_args()

    started = time.perf_counter()
    data = clustered_vectors(args.rows, args.dim, args.clusters, seed=0)
    queries = clustered_vectors(args.queries, args.dim, args.clusters, seed=1)
    print(
        f"data {args.rows} x {args.dim} float32 ({data.nbytes / 2**30:.2f} GiB), {args.queries} queries,"
        f" k={args.k}, {args.clusters} clusters; generated in {time.perf_counter() - started:.1f} s;"
        f" faiss {faiss.__version__}, {faiss.omp_get_max_threads()} thread(s)",
        flush=True,
    )
    params = IndexParams(
        nlist=args.nlist,
        nprobe=args.nprobe,
        hnsw_m=args.hnsw_m,
        ef_search=args.ef_search,
        pq_m=args.pq_m,
        pq_bits=8,
        train_size=100_000,
    )
    rows: list[tuple[str, float | None, float, float, float]] = []
    truth: np.ndarray | None = None
    types = ["flat_l2", *[t for t in args.types.split(",") if t != "flat_l2"]]  # exact first: the truth
    for index_type in types:
        t0 = time.perf_counter()
        index = build_index(data, index_type, params)  # type: ignore[arg-type]
        build_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        _, ids = index.search(queries, args.k)
        query_s = time.perf_counter() - t0
        if truth is None:
            truth = ids
        recall = recall_at_k(ids, truth)
        size = faiss.serialize_index(index).nbytes
        rows.append((f"{index_type} ({_main_setting(index_type, args)})", build_s, query_s, recall, size))
        print(
            f"  {index_type}: build {build_s:.1f} s, {args.queries} queries {query_s:.2f} s,"
            f" recall@{args.k} {recall:.3f}, {size / 2**20:.0f} MiB",
            flush=True,
        )
        # Search-time settings trade recall for speed on the same built index.
        if index_type.startswith("ivf"):
            sweep = [("nprobe", int(v)) for v in args.nprobe_sweep.split(",") if v and int(v) != args.nprobe]
        elif index_type == "hnsw":
            sweep = [("efSearch", int(v)) for v in args.ef_sweep.split(",") if v and int(v) != args.ef_search]
        else:
            sweep = []
        for setting, value in sweep:
            if setting == "nprobe":
                faiss.extract_index_ivf(index).nprobe = value
            else:
                index.hnsw.efSearch = value
            t0 = time.perf_counter()
            _, ids = index.search(queries, args.k)
            sweep_s = time.perf_counter() - t0
            recall = recall_at_k(ids, truth)
            rows.append((f"{index_type} ({setting}={value})", None, sweep_s, recall, size))
            print(f"    {setting}={value}: {sweep_s:.2f} s, recall@{args.k} {recall:.3f}", flush=True)
        del index
        gc.collect()

    flat_query = rows[0][2]
    print()
    print(f"| index | build s | query s ({args.queries} q, k={args.k}) | speed-up vs flat | recall@{args.k} | MiB |")
    print("|---|---|---|---|---|---|")
    for name, build_s, query_s, recall, size in rows:
        print(
            f"| {name} | {'same' if build_s is None else f'{build_s:.1f}'} | {query_s:.2f}"
            f" | {flat_query / query_s:.1f}x | {recall:.3f}"
            f" | {size / 2**20:.0f} |"
        )
    print(
        f"\nsettings: nlist={args.nlist} nprobe={args.nprobe} train_size=100000; hnsw M={args.hnsw_m} efConstruction=40"
        f" efSearch={args.ef_search}; ivf_pq m={args.pq_m} x 8 bits. Total {time.perf_counter() - started:.0f} s"
    )


if __name__ == "__main__":
    main()
