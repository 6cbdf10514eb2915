"""The baselines a model must be judged against: TF-IDF + ridge for a regressor, the majority class for a classifier.

METHOD-NOTES: a fine-tuned MiniLM on Walmart-Amazon titles was slightly *behind* TF-IDF + ridge,
so a price-driver report states the model's quality next to this baseline; its coefficients are
also a cross-check of the attribution-derived drivers.

TF-IDF follows scikit-learn's ``TfidfVectorizer`` defaults (lower-case, tokens of 2+ word
characters, ``idf = ln((1 + n) / (1 + df)) + 1``, rows L2-normalised); ridge minimises
``||y - Xw - b||^2 + alpha ||w||^2`` with an unpenalised intercept. scikit-learn is used when
installed; otherwise the same model is solved in closed form with numpy (a test checks that the
two agree), so the baseline needs no extra dependency.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse

__all__ = [
    "ClassifierQuality",
    "LinearBaseline",
    "ModelVerdict",
    "classifier_quality",
    "fine_tune_quality",
    "fit_linear_baseline",
    "VERDICT_CSS",
    "majority_verdict",
    "model_verdict",
]

#: How every report shows a :class:`ModelVerdict`: ``.banner`` (red: do not trust the drivers),
#: ``.verdict-ok`` (green) and the collapsed ``details.untrusted`` drivers.
VERDICT_CSS = """
.banner { background: #fdecea; border: 2px solid #c62828; color: #7f1d1d; border-radius: 8px; padding: 12px 20px;
          margin: 16px 0; font-size: 15px; }
.banner strong { color: #b71c1c; }
.verdict-ok { background: #edf7ee; border: 1px solid #2e7d32; color: #1b5e20; border-radius: 8px; padding: 10px 20px;
              margin: 16px 0; }
details.untrusted > summary { cursor: pointer; font-weight: 600; color: #7f1d1d; padding: 8px 0; }
"""

_TOKEN = re.compile(r"(?u)\b\w\w+\b")


@dataclass(frozen=True)
class LinearBaseline:
    """A fitted TF-IDF + ridge model.

    Attributes:
        vocabulary: Terms in column order.
        idf: ``(terms,)`` inverse document frequencies.
        coef: ``(terms,)`` ridge weights on the TF-IDF features (target units per unit TF-IDF).
        intercept: Ridge intercept.
        alpha: Ridge penalty.
        backend: ``"scikit-learn"`` or ``"numpy"``.
    """

    vocabulary: tuple[str, ...]
    idf: np.ndarray
    coef: np.ndarray
    intercept: float
    alpha: float
    backend: str

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        """``(n, terms)`` L2-normalised TF-IDF rows (sparse)."""
        return _tfidf(texts, {t: i for i, t in enumerate(self.vocabulary)}, self.idf)

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        """``(n,)`` predicted targets."""
        return np.asarray(self.transform(texts) @ self.coef).ravel() + self.intercept

    def top_terms(self, k: int = 15) -> list[tuple[str, float]]:
        """The ``k`` largest and ``k`` smallest weights, as ``(term, weight)``, largest first."""
        order = np.argsort(-self.coef, kind="stable")
        picked = list(order[:k]) + [i for i in order[-k:] if i not in set(order[:k])]
        return [(self.vocabulary[i], float(self.coef[i])) for i in picked]

    def driver_terms(
        self, texts: Sequence[str], k: int, keep: Callable[[str], bool] = lambda term: True, min_listings: int = 1
    ) -> list[dict[str, float | int | str]]:
        """The ``k`` largest and ``k`` smallest weights among terms that ``keep`` accepts, with their reach.

        Args:
            texts: Listings the terms are counted in (the corpus).
            k: Terms each way.
            keep: Which terms may be drivers (the report's word filter).
            min_listings: Terms in fewer of ``texts`` are left out (the drivers' ``min_texts``:
                a large weight on a term of three listings is not a driver to trust).

        Returns:
            Records ``term, weight, listings, typical_change``, largest weight first:
            ``listings`` contain the term; ``typical_change`` is ``weight`` times the term's median
            TF-IDF value in those listings, the change of the predicted target (log price for
            a log-price baseline) that the term typically makes.
        """
        x = sparse.csc_matrix(self.transform(texts))
        reach = np.diff(x.indptr)  # listings per term (CSC column lengths)
        kept = [
            int(i)
            for i in np.argsort(-self.coef, kind="stable")
            if reach[i] >= min_listings and keep(self.vocabulary[i])
        ]
        raising = [i for i in kept if self.coef[i] > 0][:k]
        lowering = [i for i in reversed(kept) if self.coef[i] < 0][:k]
        picked = raising + lowering[::-1]
        out: list[dict[str, float | int | str]] = []
        for i in picked:
            column = x.getcol(int(i)).data
            typical = float(np.median(column)) * float(self.coef[i]) if column.size else 0.0
            out.append(
                {
                    "term": self.vocabulary[i],
                    "weight": float(self.coef[i]),
                    "listings": int(column.size),
                    "typical_change": typical,
                }
            )
        return out


@dataclass(frozen=True)
class ModelVerdict:
    """Whether a model's drivers can be trusted: its held-out quality against the linear baseline.

    Attributes:
        trusted: The model beats the baseline by the required margins.
        reason: One sentence saying why (with the numbers).
    """

    trusted: bool
    reason: str


def model_verdict(
    model: dict[str, float], baseline: dict[str, float], *, min_r2_gain: float = 0.0, max_mape_ratio: float = 1.0
) -> ModelVerdict:
    """Trust a regressor only when it is better than the linear baseline on the same held-out rows.

    Args:
        model: ``r2`` and ``mape`` of the model (:func:`xattr.reporting.price_drivers.regression_quality`).
        baseline: The same for the baseline.
        min_r2_gain: The model's R^2 must exceed the baseline's by more than this.
        max_mape_ratio: The model's MAPE must be at most this multiple of the baseline's.

    Returns:
        The :class:`ModelVerdict`; a non-finite quality number is never trusted.
    """
    r2, b_r2, mape, b_mape = model["r2"], baseline["r2"], model["mape"], baseline["mape"]
    numbers = f"held-out R^2 {r2:.3f} vs {b_r2:.3f} for TF-IDF + ridge, MAPE {mape:.1%} vs {b_mape:.1%}"
    if not all(math.isfinite(v) for v in (r2, b_r2, mape, b_mape)):
        return ModelVerdict(False, f"the model's quality cannot be compared with the baseline's ({numbers})")
    problems = []
    if not r2 - b_r2 > min_r2_gain:
        problems.append(f"its R^2 does not exceed the baseline's by more than {min_r2_gain:g}")
    if not mape <= b_mape * max_mape_ratio:
        problems.append(
            "its MAPE is above the baseline's"
            if max_mape_ratio == 1.0
            else f"its MAPE is above {max_mape_ratio:g} x the baseline's"
        )
    if problems:
        return ModelVerdict(
            False, f"The model is not better than the linear baseline: {' and '.join(problems)} ({numbers})."
        )
    return ModelVerdict(True, f"The model is better than the linear baseline ({numbers}).")


@dataclass(frozen=True)
class ClassifierQuality:
    """A classifier's accuracy next to always predicting the most common gold class, on the same rows.

    Attributes:
        accuracy: Share of the rows predicted right.
        majority_accuracy: Share of the rows whose gold class is the most common one.
        majority_label: That class (its name, or index as text).
        rows: Rows with a gold label.
        where: Which rows, for the verdict's sentence (e.g. ``"400 held-out validation rows"``).
    """

    accuracy: float
    majority_accuracy: float
    majority_label: str
    rows: int
    where: str

    def to_dict(self) -> dict[str, object]:
        return dict(vars(self))

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> ClassifierQuality:
        return cls(
            float(d["accuracy"]),  # type: ignore[arg-type]
            float(d["majority_accuracy"]),  # type: ignore[arg-type]
            str(d["majority_label"]),
            int(d["rows"]),  # type: ignore[call-overload]
            str(d["where"]),
        )


def classifier_quality(gold: Sequence[object], predicted: Sequence[object], *, where: str) -> ClassifierQuality | None:
    """Accuracy and the majority-class accuracy of the rows whose gold label is known.

    Args:
        gold: Gold class per row (``None``/NaN: unlabelled, left out).
        predicted: Predicted class per row, comparable with ``gold``.
        where: Which rows these are (shown in the verdict).

    Returns:
        The :class:`ClassifierQuality`, or ``None`` when no row is labelled. Ties for the most
        common class go to the class that sorts first, so the result does not depend on row order.
    """
    pairs = [(str(g), str(p)) for g, p in zip(gold, predicted, strict=True) if not _missing(g)]
    if not pairs:
        return None
    counts = Counter(g for g, _ in pairs)
    top = max(counts.values())
    label = min(c for c, n in counts.items() if n == top)
    right = sum(g == p for g, p in pairs)
    return ClassifierQuality(right / len(pairs), top / len(pairs), label, len(pairs), where)


def fine_tune_quality(
    metrics: Mapping[str, float], rows: int, names: Mapping[int, str] | None = None
) -> ClassifierQuality | None:
    """The quality a fine-tune measured on its validation rows (the trainer's classification metrics).

    Args:
        metrics: ``accuracy``, ``majority_accuracy`` and ``majority_class`` (the class index), as
            :func:`xattr.training.recipe.classification_metrics` gives them.
        rows: The validation rows they were measured on.
        names: Class names by index (default: the index as text).

    Returns:
        The :class:`ClassifierQuality`, or ``None`` without validation rows or those metrics.
    """
    if rows < 1 or not {"accuracy", "majority_accuracy", "majority_class"} <= set(metrics):
        return None
    index = int(metrics["majority_class"])
    return ClassifierQuality(
        float(metrics["accuracy"]),
        float(metrics["majority_accuracy"]),
        (names or {}).get(index, str(index)),
        int(rows),
        f"the {int(rows)} validation rows held out of the fine-tune",
    )


def majority_verdict(quality: ClassifierQuality, *, min_accuracy_gain: float = 0.0) -> ModelVerdict:
    """Trust a classifier only when it beats always predicting the majority class on the same rows.

    Args:
        quality: Accuracy and majority-class accuracy (:func:`classifier_quality`).
        min_accuracy_gain: The model's accuracy must exceed the majority class's by more than this.

    Returns:
        The :class:`ModelVerdict` (a sentence with both numbers and the rows they come from).
    """
    numbers = (
        f"accuracy {quality.accuracy:.3f} vs {quality.majority_accuracy:.3f} for always predicting the majority "
        f"class {quality.majority_label!r}, on {quality.where}"
    )
    if quality.accuracy - quality.majority_accuracy > min_accuracy_gain:
        return ModelVerdict(True, f"The model is better than the majority class ({numbers}).")
    margin = f" by more than {min_accuracy_gain:g}" if min_accuracy_gain else ""
    return ModelVerdict(False, f"The model is not better than the majority class{margin} ({numbers}).")


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _tfidf(texts: Sequence[str], index: dict[str, int], idf: np.ndarray) -> sparse.csr_matrix:
    rows: list[int] = []
    cols: list[int] = []
    values: list[float] = []
    for row, text in enumerate(texts):
        for term, count in Counter(_TOKEN.findall(text.lower())).items():
            col = index.get(term)
            if col is not None:
                rows.append(row)
                cols.append(col)
                values.append(count * idf[col])
    x = sparse.csr_matrix((values, (rows, cols)), shape=(len(texts), len(index)), dtype=np.float64)
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
    return sparse.diags(1.0 / np.where(norms > 0, norms, 1.0)) @ x


def _numpy_fit(texts: Sequence[str], targets: np.ndarray, alpha: float, min_df: int) -> LinearBaseline:
    df = Counter(term for text in texts for term in set(_TOKEN.findall(text.lower())))
    vocabulary = tuple(sorted(t for t, c in df.items() if c >= min_df))
    n = len(texts)
    idf = np.array([math.log((1 + n) / (1 + df[t])) + 1.0 for t in vocabulary])
    x = _tfidf(texts, {t: i for i, t in enumerate(vocabulary)}, idf)
    x_mean, y_mean = np.asarray(x.mean(axis=0)).ravel(), float(targets.mean())
    yc = targets - y_mean
    if x.shape[1] > n:
        # Dual form (n x n), cheaper than the primal when terms > n; the centred Gram matrix is
        # built from the sparse one so that the centred (dense) design is never formed.
        gram = (x @ x.T).toarray()
        row = gram.mean(axis=1, keepdims=True)
        gram_c = gram - row - row.T + gram.mean()
        dual = np.linalg.solve(gram_c + alpha * np.eye(n), yc)
        coef = np.asarray(x.T @ dual).ravel() - x_mean * dual.sum()
    else:
        xc = x.toarray() - x_mean
        coef = np.linalg.solve(xc.T @ xc + alpha * np.eye(x.shape[1]), xc.T @ yc)
    return LinearBaseline(vocabulary, idf, coef, y_mean - float(x_mean @ coef), alpha, "numpy")


def _sklearn_fit(texts: Sequence[str], targets: np.ndarray, alpha: float, min_df: int) -> LinearBaseline:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import Ridge

    vectorizer = TfidfVectorizer(min_df=min_df, dtype=np.float64)
    x = vectorizer.fit_transform(texts)
    ridge = Ridge(alpha=alpha, tol=1e-10).fit(x, targets)
    vocabulary = tuple(vectorizer.get_feature_names_out())
    return LinearBaseline(
        vocabulary, vectorizer.idf_.copy(), ridge.coef_.copy(), float(ridge.intercept_), alpha, "scikit-learn"
    )


def fit_linear_baseline(
    texts: Sequence[str], targets: Sequence[float], *, alpha: float = 1.0, min_df: int = 1, backend: str = "auto"
) -> LinearBaseline:
    """Fit TF-IDF + ridge on ``targets`` (log price for a log-price model).

    Args:
        texts: Training texts.
        targets: One finite number per text.
        alpha: Ridge penalty, > 0.
        min_df: Terms in fewer training texts are dropped.
        backend: ``"auto"`` (scikit-learn when installed, else numpy), ``"scikit-learn"``, ``"numpy"``.

    Returns:
        The fitted :class:`LinearBaseline`.

    Raises:
        ValueError: Empty or mismatched inputs, non-finite targets, ``alpha <= 0``, no term, or
            an unknown backend.
    """
    y = np.asarray(targets, dtype=np.float64)
    if len(texts) == 0 or len(texts) != y.size:
        raise ValueError(f"need one target per text, got {len(texts)} texts and {y.size} targets")
    if not np.all(np.isfinite(y)):
        raise ValueError("targets must be finite")
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    if backend == "auto":
        try:
            import sklearn  # noqa: F401

            backend = "scikit-learn"
        except ImportError:
            backend = "numpy"
    if backend == "scikit-learn":
        model = _sklearn_fit(texts, y, alpha, min_df)
    elif backend == "numpy":
        model = _numpy_fit(texts, y, alpha, min_df)
    else:
        raise ValueError(f"unknown backend {backend!r}; valid: auto, scikit-learn, numpy")
    if not model.vocabulary:
        raise ValueError("no term occurs in enough training texts (min_df)")
    return model
