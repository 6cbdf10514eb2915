"""The explanation viewer: sample, agreement matrix, escaping, page-size bound, and a real headless browser."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from xattr.reporting.viewer import (
    ViewerSettings,
    agreement_matrix,
    agreement_totals,
    listed_documents,
    render_explanations,
    sample_documents,
    viewer_predictions,
)

CHROMIUM = Path("/usr/bin/chromium")
WORDS = "stocks rose as oil fell while the team won its match and rain hit the capital".split()


def _tables(n: int, seed: int = 0, methods: tuple[str, ...] = ("ig", "simple_grad")):
    rng = np.random.default_rng(seed)
    texts = [" ".join(rng.choice(WORDS, size=int(rng.integers(5, 14)))) for _ in range(n)]
    texts[0] = "markets <script>alert('x')</script> & <b>bold</b> fell"
    ids = [f"doc-{i}" for i in range(n)]
    corpus = pd.DataFrame({"doc_id": ids, "text": texts, "text_pair": None})
    rows = []
    for d, text in zip(ids, texts, strict=True):
        start = 0
        for w, word in enumerate(text.split()):
            s = text.index(word, start)
            start = s + len(word)
            for m in methods:
                score = float(rng.normal()) if m == "ig" else float(rng.random())
                rows.append((d, m, 0, w, 0, s, start, score))
    words = pd.DataFrame(
        rows, columns=["doc_id", "method", "target", "word_index", "segment", "char_start", "char_end", "score"]
    )
    classes = rng.choice(["World", "Sports", "Business"], size=n, p=[0.6, 0.3, 0.1])
    gold = classes.copy()
    wrong = rng.random(n) < 0.05
    gold[wrong] = "Sci/Tech"
    predictions = pd.DataFrame(
        {"doc_id": ids, "predicted_label": classes, "probability": rng.uniform(0.3, 1.0, size=n), "gold_label": gold}
    )
    return corpus, words, predictions


def test_sample_keeps_misclassified_and_least_confident_and_is_stratified_and_seeded() -> None:
    _, _, predictions = _tables(2000)
    settings = ViewerSettings(max_documents=300, least_confident=20)
    chosen = sample_documents(predictions, settings)
    assert len(chosen) == 300 == len(set(chosen))
    wrong = set(predictions.loc[predictions["gold_label"] != predictions["predicted_label"], "doc_id"])
    assert wrong <= set(chosen)
    least = predictions.nsmallest(20, "probability")["doc_id"]
    assert set(least) <= set(chosen)
    assert chosen == sample_documents(predictions, settings)
    assert chosen != sample_documents(predictions, ViewerSettings(max_documents=300, seed=1))
    rest = predictions[~predictions["doc_id"].isin(wrong | set(least))]
    picked = rest[rest["doc_id"].isin(chosen)]
    share = picked["predicted_label"].value_counts(normalize=True)
    expected = rest["predicted_label"].value_counts(normalize=True)
    assert (share - expected).abs().max() < 0.02  # proportional (largest remainders), not random luck
    assert sample_documents(predictions.head(50), settings) == predictions["doc_id"].head(50).tolist()


def test_agreement_is_the_mean_per_document_spearman_of_magnitudes() -> None:
    _, words, _ = _tables(40)
    matrix = agreement_matrix(words)
    expected = []
    for _, doc in words.groupby("doc_id"):
        wide = doc.pivot(index="word_index", columns="method", values="score").abs()
        if len(wide) >= 3:
            expected.append(spearmanr(wide["ig"], wide["simple_grad"]).statistic)
    assert matrix.loc["ig", "simple_grad"] == pytest.approx(np.mean(expected))
    assert matrix.loc["ig", "ig"] == 1.0
    same = pd.concat([words[words["method"] == "ig"], words[words["method"] == "ig"].assign(method="copy")])
    assert agreement_matrix(same).loc["ig", "copy"] == pytest.approx(1.0)


def test_page_escapes_text_and_marks_unsigned_methods() -> None:
    corpus, words, predictions = _tables(30)
    page = render_explanations(corpus, words, predictions, {"ig": True, "simple_grad": False})
    assert "<script>alert" not in page and "<b>bold</b>" not in page
    assert (
        "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page or "&lt;script&gt;alert('x')&lt;/script&gt;" in page
    )
    assert page.count("<script") == 2  # the page's own metadata and filter script only
    assert "http://" not in page and "https://" not in page  # nothing fetched
    assert page.count("magnitude only") == 30 + 1  # one per unsigned row, one in the legend
    assert re.search(r"class='p\d'", page) and re.search(r"class='n\d'", page) and re.search(r"class='m\d'", page)


def test_page_size_is_bounded_by_the_sample() -> None:
    settings = ViewerSettings(max_documents=200)
    small = render_explanations(*_tables(200), {"ig": True, "simple_grad": False}, settings=settings)
    large = render_explanations(*_tables(5000), {"ig": True, "simple_grad": False}, settings=settings)
    assert large.count("class='doc'") == 200
    assert len(large) < 1.3 * len(small)


def test_bad_input_is_named() -> None:
    corpus, words, predictions = _tables(5)
    with pytest.raises(ValueError, match="no signedness given for method"):
        render_explanations(corpus, words, predictions, {"ig": True})
    with pytest.raises(ValueError, match="word scores of document 'ghost', which is not in the corpus"):
        render_explanations(
            corpus,
            pd.concat([words, words.head(1).assign(doc_id="ghost")]),
            predictions,
            {"ig": True, "simple_grad": False},
        )
    with pytest.raises(ValueError, match="no prediction for document 'doc-4'"):
        render_explanations(corpus, words, predictions.head(4), {"ig": True, "simple_grad": False})


def _browser(tmp_path: Path, page: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,1800", *extra, page.as_uri(),
    ]  # fmt: skip
    return subprocess.run(command, check=True, capture_output=True, text=True, timeout=180)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian chromium at /usr/bin/chromium")
def test_viewer_runs_in_headless_chromium(tmp_path: Path) -> None:
    from matplotlib.image import imread

    corpus, words, predictions = _tables(60)
    rng = np.random.default_rng(3)
    evaluation = pd.DataFrame(
        [
            (m, d, "aopc", None, float(rng.normal(mu, 0.05)))
            for m, mu in (("ig", 0.6), ("simple_grad", 0.5), ("random", 0.5))
            for d in corpus["doc_id"]
        ],
        columns=["method", "doc_id", "metric", "fraction", "value"],
    )
    drivers = pd.DataFrame(
        {"class": ["World", "World", "Sports"], "driver": ["capital", "oil", "team"], "rank": [1, 2, 1],
         "texts": [9, 7, 8], "mean_attribution": [0.4, 0.2, 0.5], "mean_effect": [0.1, np.nan, 0.2],
         "effect_ci_low": [0.05, np.nan, 0.1], "effect_ci_high": [0.15, np.nan, 0.3]}
    )  # fmt: skip
    page = tmp_path / "view.html"
    page.write_text(
        render_explanations(
            corpus, words, predictions, {"ig": True, "simple_grad": False}, evaluation=evaluation, drivers=drivers
        )
    )
    dom = _browser(tmp_path, page, "--dump-dom").stdout
    assert "60 of 60 shown" in dom  # the inline filter script ran
    assert "alert(" not in re.sub(r"&lt;script&gt;alert\('x'\)&lt;/script&gt;", "", dom)
    assert dom.count("<script") == 2  # the text's <script> is text, not an element
    assert "not better than random" in dom and "simple_grad" in dom  # flagged: AOPC 0.5 vs random 0.5
    assert "capital" in dom and "masked effect" in dom and "None" not in dom
    shot = tmp_path / "view.png"
    _browser(tmp_path, page, f"--screenshot={shot}")
    pixels = imread(shot)[..., :3]
    assert pixels.shape[:2] == (1800, 1400)

    def count(hex_colour: str) -> int:
        rgb = np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)]) / 255
        return int((np.abs(pixels - rgb) < 0.02).all(axis=-1).sum())

    assert count("#4b7ac6") > 200 and count("#dc4e3e") > 200  # strongest blue and red words (signed row)
    assert count("#ee9e10") > 200  # strongest orange words (unsigned row)
    shutil.rmtree(tmp_path / "profile", ignore_errors=True)


def test_regressor_rows_show_predicted_and_true_values() -> None:
    corpus, words, _ = _tables(300)
    predictions = pd.DataFrame({"doc_id": corpus["doc_id"], "prediction": np.arange(300) * 10.0, "gold": 5.0})
    settings = ViewerSettings(max_documents=50)
    page = render_explanations(corpus, words, predictions, {"ig": True, "simple_grad": False}, settings=settings)
    assert page.count("class='doc'") == 50 and "id='f-class'" not in page
    assert "true: 5.00" in page
    chosen = sample_documents(predictions, settings)
    corpus_quintile = pd.qcut(predictions["prediction"], 5, labels=False).set_axis(predictions["doc_id"])
    assert len(chosen) == 50 and (corpus_quintile.loc[chosen].value_counts() == 10).all()  # 10 per corpus quintile


def test_the_predictions_artifact_renders_as_the_api_table_does() -> None:
    corpus, words, predictions = _tables(30)
    signed = {"ig": True, "simple_grad": False}
    artifact = predictions.rename(columns={"probability": "predicted_probability"}).assign(
        logits=[[0.0, 1.0]] * 30, predicted_value=None, gold_value=None
    )
    assert render_explanations(corpus, words, artifact, signed) == render_explanations(
        corpus, words, predictions, signed
    )
    values = pd.DataFrame({"doc_id": corpus["doc_id"], "prediction": np.arange(30.0), "gold": 2.0})
    regressor = values.rename(columns={"prediction": "predicted_value", "gold": "gold_value"}).assign(
        predicted_label=None, predicted_probability=None, gold_label=None
    )
    assert render_explanations(corpus, words, regressor, signed) == render_explanations(corpus, words, values, signed)
    assert list(viewer_predictions(regressor).columns[:3]) == ["doc_id", "prediction", "gold"]


def test_documents_lists_exactly_those_and_names_an_unknown_one() -> None:
    corpus, words, predictions = _tables(30)
    page = render_explanations(corpus, words, predictions, {"ig": True, "simple_grad": False}, documents=["doc-7"])
    assert page.count("<div class='doc'") == 1 and "<span class='id'>doc-7</span>" in page
    with pytest.raises(ValueError, match=r"^viewer: document 'doc-99' is not in the corpus \(30 documents\)$"):
        render_explanations(corpus, words, predictions, {"ig": True, "simple_grad": False}, documents=["doc-99"])


def _drivers_table() -> pd.DataFrame:
    return pd.DataFrame(
        {"class": ["World", "Sports"], "driver": ["oil", "match"], "texts": [9, 7], "mean_attribution": [0.4, 0.3]}
    )


def test_a_classifier_no_better_than_the_majority_class_gets_the_banner_and_collapsed_drivers() -> None:
    corpus, words, predictions = _tables(40)
    # Gold: 30 World, 10 Sports; the model predicts Sports for the first 20 documents, World after:
    # 10 right among the first 20 (the Sports ones are ids 0-9), 20 right after: accuracy 30/40 = 0.75,
    # exactly the majority class's 30/40, so it is not better.
    gold = ["Sports"] * 10 + ["World"] * 30
    predicted = ["Sports"] * 20 + ["World"] * 20
    predictions = predictions.assign(gold_label=gold, predicted_label=predicted)
    page = render_explanations(corpus, words, predictions, {"ig": True, "simple_grad": False}, drivers=_drivers_table())
    assert "Do not trust this model's explanations." in page
    assert "accuracy 0.750 vs 0.750 for always predicting the majority class &#x27;World&#x27;" in page
    assert "on the 40 labelled documents of this corpus" in page
    collapsed = page[page.index("<details class='untrusted'>") : page.index("</details>")]
    assert "<td>oil</td>" in collapsed and "<td>match</td>" in collapsed
    forced = render_explanations(
        corpus, words, predictions, {"ig": True, "simple_grad": False}, drivers=_drivers_table(),
        settings=ViewerSettings(show_untrusted=True),
    )  # fmt: skip
    assert "<details class='untrusted'>" not in forced and "Drivers per predicted class (top 10)</h2>" in forced
    assert "shown below because the viewer was forced" in forced


def test_a_better_classifier_gets_the_green_verdict_and_held_out_numbers_win() -> None:
    from xattr.reporting.baseline import ClassifierQuality

    corpus, words, predictions = _tables(40)
    predictions = predictions.assign(gold_label=predictions["predicted_label"])  # every document right
    page = render_explanations(corpus, words, predictions, {"ig": True, "simple_grad": False}, drivers=_drivers_table())
    assert "class='verdict-ok'" in page and "class='banner'" not in page
    assert "The model is better than the majority class (accuracy 1.000 vs" in page
    # A held-out quality given by the flow replaces the corpus numbers (a model trained on this corpus).
    held = ClassifierQuality(0.55, 0.6, "World", 120, "the 120 validation rows held out of the fine-tune")
    page = render_explanations(
        corpus, words, predictions, {"ig": True, "simple_grad": False}, drivers=_drivers_table(), quality=held
    )
    assert "accuracy 0.550 vs 0.600" in page and "the 120 validation rows held out of the fine-tune" in page
    assert "class='banner'" in page and "<details class='untrusted'>" in page
    strict = render_explanations(
        corpus, words, predictions, {"ig": True, "simple_grad": False},
        settings=ViewerSettings(min_accuracy_gain=0.5),
        quality=ClassifierQuality(0.9, 0.6, "World", 120, "held-out rows"),
    )  # fmt: skip
    assert "not better than the majority class by more than 0.5" in strict


def test_a_regressor_or_unlabelled_classifier_has_no_majority_verdict() -> None:
    corpus, words, predictions = _tables(20)
    unlabelled = render_explanations(
        corpus, words, predictions.drop(columns="gold_label"), {"ig": True, "simple_grad": False}
    )
    assert "class='banner'" not in unlabelled and "class='verdict-ok'" not in unlabelled


def test_the_page_from_the_listed_documents_words_and_a_given_agreement_is_the_same_page() -> None:
    """What ``explanations_page`` does at corpus scale (reads only the listed rows) changes nothing on the page."""
    corpus, words, predictions = _tables(600)
    settings = ViewerSettings(max_documents=40)
    signed = {"ig": True, "simple_grad": False}
    full = render_explanations(corpus, words, predictions, signed, settings=settings)
    listed = listed_documents(corpus["doc_id"].tolist(), predictions, settings)
    assert listed == sample_documents(predictions, settings) and len(listed) == 40
    part = words[words["doc_id"].isin(set(listed))]
    page = render_explanations(
        corpus,
        part,
        predictions,
        signed,
        settings=settings,
        documents=listed,
        methods=["ig", "simple_grad"],
        agreement=agreement_matrix(words),
    )
    assert page == full
    assert page != render_explanations(corpus, part, predictions, signed, settings=settings, documents=listed)


def test_agreement_does_not_depend_on_how_document_ids_are_stored() -> None:
    """Integer-coded ids inside agreement_matrix: the same matrix as a hand loop of scipy's Spearman."""
    _, words, _ = _tables(120)
    matrix = agreement_matrix(words.assign(doc_id=words["doc_id"].astype("string[pyarrow]")))
    rhos = []
    for _, doc in words.groupby("doc_id"):
        a = doc[doc["method"] == "ig"].set_index("word_index")["score"].abs()
        b = doc[doc["method"] == "simple_grad"].set_index("word_index")["score"].abs()
        a, b = a.groupby(level=0).sum(), b.groupby(level=0).sum()
        if len(a) >= 3 and a.nunique() > 1 and b.nunique() > 1:
            rhos.append(spearmanr(a, b.loc[a.index]).statistic)
    assert matrix.loc["ig", "simple_grad"] == pytest.approx(np.mean(rhos), abs=1e-12)


def _pandas_agreement(words: pd.DataFrame, methods: list[str]) -> pd.DataFrame:
    """The agreement matrix as computed before, grouping on the document ids themselves (strings)."""
    frame = words[words["method"].isin(methods)]
    if "target" in frame.columns:
        first = frame.groupby("doc_id")["target"].transform("first")
        frame = frame[frame["target"] == first]
    wide = frame.assign(score=frame["score"].abs()).pivot_table(
        index=["doc_id", "word_index"], columns="method", values="score", aggfunc="sum"
    )
    out = pd.DataFrame(np.eye(len(methods)), index=methods, columns=methods)
    ranks = wide.groupby(wide.index.get_level_values("doc_id")).rank()
    for i, a in enumerate(methods):
        for b in methods[i + 1 :]:
            pair = ranks[[a, b]].dropna()
            f = pd.DataFrame({"x": pair[a].to_numpy(), "y": pair[b].to_numpy(), "doc": pair.index.get_level_values(0)})
            g = f.groupby("doc")
            dx, dy = f["x"] - g["x"].transform("mean"), f["y"] - g["y"].transform("mean")
            parts = pd.DataFrame(
                {"doc": f["doc"], "xy": dx * dy, "xx": dx * dx, "yy": dy * dy, "n": g["x"].transform("size")}
            )
            sums = parts.groupby("doc").agg(xy=("xy", "sum"), xx=("xx", "sum"), yy=("yy", "sum"), n=("n", "first"))
            ok = (sums["n"] >= 3) & (sums["xx"] > 0) & (sums["yy"] > 0)
            rho = sums.loc[ok, "xy"] / np.sqrt(sums.loc[ok, "xx"] * sums.loc[ok, "yy"])
            out.loc[a, b] = out.loc[b, a] = float(rho.mean()) if ok.any() else np.nan
    return out


def test_agreement_on_integer_coded_ids_is_the_computation_on_the_ids_bit_for_bit() -> None:
    """Ties, words one method lacks, several targets, duplicate rows, shuffled ids: the same float64s."""
    rng = np.random.default_rng(7)
    rows = []
    for d in rng.permutation(300):
        n = int(rng.integers(1, 25))
        targets = [0, 1] if d % 7 == 0 else [int(d % 2)]
        for t in targets:
            for m in ("ig", "lafa", "grad"):
                for w in range(n):
                    if m == "grad" and rng.random() < 0.2:
                        continue  # a word this method has no score for
                    score = float(rng.integers(-3, 4)) if m == "lafa" else float(rng.normal())  # lafa: many ties
                    rows.append((f"doc-{d}", m, t, w, score))
                    if rng.random() < 0.05:
                        rows.append((f"doc-{d}", m, t, w, float(rng.normal())))  # a second piece of the word
    words = pd.DataFrame(rows, columns=["doc_id", "method", "target", "word_index", "score"])
    methods = ["ig", "lafa", "grad"]
    pd.testing.assert_frame_equal(agreement_matrix(words, methods), _pandas_agreement(words, methods), check_exact=True)


def test_agreement_of_shards_combines_to_the_whole_corpus_matrix() -> None:
    """Per-shard totals (documents split in three), combined: the matrix of all documents at once."""
    _, words, _ = _tables(150)
    methods = ["ig", "simple_grad"]
    docs = sorted(words["doc_id"].unique())
    shards = [words[words["doc_id"].isin(docs[a:b])] for a, b in ((0, 40), (40, 41), (41, len(docs)))]
    combined = agreement_matrix(None, methods, totals=[agreement_totals(s, methods) for s in shards])
    whole = agreement_matrix(words, methods)
    assert combined.loc["ig", "simple_grad"] == pytest.approx(whole.loc["ig", "simple_grad"], rel=1e-14)
    assert combined.loc["ig", "simple_grad"] != 0.0 and np.diag(combined.to_numpy()).tolist() == [1.0, 1.0]
    # A shard where no document qualifies adds nothing; no shard qualifying at all gives NaN.
    assert agreement_totals(shards[1].head(2), methods) == {("ig", "simple_grad"): (0.0, 0)}
    assert np.isnan(agreement_matrix(None, methods, totals=[{}]).loc["ig", "simple_grad"])
