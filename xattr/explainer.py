"""The Python API: load a model once, explain texts with several methods, look at the result.

    >>> import xattr
    >>> ex = xattr.Explainer(xattr.bundled_minilm())          # a path, a LoadedModel or (model, tokenizer)
    >>> res = ex.explain(["a fine film", "dull and slow"], methods=["simple_grad", "lafa"])
    >>> res.words.head(); res.predictions; res.evaluate(); res.to_html("view.html")

:meth:`Explainer.explain` encodes the texts, predicts once, explains the predicted class (or the
given labels) with each method through :func:`xattr.methods.attribute_corpus`, and returns an
:class:`Explanation`. Methods that need neighbours (LAFA, SHAP with neighbour references) get them
from a FAISS index (:mod:`xattr.neighbours`, as the flow's ``build_index`` stage) over a reference
corpus: the texts themselves unless ``reference`` is given. Methods that need head masks
(``mask_lrp``) take them as ``head_masks`` (from ``xattr heads``); ``ldav`` needs a model trained
with LDAV. Either need unmet is one clear error before anything runs.
"""

from __future__ import annotations

import html
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from xattr.heads.masks import HeadMasks
from xattr.ldav.vectors import LdavError, ldav_vectors_for
from xattr.methods import MethodContext, attribute_corpus, get_method, method_signed
from xattr.methods.runner import attribution_table
from xattr.metrics.suite import evaluate_attributions
from xattr.models.encoding import EncodedText, encode_texts
from xattr.models.forward import mean_pooled_hidden_states, predict_logits
from xattr.models.loading import LoadedModel, class_names, from_modules, load_model
from xattr.models.targets import resolve_targets
from xattr.neighbours.index import IndexType, build_index
from xattr.neighbours.selection import NeighbourRequest, select_neighbours
from xattr.reporting.class_drivers import ClassDriverSettings, class_drivers, class_probabilities
from xattr.reporting.summary import faithfulness_table
from xattr.reporting.viewer import ViewerSettings, render_explanations
from xattr.reporting.words import word_table
from xattr.types import ReplacementPolicy, TokenAttribution

__all__ = ["Explainer", "Explanation", "MethodRun", "MethodSpec"]

logger = logging.getLogger(__name__)

#: A method as :meth:`Explainer.explain` takes it: a registry name, or ``{"name", "label", "params"}``.
MethodSpec = str | Mapping[str, Any]


@dataclass(frozen=True)
class MethodRun:
    """One method of an explanation.

    Attributes:
        key: Its label (unique within the explanation).
        name: Its registry name.
        params: Its validated parameters.
        signed: Whether its scores carry a sign.
        seconds: Wall time of its attribution.
        diagnostics: What the run did besides scoring (``fallbacks``, ...).
    """

    key: str
    name: str
    params: dict[str, Any]
    signed: bool
    seconds: float
    diagnostics: dict[str, float] = field(default_factory=dict)


def _method_specs(methods: MethodSpec | Sequence[MethodSpec]) -> list[tuple[str, str, dict[str, Any]]]:
    items = [methods] if isinstance(methods, str | Mapping) else list(methods)
    if not items:
        raise ValueError("explain: no methods given")
    out: list[tuple[str, str, dict[str, Any]]] = []
    for item in items:
        if isinstance(item, str):
            name, label, params = item, item, {}
        else:
            unknown = set(item) - {"name", "label", "params"}
            if "name" not in item or unknown:
                raise ValueError(f"explain: a method is a name or {{name, label, params}}; got {dict(item)!r}")
            name = str(item["name"])
            label = str(item.get("label") or name)
            params = dict(item.get("params") or {})
        if label in {k for k, _, _ in out}:
            raise ValueError(f"explain: method label {label!r} appears twice; give one a 'label'")
        out.append((label, name, params))
    return out


def _split_inputs(texts: Sequence[str | tuple[str, str]] | str, what: str) -> tuple[list[str], list[str | None]]:
    items = [texts] if isinstance(texts, str) else list(texts)
    if not items:
        raise ValueError(f"{what}: no texts given")
    firsts: list[str] = []
    pairs: list[str | None] = []
    for i, item in enumerate(items, start=1):
        if isinstance(item, str):
            first, pair = item, None
        elif isinstance(item, tuple | list) and len(item) == 2 and all(isinstance(x, str) for x in item):
            first, pair = item[0], item[1]
        else:
            raise ValueError(f"{what}: text {i} must be a string or a (text, pair) of strings, got {item!r}")
        if not first.strip():
            raise ValueError(f"{what}: text {i} is empty")
        firsts.append(first)
        pairs.append(pair)
    return firsts, pairs


class Explainer:
    """A model loaded once, ready to explain texts.

    Args:
        model: A model directory or hub id, a :class:`~xattr.models.loading.LoadedModel`, or an
            in-memory ``PreTrainedModel`` (then ``tokenizer`` is required).
        tokenizer: The fast tokenizer of an in-memory model.
        task: Task name (``None``: inferred from the config).
        max_length: Longest input in word pieces (``None``: the model's limit).
        device: ``"cuda"``, ``"cpu"`` or ``None`` (CUDA when present).
        batch_size: Texts per forward and attribution pass.
        layer: Hidden layer whose mean-pooled states find neighbours (-1: the last), unless a
            method names its own.
        index_type: FAISS index type of the neighbour search (``flat_l2``: exact).
        seed: Seed of neighbour selection and evaluation.
    """

    def __init__(
        self,
        model: str | Path | LoadedModel | Any,
        tokenizer: Any = None,
        *,
        task: str | None = None,
        max_length: int | None = None,
        device: str | None = None,
        batch_size: int = 32,
        layer: int = -1,
        index_type: IndexType = "flat_l2",
        seed: int = 0,
    ) -> None:
        if isinstance(model, LoadedModel):
            self.loaded = model
        elif isinstance(model, str | Path):
            self.loaded = load_model(model, task=task, device=device, max_length=max_length)
        else:
            if tokenizer is None:
                raise ValueError("Explainer: an in-memory model needs its tokenizer (Explainer(model, tokenizer))")
            self.loaded = from_modules(model, tokenizer, task=task, max_length=max_length)
        self.batch_size = batch_size
        self.layer = layer
        self.index_type = index_type
        self.seed = seed
        self.class_names, self.label_note = class_names(self.loaded)

    def encode(self, texts: Sequence[str], pairs: Sequence[str | None] | None = None) -> list[EncodedText]:
        """The texts tokenised for the model, with word alignment (:func:`xattr.models.encode_texts`)."""
        return encode_texts(self.loaded.tokenizer, texts, pairs, max_length=self.loaded.max_length)

    def _gold_ids(self, labels: Sequence[Any] | None, n: int) -> list[int | float | None] | None:
        if labels is None:
            return None
        if len(labels) != n:
            raise ValueError(f"explain: {n} texts but {len(labels)} labels")
        if self.loaded.task == "regression":
            return [None if v is None else float(v) for v in labels]
        by_name = {name: i for i, name in self.class_names.items()}
        out: list[int | float | None] = []
        for i, value in enumerate(labels, start=1):
            if value is None:
                out.append(None)
            elif isinstance(value, str) and value in by_name:
                out.append(by_name[value])
            elif isinstance(value, int | np.integer) and int(value) in self.class_names:
                out.append(int(value))
            else:
                raise ValueError(
                    f"explain: label {i} is {value!r}, not a class of the model "
                    f"({', '.join(self.class_names.values())})"
                )
        return out

    def predictions(self, doc_ids: Sequence[str], logits: np.ndarray, gold: Sequence[Any] | None) -> pd.DataFrame:
        """The predictions table of :class:`Explanation` from the logits (and gold labels)."""
        frame = pd.DataFrame({"doc_id": list(doc_ids)})
        if self.loaded.task == "regression":
            frame["prediction"] = logits[:, 0].astype(np.float64)
            if self.loaded.output_transform == "log":
                frame["prediction"] = np.exp(frame["prediction"])
            frame["gold"] = [np.nan if g is None else g for g in gold] if gold is not None else np.nan
            return frame
        probabilities = class_probabilities(self.loaded, logits)
        predicted = np.argmax(logits, axis=1)
        frame["predicted_id"] = predicted.astype(np.int64)
        frame["predicted_label"] = [self.class_names.get(int(c), str(c)) for c in predicted]
        frame["probability"] = probabilities[np.arange(len(predicted)), predicted]
        gold_ids = list(gold) if gold is not None else [None] * len(frame)
        frame["gold_id"] = pd.array(gold_ids, dtype="Int64")
        frame["gold_label"] = [None if g is None else self.class_names.get(int(g), str(g)) for g in gold_ids]
        frame["logits"] = [row.astype(np.float64).tolist() for row in logits]
        return frame

    def _neighbours(
        self,
        request: NeighbourRequest,
        encoded: list[EncodedText],
        reference: list[EncodedText] | None,
        groups: dict[str, tuple[list[Any], list[Any] | None]],
    ) -> tuple[dict[int, list[int]], dict[str, float]]:
        """Neighbours of each explained text by position in ``encoded + reference`` (LAFA Eq. 4)."""
        layer = request.layer if request.layer is not None else self.layer
        own = mean_pooled_hidden_states(self.loaded, encoded, layer=layer, batch_size=self.batch_size)
        query_groups, reference_groups = groups.get(request.filter, (None, None))
        if reference is None:
            index = build_index(own, self.index_type)
            selection = select_neighbours(index, own, request, groups=query_groups, seed=self.seed)
            neighbours = selection.neighbours
        else:
            if request.filter != "none" and reference_groups is None:
                raise ValueError(
                    f"explain: neighbour_filter {request.filter!r} needs reference_labels for the reference"
                )
            vectors = mean_pooled_hidden_states(self.loaded, reference, layer=layer, batch_size=self.batch_size)
            index = build_index(vectors, self.index_type)
            selection = select_neighbours(
                index, vectors, request, groups=reference_groups, seed=self.seed, queries=own, query_groups=query_groups
            )
            neighbours = {i: [len(encoded) + j for j in js] for i, js in selection.neighbours.items()}
        metrics = {"texts_without_neighbours": float(selection.without_neighbours)}
        if selection.epsilon is not None:
            metrics["epsilon"] = float(selection.epsilon)
        return neighbours, metrics

    def explain(
        self,
        texts: Sequence[str | tuple[str, str]] | str,
        methods: MethodSpec | Sequence[MethodSpec] = ("simple_grad",),
        *,
        labels: Sequence[Any] | None = None,
        reference: Sequence[str | tuple[str, str]] | None = None,
        reference_labels: Sequence[Any] | None = None,
        target: str = "predicted",
        doc_ids: Sequence[str] | None = None,
        head_masks: HeadMasks | None = None,
    ) -> Explanation:
        """Explain ``texts`` with every method.

        Args:
            texts: Strings, or ``(text, pair)`` tuples for a sentence-pair model.
            methods: Registry names (``xattr methods`` lists them) or ``{"name", "label",
                "params"}`` mappings.
            labels: Gold labels per text (class names or ids; numbers for a regressor), shown
                next to the predictions and used with ``target="label"``.
            reference: The corpus neighbour methods draw neighbours from (default: ``texts``).
            reference_labels: Gold labels of ``reference`` (only for ``neighbour_filter: label``).
            target: ``"predicted"`` (explain the predicted class) or ``"label"`` (the gold one).
            doc_ids: Ids of the texts (default ``"0"``, ``"1"``, ...).
            head_masks: Kept heads for ``mask_lrp`` (from ``xattr heads``).

        Returns:
            The :class:`Explanation`.

        Raises:
            ValueError: Empty or malformed texts, unknown methods or parameters, labels that are
                not the model's classes, or a method whose needs (head masks, LDAV vectors) are unmet.
        """
        firsts, pairs = _split_inputs(texts, "explain")
        n = len(firsts)
        ids = [str(d) for d in doc_ids] if doc_ids is not None else [str(i) for i in range(n)]
        if len(ids) != n or len(set(ids)) != n:
            raise ValueError(f"explain: need {n} distinct doc_ids, got {len(ids)} ({len(set(ids))} distinct)")
        specs = _method_specs(methods)
        built = [(key, get_method(name, params)) for key, name, params in specs]
        needs = {key: method.requirements(method.params) for key, method in built}
        for key, method in built:
            if needs[key].head_masks and head_masks is None:
                raise ValueError(
                    f"method {key!r} ({method.name}) needs head masks: mine them with `xattr heads CONFIG.yaml` "
                    "and pass head_masks=..., or set params mask: all"
                )
        ldav = None
        if any(r.ldav_vectors for r in needs.values()):
            try:
                ldav = ldav_vectors_for(self.loaded)
            except LdavError as error:
                raise ValueError(
                    f"method 'ldav' needs a model trained with LDAV (xattr train, ldav.enabled): {error}"
                ) from error
        gold = self._gold_ids(labels, n)
        encoded = self.encode(firsts, pairs)
        logits = predict_logits(self.loaded, encoded, batch_size=self.batch_size)
        targets = resolve_targets(
            self.loaded.task,
            logits,
            policy=target,
            labels=gold if target == "label" else None,  # type: ignore[arg-type]
        )
        reference_encoded = None
        if reference is not None:
            ref_firsts, ref_pairs = _split_inputs(reference, "explain reference")
            reference_encoded = self.encode(ref_firsts, ref_pairs)
        pool = encoded + (reference_encoded or [])
        groups: dict[str, tuple[list[Any], list[Any] | None]] = {
            "prediction": ([int(c) for c in logits.argmax(axis=1)], None)
        }
        if reference_encoded is not None and any(
            r.neighbours is not None and r.neighbours.filter == "prediction" for r in needs.values()
        ):
            ref_logits = predict_logits(self.loaded, reference_encoded, batch_size=self.batch_size)
            groups["prediction"] = (groups["prediction"][0], [int(c) for c in ref_logits.argmax(axis=1)])
        if gold is not None:
            groups["label"] = (
                list(gold),
                self._gold_ids(reference_labels, len(reference_encoded))
                if reference_labels is not None and reference_encoded is not None
                else None,
            )
        neighbour_cache: dict[NeighbourRequest, tuple[dict[int, list[int]], dict[str, float]]] = {}
        pieces = []
        runs: dict[str, MethodRun] = {}
        results_of: dict[str, list[TokenAttribution]] = {}
        for (key, name, params), (_, method) in zip(specs, built, strict=True):
            started = time.perf_counter()
            request = needs[key].neighbours
            neighbours: dict[int, list[int]] = {}
            metrics: dict[str, float] = {}
            if request is not None:
                if request.filter == "label" and gold is None:
                    raise ValueError(f"method {key!r}: neighbour_filter 'label' needs labels=...")
                if request not in neighbour_cache:
                    neighbour_cache[request] = self._neighbours(request, encoded, reference_encoded, groups)
                neighbours, metrics = neighbour_cache[request]
                metrics = dict(metrics)
            context = MethodContext(corpus=pool, neighbours=neighbours, head_masks=head_masks, ldav_vectors=ldav)
            all_targets = list(targets) + [[] for _ in range(len(pool) - n)]
            results = attribute_corpus(
                method, self.loaded, pool, all_targets, context=context, batch_size=self.batch_size
            )
            results_of[key] = results
            pieces.append(attribution_table(ids, encoded, self.loaded.tokenizer, results, key).to_pandas())
            runs[key] = MethodRun(
                key, name, method.params.model_dump(), method_signed(name, params), time.perf_counter() - started,
                metrics | method.diagnostics(context),
            )  # fmt: skip
        corpus = pd.DataFrame({"doc_id": ids, "text": firsts, "text_pair": pairs})
        corpus["label"] = gold if gold is not None else None
        piece_table = pd.concat(pieces, ignore_index=True)
        notes = (self.label_note,) if self.label_note else ()
        truncated = sum(e.truncated for e in encoded)
        if truncated:
            notes += (f"{truncated} texts were truncated to {self.loaded.max_length} word pieces",)
        return Explanation(
            corpus=corpus,
            pieces=piece_table,
            words=word_table(piece_table, corpus),
            predictions=self.predictions(ids, logits, gold),
            methods=runs,
            notes=notes,
            explainer=self,
            encoded=encoded,
            logits=logits,
            targets=[list(t) for t in targets],
            attributions=results_of,
        )


@dataclass
class Explanation:
    """Explanations of some texts by some methods, with the model's predictions.

    Attributes:
        corpus: ``doc_id, text, text_pair, label`` (gold class id or value, or None).
        pieces: One row per word piece, special tokens included (the ``token_attributions``
            artifact's columns: ``doc_id, method, target, token_index, token, word_index,
            char_start, char_end, score``).
        words: One row per word (:func:`xattr.reporting.words.word_table`: ``doc_id, method,
            target, word_index, segment, char_start, char_end, surface, word, score``); special
            tokens removed.
        predictions: Classifiers: ``doc_id, predicted_id, predicted_label, probability, gold_id,
            gold_label, logits``; regressors: ``doc_id, prediction, gold``.
        methods: Per method label, its :class:`MethodRun`.
        notes: Lines worth reading (class names missing, truncation).
        evaluation: ``evaluation`` rows after :meth:`evaluate` (``method, doc_id, metric,
            fraction, value, replacement``), else ``None``.
        drivers: The class-drivers table after :meth:`class_drivers`, else ``None``.
    """

    corpus: pd.DataFrame
    pieces: pd.DataFrame
    words: pd.DataFrame
    predictions: pd.DataFrame
    methods: dict[str, MethodRun]
    notes: tuple[str, ...] = ()
    explainer: Explainer | None = field(default=None, repr=False)
    encoded: list[EncodedText] = field(default_factory=list, repr=False)
    logits: np.ndarray | None = field(default=None, repr=False)
    targets: list[list[int]] = field(default_factory=list, repr=False)
    attributions: dict[str, list[TokenAttribution]] = field(default_factory=dict, repr=False)
    evaluation: pd.DataFrame | None = None
    drivers: pd.DataFrame | None = None

    def _explainer(self) -> Explainer:
        if self.explainer is None:
            raise ValueError("this Explanation has no model attached (build it with Explainer.explain)")
        return self.explainer

    def evaluate(
        self,
        metrics: tuple[str, ...] | None = ("aopc",),
        *,
        fractions: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
        replacement: ReplacementPolicy = "mask",
        max_texts: int | None = None,
        random_baseline: bool = True,
    ) -> pd.DataFrame:
        """Faithfulness of every method under token removal (:func:`xattr.metrics.suite.evaluate_attributions`).

        Args:
            metrics: Metric families (``aopc`` gives AOPC, its sufficiency and log-odds; ``None``: every one
                that applies to the model's task).
            fractions: Removal fractions of the curves.
            replacement: How removed tokens are replaced.
            max_texts: Texts evaluated, a seeded sample (``None``: all).
            random_baseline: Also evaluate the ``random`` method (the baseline row and the
                paired tests of :func:`xattr.reporting.summary.faithfulness_table`).

        Returns:
            The faithfulness table (``method, metric, better, texts, mean, ci_low, ci_high,
            vs_random_difference, vs_random_p, not_better_than_random``); the per-text rows are
            kept in :attr:`evaluation`.
        """
        explainer = self._explainer()
        loaded = explainer.loaded
        runs = dict(self.attributions)
        if random_baseline and "random" not in runs:
            runs["random"] = attribute_corpus(
                get_method("random"), loaded, self.encoded, self.targets, batch_size=explainer.batch_size
            )
        frames = []
        for key, results in runs.items():
            own = [r for r in results if r.position < len(self.encoded)]
            result = evaluate_attributions(
                loaded,
                self.encoded,
                self.corpus,
                own,
                metrics=metrics,
                fractions=fractions,
                replacement=replacement,
                max_texts=max_texts,
                seed=explainer.seed,
                batch_size=explainer.batch_size,
            )
            frames.append(result.to_arrow(key).to_pandas())
        self.evaluation = pd.concat(frames, ignore_index=True)
        return faithfulness_table(self.evaluation, seed=explainer.seed)

    def class_drivers(self, method: str | None = None, settings: ClassDriverSettings | None = None) -> pd.DataFrame:
        """Per predicted class, its driving words (:func:`xattr.reporting.class_drivers.class_drivers`).

        Args:
            method: The method label whose scores rank the words (default: the first signed
                method, else the first).
            settings: Candidates, filters and CIs.

        Returns:
            The class-drivers table (also kept in :attr:`drivers`).
        """
        explainer = self._explainer()
        if method is None:
            signed = [k for k, run in self.methods.items() if run.signed]
            method = signed[0] if signed else next(iter(self.methods))
        if method not in self.methods:
            raise ValueError(f"class drivers: method {method!r} was not computed; computed: {', '.join(self.methods)}")
        self.drivers = class_drivers(
            explainer.loaded,
            self.encoded,
            self.corpus,
            self.pieces[self.pieces["method"] == method],
            self.logits if self.logits is not None else np.zeros((0, 0)),
            settings,
            method=method,
            class_names=explainer.class_names,
        )
        return self.drivers

    def to_html(self, path: str | Path | None = None, *, settings: ViewerSettings | None = None) -> str | Path:
        """The viewer page (:func:`xattr.reporting.viewer.render_explanations`); written to ``path`` when given.

        Returns:
            The path written, or the page itself when ``path`` is ``None``.
        """
        page = render_explanations(
            self.corpus,
            self.words,
            self.predictions,
            {k: run.signed for k, run in self.methods.items()},
            evaluation=self.evaluation,
            drivers=self.drivers,
            settings=settings,
            notes=self.notes,
            target_names=self.explainer.class_names if self.explainer is not None else None,
        )
        if path is None:
            return page
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(page, encoding="utf-8")
        return target

    def _repr_html_(self) -> str:
        """The viewer in a Jupyter cell, inside a sandboxed iframe so its styles and script stay out of the notebook."""
        page = html.escape(str(self.to_html()), quote=True)
        return (
            f'<iframe srcdoc="{page}" sandbox="allow-scripts" '
            'style="width:100%;height:720px;border:1px solid #dde1e7"></iframe>'
        )
