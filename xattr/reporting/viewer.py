"""The explanation viewer: one self-contained HTML page over a corpus's explanations.

The page needs no network (inline CSS and a small inline script; no fonts, images or libraries
fetched) and escapes every text it shows, so a document holding ``<script>`` is displayed, never
run. It has:

- a verdict for a classifier with gold labels: its accuracy against always predicting the majority
  class on the same rows (held-out rows when the flow gives them, else the labelled documents); a
  model that is not better gets a red banner and its drivers collapsed behind it
  (``show_untrusted`` shows them normally);
- a header: the faithfulness table (mean and bootstrap CI per metric and method, the ``random``
  row, each method's paired test against random and a "not better than random" flag), the
  method-agreement matrix (Spearman rank correlation of the methods' word scores), the per-class
  drivers (:mod:`xattr.reporting.class_drivers`) and a colour legend;
- per document: predicted label and probability next to the gold label (or predicted and true
  value for a regressor), then one row per method with the text's words highlighted: signed
  methods in a diverging scale (blue: towards the explained output, red: against it), unsigned
  ones in one colour and marked "magnitude only"; special tokens never appear (scores are per word);
- navigation: filter by predicted class, misclassified, low confidence, and a text search.

Aggregates (faithfulness, agreement, drivers, counts) use every document given; the documents
listed are a seeded, stratified sample of at most ``max_documents`` (always holding the least
confident and the misclassified ones, see :func:`sample_documents`), each text cut at
``max_chars`` characters, so the page size is bounded whatever the corpus size
(:data:`PAGE_BOUND_NOTE`).

Inputs are plain pandas tables, so a flow builds them from its Parquet artifacts and the Python
API from its results (:func:`render_explanations` documents the columns).
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from xattr.reporting.baseline import VERDICT_CSS, ClassifierQuality, ModelVerdict, classifier_quality, majority_verdict
from xattr.reporting.summary import HEADLINE, faithfulness_table

__all__ = [
    "PAGE_BOUND_NOTE",
    "ViewerSettings",
    "agreement_matrix",
    "listed_documents",
    "render_explanations",
    "sample_documents",
    "viewer_predictions",
    "write_explanations",
]

#: Highlight levels per direction (word colour = level / LEVELS of the row's largest |score|).
LEVELS = 8


@dataclass(frozen=True)
class ViewerSettings:
    """What the viewer shows.

    Attributes:
        max_documents: Documents listed at most (a seeded, stratified sample when there are more).
        least_confident: The least confident documents always in the sample (classifiers).
        max_misclassified: Misclassified documents always in the sample at most (``None``: up to
            half of ``max_documents``).
        low_confidence_quantile: Documents whose probability is in this lowest share of the
            corpus are "low confidence" (the filter and the badge).
        max_chars: Characters of each text shown (the rest is cut, marked with an ellipsis).
        top_drivers: Drivers listed per class.
        seed: Seed of the sample.
        title: Page title.
        min_accuracy_gain: A classifier is trusted only when its accuracy exceeds the majority
            class's by more than this (:func:`xattr.reporting.baseline.majority_verdict`).
        show_untrusted: Show an untrusted classifier's drivers normally, under the red banner.
    """

    max_documents: int = 200
    least_confident: int = 20
    max_misclassified: int | None = None
    low_confidence_quantile: float = 0.1
    max_chars: int = 1000
    top_drivers: int = 10
    seed: int = 0
    title: str = "xattr explanations"
    min_accuracy_gain: float = 0.0
    show_untrusted: bool = False

    def __post_init__(self) -> None:
        if self.max_documents < 1:
            raise ValueError(f"viewer: max_documents must be at least 1, got {self.max_documents}")
        if not 0.0 <= self.low_confidence_quantile < 1.0:
            raise ValueError(f"viewer: low_confidence_quantile must be in [0, 1), got {self.low_confidence_quantile}")
        if self.max_chars < 1:
            raise ValueError(f"viewer: max_chars must be at least 1, got {self.max_chars}")


#: The page-size bound, as the README states it.
PAGE_BOUND_NOTE = (
    "at most max_documents (default 200) documents are listed, each text cut at max_chars (default 1,000) "
    "characters, one row per method; a highlighted word costs about 50 bytes per method, so 200 documents of "
    "1,000 characters with 4 methods take about 5 MB, whatever the corpus size"
)


#: The ``predictions`` artifact's column names -> the viewer's (the Python API's).
_ARTIFACT_COLUMNS = {"predicted_probability": "probability", "predicted_value": "prediction", "gold_value": "gold"}


def viewer_predictions(predictions: pd.DataFrame) -> pd.DataFrame:
    """The viewer's predictions table from the ``predictions`` artifact's rows or the Python API's.

    The artifact names the predicted class' probability ``predicted_probability`` and a regressor's
    values ``predicted_value``/``gold_value``; the API (and the viewer) ``probability``,
    ``prediction`` and ``gold``. Either shape comes back in the viewer's; other columns are kept.
    """
    renames = {a: b for a, b in _ARTIFACT_COLUMNS.items() if a in predictions.columns and b not in predictions.columns}
    frame = predictions.rename(columns=renames)
    if "predicted_label" in frame.columns and frame["predicted_label"].isna().all():
        frame = frame.drop(columns=[c for c in ("predicted_label", "probability", "gold_label") if c in frame])
    return frame


def _is_classifier(predictions: pd.DataFrame) -> bool:
    return "predicted_label" in predictions.columns


def _misclassified(predictions: pd.DataFrame) -> pd.Series:
    if not _is_classifier(predictions) or "gold_label" not in predictions.columns:
        return pd.Series(False, index=predictions.index)
    gold = predictions["gold_label"]
    return gold.notna() & (gold.astype(str) != predictions["predicted_label"].astype(str))


def _low_confidence(predictions: pd.DataFrame, quantile: float) -> pd.Series:
    if not _is_classifier(predictions) or quantile <= 0 or predictions.empty:
        return pd.Series(False, index=predictions.index)
    cut = float(np.quantile(predictions["probability"].to_numpy(dtype=np.float64), quantile))
    return predictions["probability"] <= cut


def sample_documents(predictions: pd.DataFrame, settings: ViewerSettings) -> list[str]:
    """The documents the page lists, in corpus order.

    All of them when there are at most ``max_documents``. Otherwise: the misclassified ones (least
    confident first, at most ``max_misclassified``), the ``least_confident`` ones, then a seeded
    sample stratified by predicted class (each class in proportion to its share of the rest,
    largest remainders first; for regressors, by quintile of the prediction).

    Args:
        predictions: One row per document (``doc_id``; ``predicted_label``, ``probability`` and
            optionally ``gold_label`` for classifiers, ``prediction`` for regressors).
        settings: The sample's size and seed.
    """
    ids = predictions["doc_id"].astype(str).tolist()
    size = settings.max_documents
    if len(ids) <= size:
        return ids
    frame = predictions.reset_index(drop=True)
    chosen: dict[int, None] = {}
    if _is_classifier(frame):
        by_confidence = frame["probability"].to_numpy(dtype=np.float64).argsort(kind="stable")
        wrong = _misclassified(frame).to_numpy()
        cap = settings.max_misclassified if settings.max_misclassified is not None else size // 2
        for i in [int(i) for i in by_confidence if wrong[i]][: min(cap, size)]:
            chosen[i] = None
        for i in by_confidence[: settings.least_confident]:
            if len(chosen) < size:
                chosen[int(i)] = None
        strata = frame["predicted_label"].astype(str).to_numpy()
    else:
        values = frame["prediction"].to_numpy(dtype=np.float64)
        strata = pd.qcut(pd.Series(values).rank(method="first"), q=min(5, len(values)), labels=False).to_numpy()
    rest = np.array([i for i in range(len(frame)) if i not in chosen])
    left = size - len(chosen)
    if left > 0 and len(rest):
        rng = np.random.default_rng(settings.seed)
        groups = pd.Series(rest).groupby(strata[rest])
        shares = {g: left * len(members) / len(rest) for g, members in groups}
        quota = {g: int(math.floor(s)) for g, s in shares.items()}
        for g in sorted(shares, key=lambda g: (-(shares[g] - quota[g]), str(g)))[: left - sum(quota.values())]:
            quota[g] += 1
        for g, members in groups:
            picks = rng.choice(members.to_numpy(), size=min(quota[g], len(members)), replace=False)
            chosen.update((int(i), None) for i in picks)
    return [ids[i] for i in sorted(chosen)]


def _corpus_predictions(predictions: pd.DataFrame, doc_ids: Sequence[str], settings: ViewerSettings) -> pd.DataFrame:
    """The viewer's predictions (:func:`viewer_predictions`) in corpus order, with the ``_wrong`` and ``_low`` flags.

    Raises:
        ValueError: A corpus document without a prediction (named).
    """
    predictions = viewer_predictions(predictions)
    predictions = predictions.assign(doc_id=predictions["doc_id"].astype(str)).drop_duplicates("doc_id")
    predicted_ids = set(predictions["doc_id"])
    missing = [d for d in doc_ids if d not in predicted_ids]
    if missing:
        raise ValueError(f"viewer: no prediction for document {missing[0]!r}")
    predictions = predictions.set_index("doc_id").loc[list(doc_ids)].reset_index()
    predictions["_wrong"] = _misclassified(predictions).to_numpy()
    predictions["_low"] = _low_confidence(predictions, settings.low_confidence_quantile).to_numpy()
    return predictions


def _listed(
    doc_ids: Sequence[str], predictions: pd.DataFrame, settings: ViewerSettings, documents: Sequence[str] | None
) -> list[str]:
    """``documents`` (checked against the corpus), else :func:`sample_documents` of the corpus predictions."""
    if documents is not None:
        known = set(doc_ids)
        absent = [d for d in documents if str(d) not in known]
        if absent:
            raise ValueError(f"viewer: document {absent[0]!r} is not in the corpus ({len(doc_ids)} documents)")
        return [str(d) for d in documents]
    return sample_documents(predictions, settings)


def listed_documents(
    doc_ids: Sequence[str],
    predictions: pd.DataFrame,
    settings: ViewerSettings | None = None,
    documents: Sequence[str] | None = None,
) -> list[str]:
    """The documents :func:`render_explanations` lists for this corpus, before any word score is read.

    A caller reading scores from disk reads only these documents' rows (plus what the
    whole-corpus tables need: :func:`agreement_matrix`).

    Args:
        doc_ids: The corpus' documents, in order.
        predictions: As :func:`render_explanations` takes them.
        settings: Sample size and seed (:class:`ViewerSettings`).
        documents: The documents asked for (checked), else the seeded sample (:func:`sample_documents`).

    Raises:
        ValueError: A corpus document without a prediction, or a requested document not in the corpus.
    """
    settings = settings or ViewerSettings()
    ids = [str(d) for d in doc_ids]
    return _listed(ids, _corpus_predictions(predictions, ids, settings), settings, documents)


#: Per pair of methods ``(a, b)``: the sum over documents of their Spearman correlation and the documents summed.
AgreementTotals = dict[tuple[str, str], tuple[float, int]]


def agreement_matrix(
    words: pd.DataFrame | None, methods: Sequence[str] | None = None, *, totals: Sequence[AgreementTotals] = ()
) -> pd.DataFrame:
    """Spearman rank correlation between methods' word scores, mean over documents.

    Per document and pair of methods, the Spearman correlation of the two methods' ``|score|``
    over the document's words (importance ranks: a signed and an unsigned method compare on
    magnitude); the mean over documents with at least three words where neither ranking is constant.

    Args:
        words: Word scores (``doc_id, method, word_index, score``; ``target`` when present: the
            first target of each document is used); ``None`` with ``totals``.
        methods: The methods, in order (default: their order in ``words``).
        totals: Instead of ``words``, the :func:`agreement_totals` of disjoint sets of documents
            (a corpus' shards), whose means are combined.

    Returns:
        A square ``methods x methods`` frame (1 on the diagonal; NaN where no document qualifies).
    """
    if words is not None:
        methods = list(methods) if methods is not None else list(dict.fromkeys(words["method"]))
        totals = [agreement_totals(words, methods)]
    elif methods is None:
        raise ValueError("agreement_matrix: give the methods with totals")
    methods = list(methods)
    out = pd.DataFrame(np.eye(len(methods)), index=methods, columns=methods)
    for a_i, a in enumerate(methods):
        for b in methods[a_i + 1 :]:
            summed = [t[(a, b)] for t in totals if (a, b) in t]
            docs = sum(n for _, n in summed)
            # One shard's mean is its sum over its count, as Series.mean computes it.
            rho = sum(r for r, _ in summed) / docs if docs else math.nan
            out.loc[a, b] = out.loc[b, a] = rho
    return out


def agreement_totals(words: pd.DataFrame, methods: Sequence[str]) -> AgreementTotals:
    """Per pair of ``methods``, the sum over ``words``' documents of their Spearman and the documents summed.

    The per-document correlation is :func:`agreement_matrix`'s.
    """
    methods = list(methods)
    frame = words[words["method"].isin(methods)]
    # Documents as integer codes in sorted order: every groupby and the pivot below see the groups
    # in the order the ids themselves would sort to (so the mean adds the same numbers in the same
    # order), without hashing a million string keys several times.
    codes, _ = pd.factorize(frame["doc_id"], sort=True)
    frame = pd.DataFrame(
        {
            "doc_id": codes,
            "method": frame["method"].to_numpy(),
            "word_index": frame["word_index"].to_numpy(),
            "score": np.abs(frame["score"].to_numpy()),
        }
        | ({"target": frame["target"].to_numpy()} if "target" in frame.columns else {})
    )
    if "target" in frame.columns:
        first = frame.groupby("doc_id")["target"].transform("first")
        frame = frame[frame["target"] == first]
    out: AgreementTotals = {}
    if frame.empty:
        return out
    wide = frame.pivot_table(index=["doc_id", "word_index"], columns="method", values="score", aggfunc="sum")
    docs = wide.index.get_level_values("doc_id")
    ranks = wide.groupby(docs).rank()
    for a_i, a in enumerate(methods):
        for b in methods[a_i + 1 :]:
            if a in ranks and b in ranks:
                pair = ranks[[a, b]].dropna()
                out[(a, b)] = _pearson_sum(pair[a], pair[b], pair.index.get_level_values("doc_id"))
    return out


def _pearson_sum(x: pd.Series, y: pd.Series, docs: pd.Index) -> tuple[float, int]:
    """Sum over documents of the Pearson correlation of ``x`` and ``y`` (ranks: Spearman), and the count; vectorised."""
    frame = pd.DataFrame({"x": x.to_numpy(), "y": y.to_numpy(), "doc": np.asarray(docs)})
    g = frame.groupby("doc")
    n = g["x"].transform("size")
    dx = frame["x"] - g["x"].transform("mean")
    dy = frame["y"] - g["y"].transform("mean")
    parts = pd.DataFrame({"doc": frame["doc"], "xy": dx * dy, "xx": dx * dx, "yy": dy * dy, "n": n})
    sums = parts.groupby("doc").agg(xy=("xy", "sum"), xx=("xx", "sum"), yy=("yy", "sum"), n=("n", "first"))
    ok = (sums["n"] >= 3) & (sums["xx"] > 0) & (sums["yy"] > 0)
    if not ok.any():
        return 0.0, 0
    rho = sums.loc[ok, "xy"] / np.sqrt(sums.loc[ok, "xx"] * sums.loc[ok, "yy"])
    return float(rho.sum()), int(ok.sum())


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#fff;border-bottom:1px solid #dde1e7;padding:16px 24px}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:18px 0 6px}
.sub{color:#5a6270}.grid{display:flex;flex-wrap:wrap;gap:24px;align-items:flex-start}
table{border-collapse:collapse;background:#fff;font-size:13px}
th,td{border:1px solid #dde1e7;padding:3px 7px;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}th{background:#eef1f5}
tr.flag td{background:#fdecea}.flagtext{color:#b3261e;font-weight:600}
.drivers{display:flex;flex-wrap:wrap;gap:16px}.drivers table td:first-child{font-weight:600}
nav{position:sticky;top:0;background:#fff;border-bottom:1px solid #dde1e7;padding:8px 24px;z-index:2;
display:flex;gap:16px;align-items:center;flex-wrap:wrap}
nav input[type=search]{width:260px;padding:3px 6px}main{padding:12px 24px}
.doc{background:#fff;border:1px solid #dde1e7;border-radius:6px;margin:0 0 12px;padding:8px 12px}
.doc.hidden{display:none}.meta{display:flex;gap:14px;flex-wrap:wrap;margin-bottom:6px;font-size:13px}
.id{color:#5a6270}.pred{font-weight:600}.wrong{color:#b3261e;font-weight:600}.low{color:#8a5a00}
.row{display:grid;grid-template-columns:170px 1fr;gap:8px;padding:3px 0;border-top:1px dashed #eceef2}
.mname{font-size:12px;color:#3a4250;word-break:break-word}.mag{display:block;color:#8a5a00;font-size:11px}
.txt{white-space:pre-wrap;word-wrap:break-word}.cut{color:#5a6270}
.p1{background:#e8eef9}.p2{background:#d2def3}.p3{background:#bccded}.p4{background:#a5bde7}
.p5{background:#8facde}.p6{background:#789bd6}.p7{background:#628bce;color:#fff}.p8{background:#4b7ac6;color:#fff}
.n1{background:#fbe9e7}.n2{background:#f7d3cf}.n3{background:#f3bdb6}.n4{background:#eea79e}
.n5{background:#ea9086}.n6{background:#e57a6e;color:#fff}.n7{background:#e16456;color:#fff}.n8{background:#dc4e3e;color:#fff}
.m1{background:#fdf3e1}.m2{background:#fbe7c3}.m3{background:#f9dba5}.m4{background:#f7cf87}
.m5{background:#f4c269}.m6{background:#f2b64b}.m7{background:#f0aa2d}.m8{background:#ee9e10}
.legend{margin-top:12px}.legend span{padding:1px 5px;margin-right:2px}
"""

_JS = """
(function(){
var docs=[].slice.call(document.querySelectorAll('.doc'));
var cls=document.getElementById('f-class'),wrong=document.getElementById('f-wrong'),
low=document.getElementById('f-low'),q=document.getElementById('f-search'),count=document.getElementById('f-count');
function apply(){var c=cls?cls.value:'',w=wrong&&wrong.checked,l=low&&low.checked,s=(q.value||'').toLowerCase(),n=0;
docs.forEach(function(d){var ok=(!c||d.getAttribute('data-pred')===c)&&(!w||d.getAttribute('data-wrong')==='1')&&
(!l||d.getAttribute('data-low')==='1')&&(!s||d.textContent.toLowerCase().indexOf(s)>=0);
d.classList.toggle('hidden',!ok);if(ok)n++;});count.textContent=n+' of '+docs.length+' shown';}
[cls,wrong,low].forEach(function(e){if(e)e.addEventListener('change',apply);});q.addEventListener('input',apply);apply();
})();
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: object, digits: int = 3) -> str:
    if value is None:
        return "-"
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return _e(value)
    if not math.isfinite(number):
        return "-"
    if number != 0 and abs(number) < 10 ** -(digits - 1):
        return f"{number:.{max(digits - 1, 1)}e}"  # tiny values (an untrained model) keep their digits
    return f"{number:.{digits}f}"


def _interval(mean: object, low: object, high: object, digits: int = 3) -> str:
    text = _fmt(mean, digits)
    if text != "-" and _fmt(low, digits) != "-" and _fmt(high, digits) != "-":
        text += f" [{_fmt(low, digits)}, {_fmt(high, digits)}]"
    return text


def _faithfulness_html(table: pd.DataFrame) -> str:
    if table.empty:
        return "<p class='sub'>No evaluation given.</p>"
    metrics = [m for m, _, _ in HEADLINE if m in set(table["metric"])]
    labels = {m: f"{label} ({better} better)" for m, label, better in HEADLINE}
    head = "".join(f"<th>{_e(labels[m])} [95% CI]</th>" for m in metrics)
    rows = []
    for method, part in table.groupby("method", sort=False):
        by_metric = part.set_index("metric")
        flagged = bool(part["not_better_than_random"].fillna(False).astype(bool).iloc[0]) if len(part) else False
        cells = []
        for m in metrics:
            if m not in by_metric.index:
                cells.append("<td>-</td>")
                continue
            r = by_metric.loc[m]
            test = ""
            if pd.notna(r["vs_random_p"]):
                test = f"<br><small>vs random {r['vs_random_difference']:+.3f}, p={r['vs_random_p']:.3g}</small>"
            cells.append(f"<td>{_interval(r['mean'], r['ci_low'], r['ci_high'])}{test}</td>")
        flag = " <span class='flagtext'>not better than random</span>" if flagged else ""
        texts = int(part["texts"].max())
        rows.append(
            f"<tr class='{'flag' if flagged else ''}'><td>{_e(method)}{flag}</td><td>{texts}</td>{''.join(cells)}</tr>"
        )
    return f"<table><tr><th>method</th><th>texts</th>{head}</tr>{''.join(rows)}</table>"


def _agreement_html(matrix: pd.DataFrame) -> str:
    if matrix.shape[0] < 2:
        return "<p class='sub'>One method: nothing to compare.</p>"
    head = "".join(f"<th>{_e(m)}</th>" for m in matrix.columns)
    body = "".join(
        f"<tr><td>{_e(a)}</td>" + "".join(f"<td>{_fmt(matrix.loc[a, b], 2)}</td>" for b in matrix.columns) + "</tr>"
        for a in matrix.index
    )
    return f"<table><tr><th></th>{head}</tr>{body}</table>"


def _drivers_html(drivers: pd.DataFrame | None, k: int) -> str:
    if drivers is None or drivers.empty:
        return "<p class='sub'>No class drivers given.</p>"
    group = "class" if "class" in drivers.columns else "category" if "category" in drivers.columns else None
    parts = []
    sort_key = "rank" if "rank" in drivers.columns else None
    grouped = drivers.groupby(group, sort=True) if group else [("all", drivers)]
    for name, rows in grouped:
        rows = rows.sort_values(sort_key) if sort_key else rows
        lines = []
        for _, r in rows.head(k).iterrows():
            effect = "-"
            if "mean_effect" in r and pd.notna(r.get("mean_effect")):
                effect = _interval(r["mean_effect"], r.get("effect_ci_low"), r.get("effect_ci_high"))
            attribution = _interval(r["mean_attribution"], r.get("attribution_ci_low"), r.get("attribution_ci_high"))
            lines.append(
                f"<tr><td>{_e(r['driver'])}</td><td>{int(r['texts'])}</td><td>{attribution}</td><td>{effect}</td></tr>"
            )
        parts.append(
            f"<table><tr><th colspan='4'>{_e(name)}</th></tr><tr><th>driver</th><th>texts</th>"
            f"<th>mean attribution [CI]</th><th>masked effect [CI]</th></tr>{''.join(lines)}</table>"
        )
    return f"<div class='drivers'>{''.join(parts)}</div>"


def _verdict_html(verdict: ModelVerdict | None, show_untrusted: bool) -> list[str]:
    """The classifier verdict's block under the title (nothing without a verdict)."""
    if verdict is None:
        return []
    if verdict.trusted:
        return [f"<div class='verdict-ok'><strong>Verdict:</strong> {_e(verdict.reason)}</div>"]
    shown = (
        "they are shown below because the viewer was forced (show_untrusted)"
        if show_untrusted
        else "they are collapsed below"
    )
    return [
        "<div class='banner'><strong>Do not trust this model's explanations.</strong> "
        f"{_e(verdict.reason)} Always predicting the majority class is at least as accurate, so the words the "
        f"methods highlight and the class drivers describe a model that has not learned the task; {shown}.</div>"
    ]


def _highlighted(text: str, spans: Sequence[tuple[int, int, float]], signed: bool, max_chars: int) -> str:
    """``text`` escaped, its words wrapped in level classes; ``spans`` are ``(start, end, score)`` in text order."""
    largest = max((abs(s) for _, _, s in spans), default=0.0)
    shown = text[:max_chars]
    out: list[str] = []
    cursor = 0
    for start, end, score in spans:
        if start >= len(shown):
            break
        end = min(end, len(shown))
        if start < cursor:
            continue
        level = int(math.ceil(LEVELS * abs(score) / largest)) if largest > 0 and math.isfinite(score) else 0
        out.append(html.escape(shown[cursor:start], quote=False))
        word = html.escape(shown[start:end], quote=False)
        if level <= 0:
            out.append(word)
        else:
            kind = ("p" if score > 0 else "n") if signed else "m"
            out.append(f"<span class='{kind}{min(level, LEVELS)}' title='{score:.4g}'>{word}</span>")
        cursor = end
    out.append(html.escape(shown[cursor:], quote=False))
    if len(text) > max_chars:
        out.append(f"<span class='cut'> … ({len(text) - max_chars} more characters)</span>")
    return "".join(out)


def _prediction_html(row: Mapping[str, object], wrong: bool, low: bool) -> str:
    if "predicted_label" in row:
        gold = row.get("gold_label")
        gold_html = f"<span>gold: {_e(gold)}</span>" if gold is not None and pd.notna(gold) else ""
        flags = ("<span class='wrong'>misclassified</span>" if wrong else "") + (
            "<span class='low'>low confidence</span>" if low else ""
        )
        return (
            f"<span class='pred'>predicted: {_e(row['predicted_label'])} "
            f"(p={_fmt(row.get('probability'))})</span>{gold_html}{flags}"
        )
    gold = row.get("gold")
    true_html = f"<span>true: {_fmt(gold, 2)}</span>" if gold is not None and pd.notna(gold) else ""
    return f"<span class='pred'>predicted: {_fmt(row.get('prediction'), 2)}</span>{true_html}"


def render_explanations(
    corpus: pd.DataFrame,
    words: pd.DataFrame,
    predictions: pd.DataFrame,
    signed: Mapping[str, bool],
    *,
    evaluation: pd.DataFrame | None = None,
    drivers: pd.DataFrame | None = None,
    settings: ViewerSettings | None = None,
    notes: Sequence[str] = (),
    target_names: Mapping[int, str] | None = None,
    documents: Sequence[str] | None = None,
    quality: ClassifierQuality | None = None,
    methods: Sequence[str] | None = None,
    agreement: pd.DataFrame | None = None,
    doc_ids: Sequence[str] | None = None,
) -> str:
    """The viewer page as one HTML string.

    Args:
        corpus: ``doc_id, text`` and optionally ``text_pair`` (the corpus artifact's columns).
        words: Word scores of :func:`xattr.reporting.words.word_table`: ``doc_id, method,
            word_index, segment, char_start, char_end, score`` (and ``target``; extra columns
            are ignored). Methods are rows in the order they first appear.
        predictions: One row per document: ``doc_id`` and, for classifiers, ``predicted_label``
            (name), ``probability`` (of the predicted class) and optionally ``gold_label``; for
            regressors ``prediction`` and optionally ``gold`` (or the ``predictions`` artifact's
            rows: :func:`viewer_predictions`).
        signed: Per method in ``words``, whether its scores are signed
            (:func:`xattr.methods.method_signed`).
        evaluation: ``evaluation`` artifact rows of every method (``method, doc_id, metric,
            fraction, value``), ``random`` included for the baseline row and the paired tests.
        drivers: The class-drivers table (:data:`xattr.reporting.class_drivers.CLASS_DRIVER_COLUMNS`;
            any table with ``driver, texts, mean_attribution`` and a ``class`` or ``category``
            column, optionally ``mean_effect`` with CIs and ``rank``).
        settings: Sample size, cut and seed (:class:`ViewerSettings`).
        notes: Lines shown under the header (e.g. "the model has no id2label: classes are ids").
        target_names: Names of explained outputs, shown when a document has several targets.
        documents: List exactly these documents, in this order (default: :func:`sample_documents`).
        quality: A classifier's held-out accuracy and majority-class accuracy for the verdict
            (default: computed on the documents with a gold label).
        methods: The method rows, in order (default: the order the methods first appear in ``words``).
        agreement: The method-agreement matrix (:func:`agreement_matrix` of every document's word
            scores); when given, ``words`` needs only the listed documents' rows
            (:func:`listed_documents`): a caller reading a large corpus from disk reads no more.
        doc_ids: The corpus' documents, in order, when ``corpus`` holds only the listed
            documents' rows (default: ``corpus``'s documents).

    Returns:
        The page.

    Raises:
        ValueError: A method in ``words`` without an entry in ``signed``, words of documents not
            in the corpus, predictions missing for a corpus document, or a requested document not
            in the corpus (each named).
    """
    settings = settings or ViewerSettings()
    methods = list(methods) if methods is not None else list(dict.fromkeys(words["method"]))
    unknown = [m for m in methods if m not in signed]
    if unknown:
        raise ValueError(f"viewer: no signedness given for method(s) {', '.join(map(str, unknown))}")
    doc_ids = [str(d) for d in doc_ids] if doc_ids is not None else corpus["doc_id"].astype(str).tolist()
    known = set(doc_ids)
    stray = sorted(set(words["doc_id"].astype(str)) - known)
    if stray:
        raise ValueError(f"viewer: word scores of document {stray[0]!r}, which is not in the corpus")
    predictions = _corpus_predictions(predictions, doc_ids, settings)
    shown = _listed(doc_ids, predictions, settings, documents)
    classifier = _is_classifier(predictions)

    faithfulness = faithfulness_table(evaluation) if evaluation is not None and len(evaluation) else pd.DataFrame()
    if agreement is None:
        agreement = agreement_matrix(words, methods)
    header = [f"<h1>{_e(settings.title)}</h1>"]
    counts = f"{len(doc_ids)} documents"
    if classifier and "gold_label" in predictions.columns and predictions["gold_label"].notna().any():
        labelled = predictions["gold_label"].notna()
        accuracy = 1.0 - predictions.loc[labelled, "_wrong"].mean()
        wrong = int(predictions["_wrong"].sum())
        counts += f"; accuracy {accuracy:.3f} on {int(labelled.sum())} labelled, {wrong} misclassified"
        if quality is None:
            quality = classifier_quality(
                predictions["gold_label"].tolist(),
                predictions["predicted_label"].tolist(),
                where=f"the {int(labelled.sum())} labelled documents of this corpus",
            )
    verdict = (
        majority_verdict(quality, min_accuracy_gain=settings.min_accuracy_gain) if classifier and quality else None
    )
    listed = (
        f"all {len(shown)} listed"
        if len(shown) == len(doc_ids)
        else f"{len(shown)} listed (seeded stratified sample, seed {settings.seed}, with the least confident and "
        "the misclassified; the tables use every document)"
    )
    header.append(f"<div class='sub'>{_e(counts)}; {_e(listed)}; methods: {_e(', '.join(map(str, methods)))}</div>")
    header += [f"<div class='sub'>{_e(n)}</div>" for n in notes]
    header.append(
        "<div class='grid'><section><h2>Faithfulness (mean over texts [95% bootstrap CI]; paired sign-flip test "
        f"against random)</h2>{_faithfulness_html(faithfulness)}</section>"
        "<section><h2>Method agreement (Spearman of |word score|, mean over documents)</h2>"
        f"{_agreement_html(agreement)}</section></div>"
    )
    header[1:1] = _verdict_html(verdict, settings.show_untrusted)
    drivers_title = f"{'Drivers per predicted class' if classifier else 'Drivers of the predicted value'}"
    drivers_body = f"{_drivers_html(drivers, settings.top_drivers)}"
    if verdict is not None and not verdict.trusted and not settings.show_untrusted:
        header.append(
            f"<details class='untrusted'><summary>{drivers_title} (top {settings.top_drivers}): hidden, the model is "
            f"not better than the majority class; open to show</summary>{drivers_body}</details>"
        )
    else:
        header.append(f"<section><h2>{drivers_title} (top {settings.top_drivers})</h2>{drivers_body}</section>")
    legend = (
        "<div class='legend sub'>signed: <span class='p8'>towards the explained output</span>"
        "<span class='p3'>weakly</span> <span class='n3'>weakly</span><span class='n8'>against it</span> "
        "&nbsp; unsigned: <span class='m3'>low</span><span class='m8'>high</span> (magnitude only); "
        "shades are relative "
        "to each row's largest score; hover a word for its score</div>"
    )
    header.append(legend)

    nav = ["<nav>"]
    if classifier:
        options = "".join(
            f"<option value='{_e(c)}'>{_e(c)}</option>"
            for c in sorted(predictions["predicted_label"].astype(str).unique())
        )
        nav.append(
            f"<label>predicted class <select id='f-class'><option value=''>all</option>{options}</select></label>"
        )
        nav.append("<label><input type='checkbox' id='f-wrong'> misclassified</label>")
        nav.append(
            "<label><input type='checkbox' id='f-low'> low confidence "
            f"(lowest {settings.low_confidence_quantile:.0%})</label>"
        )
    nav.append(
        "<input type='search' id='f-search' placeholder='search text'><span id='f-count' class='sub'></span></nav>"
    )

    texts = corpus.assign(doc_id=corpus["doc_id"].astype(str)).set_index("doc_id")
    has_pair = "text_pair" in texts.columns
    shown_set = set(shown)
    part = words[words["doc_id"].astype(str).isin(shown_set)]
    spans_of: dict[tuple[str, str, int], list[tuple[int, int, int, float]]] = {}
    targets = part["target"] if "target" in part.columns else pd.Series(0, index=part.index)
    for d, m, t, seg, s, e, score in zip(
        part["doc_id"].astype(str), part["method"], targets, part["segment"], part["char_start"], part["char_end"],
        part["score"], strict=True,
    ):  # fmt: skip
        spans_of.setdefault((d, m, int(t)), []).append((int(seg), int(s), int(e), float(score)))
    rows_of: dict[str, list[tuple[str, int]]] = {}
    for d, m, t in spans_of:
        rows_of.setdefault(d, []).append((m, t))
    order = {m: i for i, m in enumerate(methods)}
    pred_rows = predictions.set_index("doc_id")
    cards = []
    for doc_id in shown:
        row = pred_rows.loc[doc_id]
        info = row.to_dict()
        wrong, low = bool(info.pop("_wrong")), bool(info.pop("_low"))
        text = str(texts.at[doc_id, "text"])
        pair = texts.at[doc_id, "text_pair"] if has_pair else None
        keys = sorted(rows_of.get(doc_id, []), key=lambda mt: (order[mt[0]], mt[1]))
        several = len({t for _, t in keys}) > 1
        method_rows = []
        for method, target in keys:
            spans = sorted(spans_of[(doc_id, method, target)])
            segments = [text] + ([pair] if isinstance(pair, str) else [])
            body = " <b>|</b> ".join(
                _highlighted(seg, [(s, e, v) for k, s, e, v in spans if k == i], signed[method], settings.max_chars)
                for i, seg in enumerate(segments)
            )
            name = _e(method)
            if several:
                name += f" → {_e((target_names or {}).get(target, target))}"
            mag = "" if signed[method] else "<span class='mag'>magnitude only</span>"
            method_rows.append(
                f"<div class='row'><div class='mname'>{name}{mag}</div><div class='txt'>{body}</div></div>"
            )
        if not method_rows:
            plain = html.escape(text[: settings.max_chars], quote=False)
            method_rows.append(
                f"<div class='row'><div class='mname'>(no scores)</div><div class='txt'>{plain}</div></div>"
            )
        pred = _e(info.get("predicted_label", "")) if classifier else ""
        cards.append(
            f"<div class='doc' data-pred='{pred}' data-wrong='{int(wrong)}' data-low='{int(low)}'>"
            f"<div class='meta'><span class='id'>{_e(doc_id)}</span>{_prediction_html(info, wrong, low)}</div>"
            f"{''.join(method_rows)}</div>"
        )
    meta = json.dumps({"documents": len(doc_ids), "listed": len(shown), "methods": methods}, default=str)
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; style-src 'unsafe-inline'; "
        "script-src 'unsafe-inline'\">"
        f"<title>{_e(settings.title)}</title><style>{_CSS}{VERDICT_CSS}</style></head><body>"
        f"<header>{''.join(header)}</header>{''.join(nav)}<main>{''.join(cards)}</main>"
        f"<script type='application/json' id='viewer-meta'>{html.escape(meta, quote=False)}</script>"
        f"<script>{_JS}</script></body></html>"
    )


def write_explanations(path: str | Path, *args: object, **kwargs: object) -> Path:
    """Write :func:`render_explanations` (same arguments) to ``path`` (parents created) and return it."""
    target = Path(path)
    page = render_explanations(*args, **kwargs)  # type: ignore[arg-type]
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(page, encoding="utf-8")
    return target
