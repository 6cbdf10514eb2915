"""Per-class drivers: mean signed attribution per predicted class, masked effect on the class probability."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import xattr.reporting.class_drivers as class_drivers_module
from xattr.metrics.uncertainty import bootstrap_mean
from xattr.models import encode_texts, load_model, predict_logits
from xattr.reporting.class_drivers import (
    CLASS_DRIVER_COLUMNS,
    REGRESSION_GROUP,
    ClassDriverSettings,
    DriverChunk,
    class_drivers,
    class_masked_texts,
    driver_units,
    streamed_class_drivers,
)

TEXTS = [
    "the movie was good and fun",
    "a good plot , 16 great acting",
    "good film , very good",
    "the acting was bad",
    "bad plot and awful film",
    "not good , bad and boring",
    "great fun , love it",
    "boring , hate it , 8 bad",
    "good fun film",
    "bad bad movie",
]


@pytest.fixture(scope="module")
def setup(tiny_classifier_dir: Path):
    loaded = load_model(tiny_classifier_dir, device="cpu")
    encoded = encode_texts(loaded.tokenizer, TEXTS, max_length=loaded.max_length)
    logits = predict_logits(loaded, encoded)
    corpus = pd.DataFrame({"doc_id": [f"d{i}" for i in range(len(TEXTS))], "text": TEXTS, "text_pair": None})
    # Hand-made signed word-piece scores: +1 for "good", -1 for "bad", 0.1 x word position otherwise.
    rows = []
    for i, enc in enumerate(encoded):
        words = TEXTS[i].split()
        for t, w in enumerate(enc.word_index):
            score = 0.0 if w < 0 else {"good": 1.0, "bad": -1.0}.get(words[w], 0.1 * w)
            rows.append((f"d{i}", int(logits[i].argmax()), t, w, score))
    attributions = pd.DataFrame(rows, columns=["doc_id", "target", "token_index", "word_index", "score"])
    return loaded, encoded, logits, corpus, attributions


def test_ranking_and_masked_effect_match_a_hand_computation(setup) -> None:
    loaded, encoded, logits, corpus, attributions = setup
    settings = ClassDriverSettings(top_k=3, min_count=2, resamples=200)
    table = class_drivers(loaded, encoded, corpus, attributions, logits, settings, method="m")
    assert tuple(table.columns) == CLASS_DRIVER_COLUMNS
    predicted = logits.argmax(axis=1)
    mask_id = loaded.tokenizer.mask_token_id
    for c in np.unique(predicted):
        rows = table[table["class_id"] == c].sort_values("rank")
        members = np.flatnonzero(predicted == c)
        assert (rows["class_texts"] == len(members)).all() and (rows["class"] == str(c)).all()  # no id2label: ids
        assert rows["mean_attribution"].is_monotonic_decreasing
        for _, r in rows.iterrows():
            having = [i for i in members if r["driver"] in TEXTS[i].replace(",", " ").split()]
            assert r["texts"] == len(having) >= 2
            by_hand = []
            for i in having:
                words = TEXTS[i].split()
                hits = [w for w, word in enumerate(words) if word == r["driver"]]
                scores = attributions[(attributions["doc_id"] == f"d{i}") & attributions["word_index"].isin(hits)]
                by_hand.append(scores["score"].sum())
            assert r["mean_attribution"] == pytest.approx(np.mean(by_hand))
        masked = rows[rows["masked"]]
        assert len(masked) == min(3, len(rows)) and masked["rank"].max() == len(masked)
        assert rows.loc[~rows["masked"], "mean_effect"].isna().all()
        for _, r in masked.iterrows():
            drops = []
            for i in members:
                words = TEXTS[i].split()
                hits = {w for w, word in enumerate(words) if word == r["driver"]}
                if not hits:
                    continue
                ids = [
                    mask_id if w in hits else t
                    for t, w in zip(encoded[i].input_ids, encoded[i].word_index, strict=True)
                ]
                with torch.no_grad():
                    out = loaded.model(torch.tensor([list(encoded[i].input_ids), ids])).logits.double().softmax(-1)
                drops.append(float(out[0, c] - out[1, c]))
            assert r["mean_effect"] == pytest.approx(np.mean(drops), abs=1e-6)
            assert r["effect_ci_low"] <= r["mean_effect"] + 1e-12 <= r["effect_ci_high"] + 2e-12


def test_filters_drop_stop_words_numbers_and_single_characters(setup) -> None:
    loaded, encoded, logits, corpus, attributions = setup
    table = class_drivers(
        loaded, encoded, corpus, attributions, logits, ClassDriverSettings(min_count=1, resamples=100)
    )
    drivers = set(table["driver"])
    assert {"the", "and", "was", "it", "a", "16", "8", ","}.isdisjoint(drivers)
    assert {"good", "bad"} <= drivers
    everything = ClassDriverSettings(min_count=1, drop_stop_words=False, drop_numbers=False, min_chars=1, resamples=100)
    loose = set(class_drivers(loaded, encoded, corpus, attributions, logits, everything)["driver"])
    assert {"the", "a", "16", "8"} <= loose
    units = driver_units(["x 2004 3.5 1st 15% ok"], None, ClassDriverSettings())
    assert [u.key for u in units[0]] == ["ok"]


def test_min_count(setup) -> None:
    loaded, encoded, logits, corpus, attributions = setup
    table = class_drivers(
        loaded, encoded, corpus, attributions, logits, ClassDriverSettings(min_count=4, resamples=100)
    )
    assert (table["texts"] >= 4).all()
    # No word in enough texts of any class: an empty table with every column (it once failed in a zip).
    none = class_drivers(
        loaded, encoded, corpus, attributions, logits, ClassDriverSettings(min_count=len(TEXTS) + 1, resamples=10)
    )
    assert none.empty and list(none.columns) == list(CLASS_DRIVER_COLUMNS)


def test_regressor_has_one_group_and_the_drop_of_the_predicted_value(setup, tiny_regressor_dir: Path) -> None:
    _, _, _, corpus, _ = setup
    regressor = load_model(tiny_regressor_dir, device="cpu")
    encoded = encode_texts(regressor.tokenizer, TEXTS, max_length=regressor.max_length)
    outputs = predict_logits(regressor, encoded)
    rows = []
    for i, enc in enumerate(encoded):
        words = TEXTS[i].split()
        for t, w in enumerate(enc.word_index):
            rows.append((f"d{i}", 0, t, w, 0.0 if w < 0 else {"good": 1.0, "bad": -1.0}.get(words[w], 0.0)))
    attributions = pd.DataFrame(rows, columns=["doc_id", "target", "token_index", "word_index", "score"])
    settings = ClassDriverSettings(top_k=1, min_count=2, resamples=100)
    table = class_drivers(regressor, encoded, corpus, attributions, outputs, settings, method="m")
    assert set(table["class"]) == {REGRESSION_GROUP} and (table["class_texts"] == len(TEXTS)).all()
    top = table.sort_values("rank").iloc[0]
    having = [i for i, t in enumerate(TEXTS) if "good" in t.split()]
    by_hand = np.mean([TEXTS[i].split().count("good") for i in having])  # each "good" scores +1
    assert top["driver"] == "good" and top["masked"] and top["mean_attribution"] == pytest.approx(by_hand)
    drops = []
    for i in having:
        hits = {w for w, word in enumerate(TEXTS[i].split()) if word == "good"}
        ids = [
            regressor.tokenizer.mask_token_id if w in hits else t
            for t, w in zip(encoded[i].input_ids, encoded[i].word_index, strict=True)
        ]
        with torch.no_grad():
            out = regressor.model(torch.tensor([list(encoded[i].input_ids), ids])).logits.double()[:, 0]
        value = out.exp() if regressor.output_transform == "log" else out
        drops.append(float(value[0] - value[1]))
    assert top["texts"] == len(having)
    assert top["mean_effect"] == pytest.approx(np.mean(drops), abs=1e-5)


def test_masked_texts_are_the_ones_predicted_and_the_cis_are_their_bootstraps(setup) -> None:
    """``class_masked_texts`` (the bench's floor) re-predicted give the table's effects; CIs are bootstrap_mean's."""
    loaded, encoded, logits, corpus, attributions = setup
    settings = ClassDriverSettings(top_k=2, min_count=2, resamples=150, seed=3)
    table = class_drivers(loaded, encoded, corpus, attributions, logits, settings)
    masked = class_masked_texts(loaded, encoded, corpus, logits, table, settings)
    assert len(masked) == int(table.loc[table["masked"], "texts"].sum())
    probabilities = predict_logits(loaded, masked)
    predicted = logits.argmax(axis=1)
    position = 0
    for c in sorted(np.unique(predicted)):
        members = np.flatnonzero(predicted == c)
        p = torch.tensor(logits[members]).double().softmax(-1).numpy()[:, c]
        rows = table[(table["class_id"] == c)]
        units = driver_units([TEXTS[i] for i in members], None, settings)
        # The masked texts come in the occurrences' order: text by text, unit by unit.
        drops: dict[str, list[float]] = {}
        for k, doc in enumerate(units):
            for u in doc:
                if u.key in set(rows.loc[rows["masked"], "driver"]):
                    q = torch.tensor(probabilities[position]).double().softmax(-1).numpy()[c]
                    drops.setdefault(u.key, []).append(float(p[k] - q))
                    position += 1
        for driver, values in drops.items():
            r = rows[rows["driver"] == driver].iloc[0]
            expected = bootstrap_mean(np.array(values), confidence=0.95, resamples=150, seed=3)
            assert r["mean_effect"] == pytest.approx(expected.mean, abs=1e-9)
            assert r["effect_ci_low"] == pytest.approx(expected.low, abs=1e-9)
            assert r["effect_ci_high"] == pytest.approx(expected.high, abs=1e-9)
    assert position == len(masked)


def _chunked(encoded, corpus, attributions, logits, cuts):
    """The chunk source of ``corpus`` cut at ``cuts`` (as the class-drivers stage reads a sharded corpus)."""

    def chunks(with_scores: bool):
        for a, b in zip(cuts, cuts[1:], strict=False):
            ids = corpus["doc_id"].iloc[a:b].tolist()
            yield DriverChunk(
                ids,
                corpus["text"].iloc[a:b].tolist(),
                corpus["text_pair"].iloc[a:b].tolist(),
                encoded[a:b],
                attributions[attributions["doc_id"].isin(ids)] if with_scores else None,
                logits[a:b] if with_scores else None,
            )

    return chunks


@pytest.mark.parametrize("cuts", [[0, 3, 3, 4, 9, 10], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]])
def test_streamed_chunks_give_the_table_of_the_corpus_in_one_chunk(setup, cuts, monkeypatch) -> None:
    """Chunks (an empty one too) and drivers aggregated in blocks give exactly the one-chunk table."""
    loaded, encoded, logits, corpus, attributions = setup
    # Predictions of both classes (the random tiny model predicts one): each class has its own drivers.
    logits = logits + np.array([[3.0, 0.0] if i % 3 else [0.0, 3.0] for i in range(len(TEXTS))])
    assert len(np.unique(logits.argmax(axis=1))) == 2
    settings = ClassDriverSettings(top_k=3, min_count=2, resamples=100, batch_size=1, seed=2)
    whole = class_drivers(loaded, encoded, corpus, attributions, logits, settings, method="m")
    assert whole["masked"].sum() >= 4 and set(whole["class_id"]) == {0, 1}
    reads: list[tuple[int, int]] = []
    streamed = streamed_class_drivers(
        loaded,
        _chunked(encoded, corpus, attributions, logits, cuts),
        len(TEXTS),
        settings,
        method="m",
        read_progress=lambda done, total: reads.append((done, total)),
    )
    pd.testing.assert_frame_equal(streamed, whole, check_exact=True)
    assert reads == [(b, len(TEXTS)) for b in cuts[1:]]
    monkeypatch.setattr(class_drivers_module, "_BLOCK", 3)  # a few drivers per aggregation call
    blocked = class_drivers(loaded, encoded, corpus, attributions, logits, settings, method="m")
    pd.testing.assert_frame_equal(blocked, whole, check_exact=True)


def test_chunks_that_do_not_cover_the_corpus_are_refused(setup) -> None:
    loaded, encoded, logits, corpus, attributions = setup
    chunks = _chunked(encoded, corpus, attributions, logits, [0, 4, 9])
    with pytest.raises(ValueError, match="the chunks hold 9 texts, the corpus 10"):
        streamed_class_drivers(loaded, chunks, len(TEXTS), ClassDriverSettings(min_count=1, resamples=10))
