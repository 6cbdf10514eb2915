"""What drives predicted price across a catalogue: per-listing unit effects, aggregated with CIs.

For every listing and every unit (word, attribute-value pair, phrase; :mod:`xattr.reporting.phrases`)
two numbers are computed:

- ``attribution``: the signed sum of the unit's word-piece scores from the configured attribution
  method (word pieces -> words -> unit, all by signed sum; METHOD-NOTES: never report pieces).
- the *effect*, in currency: ``price(y) - price(y_masked)``, where ``y`` is the model's output
  for the listing, ``y_masked`` its output with every word piece of the unit replaced (the
  replacement policy is recorded; ``[MASK]`` by default) and ``price`` maps an output to
  currency (``exp`` for a log-price model). This needs one extra forward pass per unit
  occurrence (batched). It is the default because it is the model's own counterfactual in
  currency, whatever the attribution method: LAFA adds lambda x the neighbours' scores, so its
  scale is not a change of output. With ``effect="attribution"`` the effect is *estimated* from
  the attribution instead (``y_masked ~ y - attribution``: first-order Taylor, exact only for
  signed Grad x Input / IG-like scores of a model linear in the unit), which costs nothing extra.

Units are masked only when their key occurs in at least ``min_texts`` listings overall (rarer
ones never reach the report). Occurrences are then averaged per driver, overall and per
category, with a percentile-bootstrap CI over listings (:func:`xattr.metrics.uncertainty.bootstrap_mean`).
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from xattr.metrics.perturbation import remove_tokens
from xattr.metrics.uncertainty import bootstrap_means
from xattr.models.encoding import EncodedText
from xattr.models.forward import predict_logits
from xattr.models.loading import LoadedModel
from xattr.models.replacement import replacement_id
from xattr.reporting.baseline import LinearBaseline, ModelVerdict, fit_linear_baseline, model_verdict
from xattr.reporting.phrases import (
    AttributeRule,
    RuleChoice,
    Unit,
    WordFilter,
    choose_rules,
    extract_units,
    load_spacy,
    noun_chunk_spans,
)
from xattr.types import ReplacementPolicy

__all__ = [
    "ALL_CATEGORIES",
    "DriverOptions",
    "EffectSource",
    "PriceDriverAnalysis",
    "Predictor",
    "TruthRecovery",
    "aggregate_drivers",
    "analyse_price_drivers",
    "driver_occurrences",
    "drop_attribute_value_words",
    "example_positions",
    "holdout_mask",
    "listing_units",
    "masked_encodings",
    "occurrence_frame",
    "regression_quality",
    "to_price",
    "truth_recovery",
    "unit_tokens",
    "word_score_table",
    "word_tokens",
]

#: ``category`` value of the overall rows of the drivers table.
ALL_CATEGORIES = "(all)"
EffectSource = Literal["mask", "attribution"]
#: Model outputs (one value per text, shape ``(n,)``) for encoded texts.
Predictor = Callable[[Sequence[EncodedText]], np.ndarray]
#: Called as ``(done, total)`` while masked texts are predicted.
Progress = Callable[[int, int], None]


def to_price(output: np.ndarray | float, transform: str) -> np.ndarray:
    """Model output -> currency: ``exp`` for ``"log"`` models, identity otherwise."""
    values = np.asarray(output, dtype=np.float64)
    if transform == "log":
        return np.exp(values)
    if transform == "identity":
        return values
    raise ValueError(f"unknown output transform {transform!r}; valid: log, identity")


def holdout_mask(doc_ids: Sequence[str], fraction: float, seed: int) -> np.ndarray:
    """Whether each document is held out: ``sha256(seed:doc_id)`` below ``fraction`` of the range.

    Depends only on the id and the seed, so a document stays on its side when rows are added,
    removed or reordered.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"holdout fraction must be in [0, 1), got {fraction}")
    cut = fraction * 2**64
    return np.array(
        [int.from_bytes(hashlib.sha256(f"{seed}:{d}".encode()).digest()[:8], "big") < cut for d in doc_ids],
        dtype=bool,
    )


def word_score_table(attributions: pd.DataFrame, doc_ids: Sequence[str]) -> dict[str, dict[int, float]]:
    """Signed word scores per document: the sum of each word's piece scores.

    Args:
        attributions: ``token_attributions`` rows (``doc_id, target, word_index, score``) of one
            method and one target per document.
        doc_ids: Documents wanted.

    Returns:
        ``{doc_id: {word_index: score}}``; words without a token (truncated away) are absent.
    """
    pieces = attributions[(attributions["word_index"] >= 0) & attributions["doc_id"].isin(set(doc_ids))]
    # Integer keys: grouping a million string ids, and iterating the result's MultiIndex, cost seconds.
    codes, uniques = pd.factorize(pieces["doc_id"])
    coded = pd.DataFrame({"doc": codes, "word": pieces["word_index"].to_numpy(), "score": pieces["score"].to_numpy()})
    summed = coded.groupby(["doc", "word"], sort=False, as_index=False)["score"].sum()
    out: dict[str, dict[int, float]] = {d: {} for d in doc_ids}
    names = list(uniques)
    for doc, word, score in zip(
        summed["doc"].tolist(), summed["word"].tolist(), summed["score"].tolist(), strict=True
    ):  # fmt: skip
        out[names[doc]][int(word)] = float(score)
    return out


def _masked_outputs(
    predict: Predictor,
    encoded: Sequence[EncodedText],
    jobs: Sequence[tuple[int, tuple[int, ...]]],
    replacement: int | None,
    chunk: int,
    progress: Progress | None,
) -> np.ndarray:
    """Outputs for each ``(text position, token positions to replace)`` job, ``chunk`` texts at a time."""
    out = np.empty(len(jobs), dtype=np.float64)
    for start in range(0, len(jobs), chunk):
        part = jobs[start : start + chunk]
        masked = [remove_tokens(encoded[p], tokens, replacement) for p, tokens in part]
        out[start : start + len(part)] = np.asarray(predict(masked), dtype=np.float64).reshape(-1)
        if progress is not None:
            progress(start + len(part), len(jobs))
    return out


def _occurrence_rows(
    encoded: Sequence[EncodedText], units: Sequence[Sequence[Unit]], min_texts: int
) -> list[tuple[int, Unit, tuple[int, ...]]]:
    """``(text position, unit, token positions)`` of every unit occurrence :func:`driver_occurrences` keeps.

    A unit is kept when its key occurs in at least ``min_texts`` texts and none of its words was
    cut off by truncation.
    """
    texts_per_key = Counter(u.key for doc_units in units for u in {x.key: x for x in doc_units}.values())
    rows: list[tuple[int, Unit, tuple[int, ...]]] = []
    for position, doc_units in enumerate(units):
        tokens_of = word_tokens(encoded[position])
        for unit in doc_units:
            if texts_per_key[unit.key] < min_texts:
                continue
            tokens = unit_tokens(unit, tokens_of)
            if tokens is not None:
                rows.append((position, unit, tokens))
    return rows


def word_tokens(encoded: EncodedText) -> dict[int, list[int]]:
    """The token positions of each word of an encoded text (words cut off by truncation are absent)."""
    tokens_of: dict[int, list[int]] = {}
    for t, w in enumerate(encoded.word_index):
        if w >= 0 and not encoded.special[t]:
            tokens_of.setdefault(w, []).append(t)
    return tokens_of


def unit_tokens(unit: Unit, tokens_of: Mapping[int, Sequence[int]]) -> tuple[int, ...] | None:
    """The token positions of a unit (:func:`word_tokens` of its text), or None when truncation cut one of its words."""
    if any(w not in tokens_of for w in unit.words):
        return None
    return tuple(t for w in unit.words for t in tokens_of[w])


def masked_encodings(
    encoded: Sequence[EncodedText], units: Sequence[Sequence[Unit]], replacement: int | None, *, min_texts: int
) -> list[EncodedText]:
    """The masked texts :func:`driver_occurrences` predicts with ``effect="mask"``, in its order.

    For measuring the stage's floor (its forward passes on these texts, as ``bench/bench_flow.py`` does).
    """
    return [
        remove_tokens(encoded[p], tokens, replacement) for p, _, tokens in _occurrence_rows(encoded, units, min_texts)
    ]


def driver_occurrences(
    doc_ids: Sequence[str],
    groups: Sequence[str | None],
    encoded: Sequence[EncodedText],
    units: Sequence[Sequence[Unit]],
    word_scores: Mapping[str, Mapping[int, float]],
    outputs: np.ndarray,
    predict: Predictor | None,
    *,
    output_transform: str,
    replacement: int | None,
    min_texts: int = 10,
    effect: EffectSource = "mask",
    chunk: int = 512,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """One row per (listing, unit) whose key occurs in at least ``min_texts`` listings.

    Args:
        doc_ids: Listing ids, in corpus order.
        groups: Category per listing (None: no category).
        encoded: Encoded listings (the model's tokenisation, with word alignment).
        units: Units of each listing (:func:`xattr.reporting.phrases.extract_units`).
        word_scores: Signed word scores per listing (:func:`word_score_table`).
        outputs: ``(n,)`` model output per listing (log price for a log-price model).
        predict: Model outputs for masked encodings; required when ``effect == "mask"``.
        output_transform: ``"log"`` or ``"identity"`` (see :func:`to_price`).
        replacement: Token id replacing a masked unit's pieces (None deletes them).
        min_texts: Units whose key occurs in fewer listings are skipped.
        effect: ``"mask"`` (masked forward pass) or ``"attribution"`` (estimate; module docstring).
        chunk: Masked texts per call of ``predict``.
        progress: Called as ``(done, total)`` over masked texts.

    Returns:
        ``doc_id, group, driver, kind, attribution, output_effect, effect, relative_effect,
        predicted_price``: ``output_effect = y - y_masked`` (model units), ``effect`` the same in
        currency, ``relative_effect = price(y) / price(y_masked) - 1``. Units with a word cut off
        by truncation are skipped (masking them would not change the input).

    Raises:
        ValueError: Mismatched lengths, or ``effect == "mask"`` without ``predict``.
    """
    n = len(doc_ids)
    if not (len(groups) == len(encoded) == len(units) == n == len(outputs)):
        raise ValueError("doc_ids, groups, encoded, units and outputs must have one entry per listing")
    if effect == "mask" and predict is None:
        raise ValueError("effect 'mask' needs a predictor for the masked listings")
    if effect not in ("mask", "attribution"):
        raise ValueError(f"unknown effect source {effect!r}; valid: mask, attribution")
    rows = [
        (p, unit, tokens, math.fsum(word_scores.get(doc_ids[p], {}).get(w, 0.0) for w in unit.words))
        for p, unit, tokens in _occurrence_rows(encoded, units, min_texts)
    ]
    attribution = np.array([r[3] for r in rows], dtype=np.float64)
    full = outputs[[r[0] for r in rows]] if rows else np.empty(0)
    if effect == "mask" and rows:
        masked = _masked_outputs(predict, encoded, [(r[0], r[2]) for r in rows], replacement, chunk, progress)  # type: ignore[arg-type]
    else:
        masked = full - attribution
    return occurrence_frame(
        [doc_ids[r[0]] for r in rows],
        [groups[r[0]] for r in rows],
        [r[1].key for r in rows],
        [r[1].kind for r in rows],
        attribution,
        full,
        masked,
        output_transform,
    )


def occurrence_frame(
    doc_ids: Sequence[Any] | np.ndarray,
    groups: Sequence[Any] | np.ndarray,
    drivers: Sequence[Any] | np.ndarray,
    kinds: Sequence[Any] | np.ndarray,
    attribution: np.ndarray,
    full: np.ndarray,
    masked: np.ndarray,
    output_transform: str,
) -> pd.DataFrame:
    """The rows of :func:`driver_occurrences` from its columns: one per occurrence, in that order.

    Args:
        doc_ids: The listing of each occurrence (any hashable: :func:`aggregate_drivers` counts distinct values).
        groups: Its category (None or NaN: none).
        drivers: Its driver (any sortable value: a key, or a code into a vocabulary of keys).
        kinds: Its unit kind (likewise).
        attribution: Its signed attribution.
        full: The model output of its listing.
        masked: The model output with the unit masked (or estimated, ``full - attribution``).
        output_transform: ``"log"`` or ``"identity"`` (see :func:`to_price`).
    """
    price_full = to_price(full, output_transform)
    price_masked = to_price(masked, output_transform)
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = price_full / price_masked - 1.0
    return pd.DataFrame(
        {
            "doc_id": doc_ids,
            "group": groups,
            "driver": drivers,
            "kind": kinds,
            "attribution": attribution,
            "output_effect": full - masked,
            "effect": price_full - price_masked,
            "relative_effect": relative,
            "predicted_price": price_full,
        }
    )


def _estimates(
    columns: Sequence[tuple[np.ndarray, bool]], confidence: float, resamples: int, seed: int
) -> list[tuple[float, float, float]]:
    """``(mean, low, high)`` of each ``(values, with_interval)`` column's finite values (NaN CI without).

    Columns with as many finite values share one index draw (:func:`~xattr.metrics.uncertainty.bootstrap_means`):
    with the same seed each gets the interval its own :func:`~xattr.metrics.uncertainty.bootstrap_mean` gives.
    """
    out: list[tuple[float, float, float]] = []
    by_size: dict[int, list[tuple[int, np.ndarray]]] = {}
    for i, (values, with_interval) in enumerate(columns):
        finite = values[np.isfinite(values)]
        out.append((float(finite.mean()) if finite.size else math.nan, math.nan, math.nan))
        if with_interval and finite.size > 1:
            by_size.setdefault(finite.size, []).append((i, finite))
    for group in by_size.values():
        estimates = bootstrap_means([f for _, f in group], confidence=confidence, resamples=resamples, seed=seed)
        for (i, _), e in zip(group, estimates, strict=True):
            out[i] = (e.mean, e.low, e.high)
    return out


def aggregate_drivers(
    occurrences: pd.DataFrame,
    texts_per_group: Mapping[str, int],
    *,
    min_texts: int = 10,
    confidence: float = 0.95,
    resamples: int = 1000,
    seed: int = 0,
    intervals: Collection[str] = ("effect", "attribution"),
) -> pd.DataFrame:
    """Mean effects per driver, overall and per category, with bootstrap CIs over listings.

    Args:
        occurrences: Output of :func:`driver_occurrences`.
        texts_per_group: Listings per category (all listings, with or without the driver), and
            the total under :data:`ALL_CATEGORIES`: the denominators of ``frequency``.
        min_texts: Drivers seen in fewer listings of a scope are left out of that scope.
        confidence: Coverage of the CIs.
        resamples: Bootstrap resamples per CI.
        seed: Bootstrap seed (the same for every driver: results do not depend on row order).
        intervals: The CIs computed, of ``effect`` and/or ``attribution`` (the others are NaN; the
            means are always computed): the bootstrap is most of this function's time.

    Returns:
        ``scope`` (``"overall"``/``"category"``), ``category`` (:data:`ALL_CATEGORIES` for overall),
        ``driver``, ``kind``, ``texts``, ``frequency`` (share of the scope's listings),
        ``mean_effect``, ``effect_ci_low``, ``effect_ci_high`` (currency), ``mean_relative_effect``,
        ``mean_output_effect``, ``mean_attribution``, ``attribution_ci_low``,
        ``attribution_ci_high``, ``mean_predicted_price``; sorted by scope, category and
        decreasing ``mean_effect``.
    """
    columns = [
        "scope",
        "category",
        "driver",
        "kind",
        "texts",
        "frequency",
        "mean_effect",
        "effect_ci_low",
        "effect_ci_high",
        "mean_relative_effect",
        "mean_output_effect",
        "mean_attribution",
        "attribution_ci_low",
        "attribution_ci_high",
        "mean_predicted_price",
    ]
    records: list[dict[str, object]] = []
    scopes: list[tuple[str, str, pd.DataFrame]] = [("overall", ALL_CATEGORIES, occurrences)]
    with_group = occurrences[occurrences["group"].notna()]
    scopes += [("category", str(g), part) for g, part in with_group.groupby("group", sort=True)]
    for scope, category, part in scopes:
        total = texts_per_group.get(category, 0)
        for (driver, kind), rows in part.groupby(["driver", "kind"], sort=True):
            texts = int(rows["doc_id"].nunique())
            if texts < min_texts:
                continue
            effect, attribution = _estimates(
                [(rows[c].to_numpy(), c in intervals) for c in ("effect", "attribution")], confidence, resamples, seed
            )
            relative = rows["relative_effect"].to_numpy()
            records.append(
                {
                    "scope": scope,
                    "category": category,
                    "driver": driver,
                    "kind": kind,
                    "texts": texts,
                    "frequency": texts / total if total else math.nan,
                    "mean_effect": effect[0],
                    "effect_ci_low": effect[1],
                    "effect_ci_high": effect[2],
                    "mean_relative_effect": float(np.nanmean(relative)) if np.isfinite(relative).any() else math.nan,
                    "mean_output_effect": float(rows["output_effect"].mean()),
                    "mean_attribution": attribution[0],
                    "attribution_ci_low": attribution[1],
                    "attribution_ci_high": attribution[2],
                    "mean_predicted_price": float(rows["predicted_price"].mean()),
                }
            )
    table = pd.DataFrame(records, columns=columns)
    if table.empty:
        return table
    table["_scope"] = table["scope"].map({"overall": 0, "category": 1})
    table = table.sort_values(["_scope", "category", "mean_effect", "driver"], ascending=[True, True, False, True])
    return table.drop(columns="_scope").reset_index(drop=True)


def regression_quality(predicted: np.ndarray, actual: np.ndarray, *, transform: str) -> dict[str, float]:
    """R^2 on the model's output scale (log price for log models) and MAPE in currency.

    Args:
        predicted: ``(n,)`` model outputs.
        actual: ``(n,)`` true prices (currency).
        transform: The model's output transform.

    Returns:
        ``r2``, ``mape`` (a fraction), ``rows``.
    """
    predicted = np.asarray(predicted, dtype=np.float64)
    actual = np.asarray(actual, dtype=np.float64)
    target = np.log(actual) if transform == "log" else actual
    total = float(((target - target.mean()) ** 2).sum())
    r2 = 1.0 - float(((target - predicted) ** 2).sum()) / total if total > 0 else math.nan
    mape = float(np.mean(np.abs(to_price(predicted, transform) - actual) / actual))
    return {"r2": r2, "mape": mape, "rows": float(len(actual))}


@dataclass(frozen=True)
class TruthRecovery:
    """How well a drivers table recovers known drivers.

    Attributes:
        k: Drivers compared (the number of known drivers unless given).
        precision_at_k: Share of the top ``k`` words by ``|column|`` that are known drivers.
        sign_agreement: Share of the known drivers found in the top ``k`` whose estimated sign
            equals the true sign.
        spearman: Rank correlation of estimated vs true effects over the known drivers present
            in the table.
        found: Known drivers present in the table.
        top: The top ``k`` words.
    """

    k: int
    precision_at_k: float
    sign_agreement: float
    spearman: float
    found: int
    top: tuple[str, ...]


def truth_recovery(
    drivers: pd.DataFrame, truth: Mapping[str, float], *, column: str = "mean_output_effect", k: int | None = None
) -> TruthRecovery:
    """Precision@k, sign agreement and Spearman of a drivers table against known word effects.

    Args:
        drivers: Output of :func:`aggregate_drivers`; its overall ``word`` rows are used.
        truth: Known effect per (normalised) driver word, e.g. on log price.
        column: The estimate to rank and correlate (``mean_output_effect``, ``mean_effect`` or
            ``mean_attribution``).
        k: Top words compared (default: the number of known drivers).

    Returns:
        The :class:`TruthRecovery`.
    """
    words = drivers[(drivers["scope"] == "overall") & (drivers["kind"] == "word")]
    k = k or len(truth)
    ranked = words.reindex(words[column].abs().sort_values(ascending=False, kind="stable").index)
    top = ranked.head(k)
    hits = top[top["driver"].isin(truth)]
    precision = len(hits) / k if k else math.nan
    signs = [np.sign(v) == np.sign(truth[d]) for d, v in zip(hits["driver"], hits[column], strict=True)]
    present = words[words["driver"].isin(truth)]
    rho = math.nan
    if len(present) >= 2:
        rho = float(spearmanr(present[column], [truth[d] for d in present["driver"]]).statistic)
    return TruthRecovery(
        k=k,
        precision_at_k=float(precision),
        sign_agreement=float(np.mean(signs)) if signs else math.nan,
        spearman=rho,
        found=len(present),
        top=tuple(top["driver"]),
    )


@dataclass(frozen=True)
class DriverOptions:
    """Settings of a price-driver analysis and its report (the ``drivers`` settings of the flow).

    Every field is required: the flow's settings hold the defaults.

    Attributes:
        method: Label of the attribution method (shown in the report).
        effect: How a driver's effect is measured (:func:`driver_occurrences`).
        replacement: Replacement policy of masked words (``mask``, ``pad``, ``unk``, ``delete``).
        rules: Attribute rules as ``{"attribute", "pattern", "value"}`` dicts (None: the defaults).
        noun_chunks: Whether noun-chunk phrases are drivers too (needs spaCy).
        spacy_model: The spaCy pipeline of the noun chunks.
        min_texts: Drivers seen in fewer listings of a scope are left out.
        confidence: Coverage of the bootstrap CIs.
        resamples: Bootstrap resamples per CI.
        seed: Seed of the bootstrap and of the held-out split.
        batch_size: Listings per forward pass.
        holdout_fraction: Share of listings held out (:func:`holdout_mask`) to score the model.
        examples: Example listings shown with highlighted words.
        top_k: Drivers per bar chart.
        title: Title of the report.
        baseline_alpha: Ridge penalty of the TF-IDF baseline.
        stop_words: Whether stop words are dropped as word drivers (:class:`~xattr.reporting.phrases.WordFilter`).
        numbers: Whether bare numbers are dropped as word drivers.
        min_word_chars: Shortest word driver.
        laptop_rules_min_share: Share of listings the laptop rules must match to be used when
            ``rules`` is None (:func:`~xattr.reporting.phrases.choose_rules`).
        min_r2_gain: The model is trusted only when its held-out R^2 exceeds the baseline's by more than this.
        max_mape_ratio: ... and its MAPE is at most this multiple of the baseline's.
        show_untrusted: Show an untrusted model's drivers normally (``--force``), under the red banner.
    """

    method: str
    effect: EffectSource
    replacement: ReplacementPolicy
    rules: Sequence[Mapping[str, str]] | None
    noun_chunks: bool
    spacy_model: str
    min_texts: int
    confidence: float
    resamples: int
    seed: int
    batch_size: int
    holdout_fraction: float
    examples: int
    top_k: int
    title: str
    baseline_alpha: float
    stop_words: bool
    numbers: bool
    min_word_chars: int
    laptop_rules_min_share: float
    min_r2_gain: float
    max_mape_ratio: float
    show_untrusted: bool

    def attribute_rules(self) -> tuple[AttributeRule, ...] | None:
        """The configured rules as :class:`~xattr.reporting.phrases.AttributeRule` (None: the defaults)."""
        return None if self.rules is None else tuple(AttributeRule(**r) for r in self.rules)

    def rule_choice(self, texts: Sequence[str]) -> RuleChoice:
        """The configured rules, or those :func:`~xattr.reporting.phrases.choose_rules` picks for ``texts``."""
        configured = self.attribute_rules()
        if configured is None:
            return choose_rules(texts, self.laptop_rules_min_share)
        return RuleChoice(configured, False, math.nan, self.laptop_rules_min_share)

    def word_filter(self) -> WordFilter:
        """The :class:`~xattr.reporting.phrases.WordFilter` of these settings."""
        return WordFilter(stop_words=self.stop_words, numbers=self.numbers, min_chars=self.min_word_chars)


def listing_units(
    doc_ids: Sequence[str],
    texts: Sequence[str],
    brands: Mapping[str, Any],
    *,
    rules: Sequence[AttributeRule] | None = None,
    chunks: Sequence[Sequence[tuple[int, int]]] | None = None,
    words: WordFilter | None = None,
) -> list[list[Unit]]:
    """The units of every listing (:func:`xattr.reporting.phrases.extract_units`).

    Args:
        doc_ids: Listing ids.
        texts: Listing texts, in the same order.
        brands: Brand by listing id; a value that is not a string (missing, NaN) means no brand.
        rules: Attribute rules (None: the defaults).
        chunks: Noun-chunk character spans per listing (None: no phrases).
        words: Which words may be drivers (None: every word).
    """
    units = []
    for i, (doc_id, text) in enumerate(zip(doc_ids, texts, strict=True)):
        brand = brands.get(doc_id)
        units.append(
            extract_units(
                text,
                brand=brand if isinstance(brand, str) else None,
                chunks=chunks[i] if chunks is not None else (),
                words=words,
                **({"rules": rules} if rules is not None else {}),
            )
        )
    return units


@dataclass(frozen=True)
class PriceDriverAnalysis:
    """Drivers of one model's predicted price over a catalogue, and the model's quality.

    Attributes:
        drivers: The drivers table (:func:`aggregate_drivers`).
        occurrences: Driver occurrences measured (rows of :func:`driver_occurrences`).
        outputs: ``(n,)`` model output per listing.
        predicted_price: ``(n,)`` predicted price per listing.
        held_out: ``(n,)`` whether each listing is held out (:func:`holdout_mask`).
        word_scores: Signed word scores per listing (:func:`word_score_table`).
        texts_per_group: Listings per category, and all of them under :data:`ALL_CATEGORIES`.
        model_quality: :func:`regression_quality` of the model on the held-out listings.
        baseline_quality: The same for the TF-IDF + ridge baseline fitted on the other listings.
        baseline: The fitted baseline.
        verdict: Whether the model's drivers can be trusted (:func:`~xattr.reporting.baseline.model_verdict`).
        rules: The attribute rules used, and why (:meth:`DriverOptions.rule_choice`).
        examples: Positions of the example listings (:func:`example_positions`).
        example_effects: Per example listing, each word's effect in currency, measured as the
            drivers' effects are (``options.effect``): ``{doc_id: {word_index: effect}}``.
        dropped_value_words: Word rows of the table left out because an attribute driver of the
            same scope has that word as its value (:func:`drop_attribute_value_words`).
    """

    drivers: pd.DataFrame
    occurrences: int
    outputs: np.ndarray
    predicted_price: np.ndarray
    held_out: np.ndarray
    word_scores: dict[str, dict[int, float]]
    texts_per_group: dict[str, int]
    model_quality: dict[str, float]
    baseline_quality: dict[str, float]
    baseline: LinearBaseline = field(repr=False)
    verdict: ModelVerdict = ModelVerdict(True, "")
    rules: RuleChoice | None = None
    examples: tuple[int, ...] = ()
    example_effects: dict[str, dict[int, float]] = field(default_factory=dict)
    dropped_value_words: int = 0

    @property
    def metrics(self) -> dict[str, float]:
        """Quality of the model and the baseline, held-out listings, occurrences, drivers per scope, and
        ``model_trusted`` (1.0 when the verdict trusts the model)."""
        return {
            "r2": self.model_quality["r2"],
            "mape": self.model_quality["mape"],
            "baseline_r2": self.baseline_quality["r2"],
            "baseline_mape": self.baseline_quality["mape"],
            "held_out": float(self.held_out.sum()),
            "occurrences": float(self.occurrences),
            "drivers_overall": float((self.drivers["scope"] == "overall").sum()),
            "drivers_per_category": float((self.drivers["scope"] == "category").sum()),
            "model_trusted": float(self.verdict.trusted),
        }


def analyse_price_drivers(
    loaded: LoadedModel,
    encoded: Sequence[EncodedText],
    frame: pd.DataFrame,
    brands: Mapping[str, Any],
    attributions: pd.DataFrame,
    options: DriverOptions,
    *,
    progress: Progress | None = None,
) -> PriceDriverAnalysis:
    """Drivers (overall and per category) of a price model, and its quality next to the linear baseline.

    Args:
        loaded: The price model (one output; ``output_transform`` maps it to currency).
        encoded: The listings encoded for ``loaded``, in corpus order.
        frame: The corpus rows (``doc_id, text, label`` = price, ``group`` = category or None).
        brands: Brand by listing id (see :func:`listing_units`).
        attributions: ``token_attributions`` rows of one method (signed scores).
        options: The analysis settings.
        progress: Called as ``(done, total)`` over masked listings (``effect == "mask"``).

    Returns:
        The :class:`PriceDriverAnalysis`.

    Raises:
        ValueError: Fewer than 2 held-out listings, or invalid settings.
    """
    doc_ids = frame["doc_id"].tolist()
    texts = frame["text"].tolist()
    outputs = predict_logits(loaded, encoded, batch_size=options.batch_size)[:, 0]
    transform = loaded.output_transform
    chunks = None
    if options.noun_chunks:
        chunks = noun_chunk_spans(load_spacy(options.spacy_model), texts)
    rules = options.rule_choice(texts)
    units = listing_units(doc_ids, texts, brands, rules=rules.rules, chunks=chunks, words=options.word_filter())
    scores = word_score_table(attributions, doc_ids)
    groups = [g if isinstance(g, str) else None for g in frame["group"]]

    def predict(texts: Sequence[EncodedText]) -> np.ndarray:
        return predict_logits(loaded, texts, batch_size=options.batch_size)[:, 0]

    replacement = replacement_id(loaded.tokenizer, options.replacement)
    occurrences = driver_occurrences(
        doc_ids,
        groups,
        encoded,
        units,
        scores,
        outputs,
        predict,
        output_transform=transform,
        replacement=replacement,
        min_texts=options.min_texts,
        effect=options.effect,
        progress=progress,
    )
    per_group = {ALL_CATEGORIES: len(doc_ids)} | {str(k): int(v) for k, v in pd.Series(groups).value_counts().items()}
    drivers = aggregate_drivers(
        occurrences,
        per_group,
        min_texts=options.min_texts,
        confidence=options.confidence,
        resamples=options.resamples,
        seed=options.seed,
    )
    kept = drop_attribute_value_words(drivers)
    held_out = holdout_mask(doc_ids, options.holdout_fraction, options.seed)
    prices = frame["label"].to_numpy(dtype=np.float64)
    train_idx, test_idx = np.flatnonzero(~held_out), np.flatnonzero(held_out)
    if len(test_idx) < 2:
        raise ValueError(f"only {len(test_idx)} held-out listings; raise model.holdout_fraction or add listings")
    baseline_target = np.log(prices) if transform == "log" else prices
    baseline = fit_linear_baseline(
        [texts[i] for i in train_idx], baseline_target[train_idx], alpha=options.baseline_alpha
    )
    model_quality = regression_quality(outputs[test_idx], prices[test_idx], transform=transform)
    baseline_quality = regression_quality(
        baseline.predict([texts[i] for i in test_idx]), prices[test_idx], transform=transform
    )
    predicted_price = to_price(outputs, transform)
    examples = example_positions(predicted_price, prices, held_out, options.examples)
    example_units = [[u for u in extract_units(texts[p], rules=()) if u.kind == "word"] for p in examples]
    measured = driver_occurrences(
        [doc_ids[p] for p in examples],
        [None] * len(examples),
        [encoded[p] for p in examples],
        example_units,
        scores,
        outputs[list(examples)],
        predict,
        output_transform=transform,
        replacement=replacement,
        min_texts=1,
        effect=options.effect,
    )
    words_of = {(doc_ids[p], u.key): u.words for p, doc in zip(examples, example_units, strict=True) for u in doc}
    example_effects: dict[str, dict[int, float]] = {doc_ids[p]: {} for p in examples}
    for doc_id, driver, value in zip(measured["doc_id"], measured["driver"], measured["effect"], strict=True):
        for w in words_of[(doc_id, driver)]:
            example_effects[doc_id][w] = float(value)
    return PriceDriverAnalysis(
        drivers=kept,
        occurrences=len(occurrences),
        outputs=outputs,
        predicted_price=predicted_price,
        held_out=held_out,
        word_scores=scores,
        texts_per_group=per_group,
        model_quality=model_quality,
        baseline_quality=baseline_quality,
        baseline=baseline,
        verdict=model_verdict(
            model_quality, baseline_quality, min_r2_gain=options.min_r2_gain, max_mape_ratio=options.max_mape_ratio
        ),
        rules=rules,
        examples=examples,
        example_effects=example_effects,
        dropped_value_words=len(drivers) - len(kept),
    )


def drop_attribute_value_words(drivers: pd.DataFrame) -> pd.DataFrame:
    """The drivers table without word rows whose word is the value of an attribute row of the same scope.

    A listing's own value words are never word drivers (:class:`~xattr.reporting.phrases.WordFilter`),
    but a word can still be a driver where no pair was found ("dell" in listings whose brand
    column is empty, next to ``brand: dell``): the pair is reported, the word is not.
    """
    if drivers.empty:
        return drivers
    attributes = drivers[drivers["kind"] == "attribute"]
    values = {
        (c, str(d).split(": ", 1)[1].replace(" ", ""))
        for c, d in zip(attributes["category"], attributes["driver"], strict=True)
    }
    duplicate = [
        kind == "word" and (c, str(d)) in values
        for c, d, kind in zip(drivers["category"], drivers["driver"], drivers["kind"], strict=True)
    ]
    return drivers[~np.array(duplicate, dtype=bool)].reset_index(drop=True)


def example_positions(
    predicted_price: np.ndarray, actual: np.ndarray, held_out: np.ndarray, count: int
) -> tuple[int, ...]:
    """``count`` held-out listings at evenly spaced ranks of absolute log error, best-predicted first.

    The first is the best-predicted listing and the last the worst (for ``count >= 2``), so the
    examples show the whole error range, not only the listings the model gets right.

    Args:
        predicted_price: ``(n,)`` predicted prices.
        actual: ``(n,)`` true prices.
        held_out: ``(n,)`` whether each listing is held out (every listing is a candidate when none is).
        count: Listings wanted (fewer when there are fewer candidates).

    Returns:
        Positions into the corpus, in order of increasing error.
    """
    candidates = np.flatnonzero(held_out) if held_out.any() else np.arange(len(actual))
    if count <= 0 or not len(candidates):
        return ()
    error = np.abs(np.log(predicted_price[candidates]) - np.log(actual[candidates]))
    order = candidates[np.argsort(error, kind="stable")]
    ranks = np.unique(np.round(np.linspace(0, len(order) - 1, min(count, len(order)))).astype(int))
    return tuple(int(order[r]) for r in ranks)
