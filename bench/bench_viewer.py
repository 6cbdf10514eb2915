"""Viewer generation vs SimpleGrad attribution on the same documents, side by side in one run.

Documents: AG News texts (``../shared/data/ag_news/test.csv``, repeated to ``--texts`` when
shorter) when present, else synthetic catalogue listings. Model: a tiny random BERT (2 layers,
hidden 64) with all-MiniLM-L6-v2's tokenizer (real word pieces, little compute: the hard case for
the ratio), or the bundled MiniLM itself with ``--model minilm``. Timed:

- attribution: :func:`xattr.methods.attribute_corpus` with SimpleGrad over every document
  (encoding and the one prediction pass excluded);
- viewer: :func:`xattr.reporting.words.word_table` (pieces -> words, with spans) and
  :func:`xattr.reporting.viewer.render_explanations` (sample, faithfulness table with CIs and
  paired tests over synthetic per-text AOPC rows of SimpleGrad and random, agreement matrix
  between SimpleGrad and a second score column, the HTML), written to a temporary file.

Prints both times and their ratio (target: viewer < 0.1 x attribution).

Usage: ``PYTHONPATH=. .venv/bin/python bench/bench_viewer.py [--texts 10000] [--model tiny|minilm]``
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pandas as pd
import torch
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

from xattr.data.ag_news import read_ag_news
from xattr.data.synthetic_catalogue import generate_catalogue
from xattr.methods import attribute_corpus, get_method
from xattr.methods.runner import attribution_table
from xattr.models.encoding import encode_texts
from xattr.models.forward import predict_logits
from xattr.models.loading import LoadedModel, bundled_minilm, from_modules, load_model
from xattr.reporting.class_drivers import class_probabilities
from xattr.reporting.viewer import ViewerSettings, write_explanations
from xattr.reporting.words import word_table

AG_NEWS = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "ag_news" / "test.csv"


def documents(n: int) -> list[str]:
    if AG_NEWS.is_file():
        texts = read_ag_news(AG_NEWS)["text"].tolist()
    else:
        texts = generate_catalogue(n, seed=0)["text"].tolist()
    return [texts[i % len(texts)] for i in range(n)]


def model(kind: str) -> LoadedModel:
    if kind == "minilm":
        return load_model(bundled_minilm(), device="cpu", max_length=128)
    tokenizer = AutoTokenizer.from_pretrained(bundled_minilm())
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=128, max_position_embeddings=512, num_labels=4,
    )  # fmt: skip
    return from_modules(BertForSequenceClassification(config), tokenizer, max_length=128)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=10_000)
    parser.add_argument("--model", choices=["tiny", "minilm"], default="tiny")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    loaded = model(args.model)
    texts = documents(args.texts)
    ids = [f"doc-{i}" for i in range(len(texts))]
    encoded = encode_texts(loaded.tokenizer, texts, max_length=loaded.max_length)
    logits = predict_logits(loaded, encoded, batch_size=args.batch_size)
    targets = [[int(j)] for j in logits.argmax(axis=1)]

    started = time.perf_counter()
    results = attribute_corpus(get_method("simple_grad"), loaded, encoded, targets, batch_size=args.batch_size)
    attribution_seconds = time.perf_counter() - started

    pieces = attribution_table(ids, encoded, loaded.tokenizer, results, "simple_grad").to_pandas()
    rng = np.random.default_rng(0)
    second = pieces.assign(method="random", score=rng.random(len(pieces)).astype(np.float32))
    corpus = pd.DataFrame({"doc_id": ids, "text": texts, "text_pair": None})
    probabilities = class_probabilities(loaded, logits)
    names = np.array(["World", "Sports", "Business", "Sci/Tech"])
    predicted = logits.argmax(axis=1)
    predictions = pd.DataFrame(
        {
            "doc_id": ids,
            "predicted_label": names[predicted],
            "probability": probabilities[np.arange(len(ids)), predicted],
            "gold_label": names[rng.integers(0, 4, len(ids))],
        }
    )
    evaluation = pd.DataFrame(
        {
            "method": ["simple_grad"] * len(ids) + ["random"] * len(ids),
            "doc_id": ids + ids,
            "metric": "aopc",
            "fraction": None,
            "value": rng.normal(0.5, 0.1, 2 * len(ids)),
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        words = word_table(pd.concat([pieces, second], ignore_index=True), corpus)
        path = write_explanations(
            Path(tmp) / "explanations.html",
            corpus,
            words,
            predictions,
            {"simple_grad": False, "random": False},
            evaluation=evaluation,
            settings=ViewerSettings(),
        )
        viewer_seconds = time.perf_counter() - started
        size = path.stat().st_size
    print(f"documents: {len(texts)} ({'AG News' if AG_NEWS.is_file() else 'synthetic catalogue'}), model: {args.model}")
    print(f"SimpleGrad attribution: {attribution_seconds:8.2f} s ({len(texts) / attribution_seconds:.0f} texts/s)")
    print(f"viewer generation:      {viewer_seconds:8.2f} s (word table + page; page {size / 1e6:.2f} MB)")
    print(f"ratio viewer / attribution: {viewer_seconds / attribution_seconds:.3f} (target < 0.1)")


if __name__ == "__main__":
    main()
