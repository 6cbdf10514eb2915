"""The Python API: one call explains texts with several methods; checked against the library calls it wraps."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import xattr
from xattr.methods import MethodContext, attribute_corpus, get_method
from xattr.metrics.suite import evaluate_attributions
from xattr.models import encode_texts, load_model, predict_logits
from xattr.models.forward import mean_pooled_hidden_states
from xattr.neighbours.index import build_index
from xattr.neighbours.selection import NeighbourRequest, select_neighbours

TEXTS = ["the movie was good", "awful plot and bad acting", "great fun , love it", "boring film , hate it"]


@pytest.fixture(scope="module")
def explained(tiny_classifier_dir: Path):
    ex = xattr.Explainer(tiny_classifier_dir, device="cpu")
    methods = ["simple_grad", {"name": "grad_input", "label": "gi", "params": {"reduction": "sum"}}, "lafa"]
    return ex, ex.explain(TEXTS, methods=methods, labels=[1, 0, 1, 0])


def test_pieces_equal_attribute_corpus_and_words_sum_their_pieces(explained, tiny_classifier_dir: Path) -> None:
    ex, res = explained
    loaded = load_model(tiny_classifier_dir, device="cpu")
    encoded = encode_texts(loaded.tokenizer, TEXTS, max_length=loaded.max_length)
    targets = [[int(j)] for j in predict_logits(loaded, encoded).argmax(axis=1)]
    direct = attribute_corpus(get_method("grad_input", {"reduction": "sum"}), loaded, encoded, targets)
    pieces = res.pieces[res.pieces["method"] == "gi"]
    np.testing.assert_allclose(pieces["score"].to_numpy(), np.concatenate([r.scores for r in direct]), rtol=1e-6)
    assert pieces["token"].iloc[0] == "[CLS]"
    # words: special tokens gone, each word the sum of its pieces (by hand over the piece rows)
    words = res.words[res.words["method"] == "gi"]
    assert (words["word_index"] >= 0).all()
    by_hand = pieces[pieces["word_index"] >= 0].groupby(["doc_id", "word_index"])["score"].sum()
    got = words.set_index(["doc_id", "word_index"])["score"]
    np.testing.assert_allclose(got.sort_index().to_numpy(), by_hand.sort_index().to_numpy(), rtol=1e-6)
    first = words[words["doc_id"] == "1"]
    assert first["surface"].tolist() == TEXTS[1].split()
    assert [TEXTS[1][s:e] for s, e in zip(first["char_start"], first["char_end"], strict=True)] == TEXTS[1].split()


def test_predictions_and_signedness(explained) -> None:
    ex, res = explained
    p = res.predictions
    assert list(p.columns) == [
        "doc_id", "predicted_id", "predicted_label", "probability", "gold_id", "gold_label", "logits",
    ]  # fmt: skip
    logits = np.array(p["logits"].tolist())
    soft = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(p["probability"], soft.max(axis=1))
    assert p["gold_label"].tolist() == ["1", "0", "1", "0"]  # no id2label: ids as names, said in the notes
    assert any("id2label" in n for n in res.notes)
    assert {k: r.signed for k, r in res.methods.items()} == {"simple_grad": False, "gi": True, "lafa": False}


def test_lafa_neighbours_come_from_the_same_faiss_search_as_the_flow(explained, tiny_classifier_dir: Path) -> None:
    ex, res = explained
    loaded = ex.loaded
    encoded = encode_texts(loaded.tokenizer, TEXTS, max_length=loaded.max_length)
    vectors = mean_pooled_hidden_states(loaded, encoded, layer=-1)
    method = get_method("lafa")
    request = method.requirements(method.params).neighbours
    assert request == NeighbourRequest(max_neighbours=10, epsilon_quantile=0.05)
    selection = select_neighbours(build_index(vectors), vectors, request)
    targets = [[int(j)] for j in predict_logits(loaded, encoded).argmax(axis=1)]
    context = MethodContext(corpus=encoded, neighbours=selection.neighbours)
    direct = attribute_corpus(method, loaded, encoded, targets, context=context)
    got = res.pieces[res.pieces["method"] == "lafa"]["score"].to_numpy()
    np.testing.assert_allclose(got, np.concatenate([r.scores for r in direct]), rtol=1e-6)


def test_lafa_with_a_reference_corpus_uses_its_texts(tiny_classifier_dir: Path) -> None:
    ex = xattr.Explainer(tiny_classifier_dir, device="cpu")
    reference = ["the film was good", "bad acting", "love it", "hate it", "fun plot"]
    spec = {"name": "lafa", "params": {"epsilon_quantile": None, "max_neighbours": 2}}
    with_ref = ex.explain(TEXTS[:2], methods=[spec, "simple_grad"], reference=reference)
    alone = ex.explain(TEXTS[:2], methods=[spec, "simple_grad"])
    lafa_ref = with_ref.pieces[with_ref.pieces["method"] == "lafa"]["score"].to_numpy()
    lafa_alone = alone.pieces[alone.pieces["method"] == "lafa"]["score"].to_numpy()
    base = with_ref.pieces[with_ref.pieces["method"] == "simple_grad"]["score"].to_numpy()
    assert not np.allclose(lafa_ref, lafa_alone)  # other neighbours, other smoothing
    assert not np.allclose(lafa_ref, base)  # the neighbours' term is there
    assert set(with_ref.pieces["doc_id"]) == {"0", "1"}  # reference texts are not explained


def test_evaluate_matches_the_metric_suite_and_adds_random(explained) -> None:
    ex, res = explained
    table = res.evaluate(fractions=(0.2, 0.5))
    assert set(table["method"]) == {"simple_grad", "gi", "lafa", "random"}
    assert set(table["metric"]) == {"aopc", "aopc_sufficiency", "log_odds"}
    direct = evaluate_attributions(
        ex.loaded, res.encoded, res.corpus, res.attributions["gi"], fractions=(0.2, 0.5), replacement="mask",
        max_texts=None, seed=0, batch_size=32,
    )  # fmt: skip
    row = table[(table["method"] == "gi") & (table["metric"] == "aopc")].iloc[0]
    assert row["mean"] == pytest.approx(direct.metrics["aopc"])
    assert row["ci_low"] == pytest.approx(direct.metrics["aopc_ci_low"])
    random_rows = table[table["method"] == "random"]
    assert random_rows["vs_random_p"].isna().all() and not random_rows["not_better_than_random"].any()
    assert set(res.evaluation["method"]) == {"simple_grad", "gi", "lafa", "random"}


def test_html_view_escapes_text(tiny_classifier_dir: Path) -> None:
    ex = xattr.Explainer(tiny_classifier_dir, device="cpu")
    res = ex.explain(["good <script>alert(1)</script> film", "bad"], methods="simple_grad")
    page = str(res.to_html())
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "magnitude only" in page
    cell = res._repr_html_()  # Jupyter: the page in a sandboxed iframe, escaped once more for srcdoc
    assert cell.startswith('<iframe srcdoc="') and 'sandbox="allow-scripts"' in cell
    assert html.unescape(cell.split('srcdoc="', 1)[1].split('" sandbox=', 1)[0]) == page


def test_unmet_needs_and_bad_input_are_one_clear_error(tiny_classifier_dir: Path) -> None:
    ex = xattr.Explainer(tiny_classifier_dir, device="cpu")
    with pytest.raises(
        ValueError, match=r"method 'mask_lrp' \(mask_lrp\) needs head masks: mine them with `xattr heads"
    ):
        ex.explain(TEXTS, methods=["mask_lrp"])
    with pytest.raises(ValueError, match="method 'ldav' needs a model trained with LDAV"):
        ex.explain(TEXTS, methods=["ldav"])
    with pytest.raises(ValueError, match="unknown attribution method 'nope'"):
        ex.explain(TEXTS, methods=["nope"])
    with pytest.raises(ValueError, match="explain: text 2 is empty"):
        ex.explain(["fine", "  "])
    with pytest.raises(ValueError, match=r"explain: label 1 is 'World', not a class of the model \(0, 1\)"):
        ex.explain(TEXTS, labels=["World", 0, 1, 0])
    with pytest.raises(ValueError, match="method label 'simple_grad' appears twice"):
        ex.explain(TEXTS, methods=["simple_grad", "simple_grad"])
    res = ex.explain(TEXTS[:2])
    with pytest.raises(ValueError, match="class drivers: method 'ig' was not computed; computed: simple_grad"):
        res.class_drivers(method="ig")


def test_in_memory_model_with_class_names(tiny_classifier_dir: Path) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(tiny_classifier_dir)
    model.config.id2label = {0: "negative", 1: "positive"}
    ex = xattr.Explainer(model, AutoTokenizer.from_pretrained(tiny_classifier_dir))
    res = ex.explain(TEXTS[:2], labels=["positive", "negative"])
    assert set(res.predictions["predicted_label"]) <= {"negative", "positive"}
    assert res.predictions["gold_id"].tolist() == [1, 0] and not res.notes
    assert isinstance(res.words, pd.DataFrame)
