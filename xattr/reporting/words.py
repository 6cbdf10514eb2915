"""From token scores to word scores, and the words that matter most across a corpus."""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from xattr.models.alignment import word_spans

_STRIP = string.punctuation + "“”‘’"


def normalise_word(word: str) -> str:
    """Lower-case and strip surrounding punctuation ("RAM," -> "ram"); inner characters stay."""
    return word.strip(_STRIP).lower()


def word_sums(attributions: pd.DataFrame) -> pd.DataFrame:
    """Word-piece scores summed per word: ``doc_id, method, target, word_index, score``.

    One row per (document, method, target, word) that has a piece, in the order of first
    appearance; special tokens (word index -1) are dropped. The group keys are factorised to
    integer codes first (a string/Arrow ``doc_id`` key costs seconds at a million rows); the
    groups, their order and the sums are those of grouping on the columns themselves.

    Args:
        attributions: Rows of the ``token_attributions`` artifact (``doc_id, method, target,
            word_index, score``; other columns are ignored).
    """
    pieces = attributions[attributions["word_index"] >= 0]
    keys = ["doc_id", "method", "target", "word_index"]
    codes = {k: pd.factorize(pieces[k]) for k in keys}
    coded = pd.DataFrame({k: c for k, (c, _) in codes.items()} | {"score": pieces["score"].to_numpy()})
    coded = coded[(coded[keys] >= 0).all(axis=1)]  # a missing key is code -1; grouping drops it
    summed = coded.groupby(keys, as_index=False, sort=False)["score"].sum()
    for k, (_, uniques) in codes.items():
        summed[k] = uniques.take(summed[k].to_numpy())
        if pieces[k].dtype != summed[k].dtype:
            summed[k] = summed[k].astype(pieces[k].dtype)
    return summed


@dataclass(frozen=True)
class CorpusWords:
    """The whitespace words of a corpus frame's texts as flat arrays (:func:`corpus_words`).

    Document ``doc_ids[i]``'s words (its text's, then its pair text's) are the rows
    ``offsets[i]:offsets[i + 1]`` of ``segment`` (0 text, 1 pair text), ``char_start`` and
    ``char_end`` (within the segment), ``surface`` (as written) and ``word`` (:func:`normalise_word`).
    """

    doc_ids: pd.Index
    offsets: np.ndarray
    segment: np.ndarray
    char_start: np.ndarray
    char_end: np.ndarray
    surface: np.ndarray
    word: np.ndarray

    def rows(self, doc_ids: pd.Series | np.ndarray, word_index: pd.Series | np.ndarray) -> np.ndarray:
        """The flat row of each (document, word index) pair.

        Raises:
            KeyError: A document that is not in the corpus frame.
            IndexError: A word index beyond its document's words.
        """
        position = self.doc_ids.get_indexer(doc_ids)
        if (position < 0).any():
            missing = np.asarray(doc_ids)[np.flatnonzero(position < 0)[0]]
            raise KeyError(missing)
        index = np.asarray(word_index, dtype=np.int64)
        counts = self.offsets[position + 1] - self.offsets[position]
        outside = (index < 0) | (index >= counts)
        if outside.any():
            k = int(np.flatnonzero(outside)[0])
            raise IndexError(f"word {index[k]} of document {np.asarray(doc_ids)[k]!r}, which has {counts[k]} words")
        return self.offsets[position] + index


def corpus_words(corpus: pd.DataFrame) -> CorpusWords:
    """The words of every text of ``corpus`` (``doc_id, text``; ``text_pair`` when present) as :class:`CorpusWords`.

    One :func:`~xattr.models.alignment.word_spans` call per text; each distinct surface is
    normalised once. Documents must be unique.
    """
    pairs = corpus["text_pair"] if "text_pair" in corpus.columns else [None] * len(corpus)
    counts = np.zeros(len(corpus) + 1, np.int64)
    segment: list[int] = []
    starts: list[int] = []
    ends: list[int] = []
    surfaces: list[str] = []
    for i, (text, pair) in enumerate(zip(corpus["text"], pairs, strict=True)):
        for k, seg in enumerate([text] + ([pair] if isinstance(pair, str) else [])):
            spans = word_spans(seg)
            segment += [k] * len(spans)
            for s, e in spans:
                starts.append(s)
                ends.append(e)
                surfaces.append(seg[s:e])
            counts[i + 1] += len(spans)
    codes, distinct = pd.factorize(pd.Series(surfaces, dtype=object))
    normalised = np.array([normalise_word(w) for w in distinct], dtype=object)
    doc_ids = pd.Index(corpus["doc_id"])
    if not doc_ids.is_unique:
        raise ValueError(f"corpus documents are not unique: {doc_ids[doc_ids.duplicated()][0]!r} repeats")
    return CorpusWords(
        doc_ids=doc_ids,
        offsets=np.cumsum(counts),
        segment=np.asarray(segment, np.int64),
        char_start=np.asarray(starts, np.int64),
        char_end=np.asarray(ends, np.int64),
        surface=np.asarray(surfaces, dtype=object),
        word=normalised[codes] if len(codes) else np.zeros(0, dtype=object),
    )


def word_table(attributions: pd.DataFrame, corpus: pd.DataFrame, *, words: CorpusWords | None = None) -> pd.DataFrame:
    """Sum word-piece scores into whitespace words, keeping where each word is in its text.

    Args:
        attributions: Rows of the ``token_attributions`` artifact (``doc_id, method, target,
            word_index, score``).
        corpus: Rows of the corpus artifact (``doc_id, text``; ``text_pair`` when present).
        words: ``corpus_words(corpus)`` when already made (one corpus frame, several methods).

    Returns:
        ``doc_id, method, target, word_index, segment, char_start, char_end, surface, word, score``:
        one row per (document, method, target, word) that has a piece, in the order of first
        appearance; ``segment`` is 0 (text) or 1 (pair text), ``char_start``/``char_end`` the
        word's characters within its segment, ``surface`` the word as written, ``word`` its
        normalised form (:func:`normalise_word`; empty for punctuation-only words) and
        ``score`` the sum over its pieces. Special tokens (word index -1) are dropped.
    """
    summed = word_sums(attributions)
    words = words if words is not None else corpus_words(corpus)
    # Looked up as arrays (one take per column, no Python object per word: a Python lookup per
    # row cost ~20 s of a 100k-text run's summary).
    rows = words.rows(summed["doc_id"], summed["word_index"])
    summed.insert(4, "segment", words.segment[rows])
    summed.insert(5, "char_start", words.char_start[rows])
    summed.insert(6, "char_end", words.char_end[rows])
    summed.insert(7, "surface", words.surface[rows])
    summed.insert(8, "word", words.word[rows])
    return summed


def word_scores(attributions: pd.DataFrame, corpus: pd.DataFrame, *, words: CorpusWords | None = None) -> pd.DataFrame:
    """Sum word-piece scores into whitespace words (the rows of :func:`word_table` with a word).

    Args:
        attributions: Rows of the ``token_attributions`` artifact (``doc_id, method, target,
            word_index, score``).
        corpus: Rows of the corpus artifact (``doc_id, text, text_pair``).
        words: ``corpus_words(corpus)`` when already made.

    Returns:
        ``doc_id, method, target, word_index, word, score`` with ``score`` the sum over the
        word's pieces (the aggregation recorded with every word-level result); special tokens
        are dropped; ``word`` is the normalised word.
    """
    table = word_table(attributions, corpus, words=words)
    table = table[table["word"] != ""]
    return table[["doc_id", "method", "target", "word_index", "score", "word"]].reset_index(drop=True)


#: Columns of :func:`word_share_totals`: per word, its shares summed over the texts containing it.
SHARE_TOTAL_COLUMNS = ("word", "share", "signed_share", "texts")


def word_share_totals(scores: pd.DataFrame) -> pd.DataFrame:
    """Per word, the sums over texts of its share of each text's attribution (what :func:`top_words` ranks).

    A word's share in a text is its score divided by the sum of absolute word scores of that text
    (so long and short texts weigh alike), summed over the word's occurrences in the text. Totals of
    disjoint sets of texts (a corpus' shards) add up: :func:`add_share_totals`.

    Args:
        scores: Output of :func:`word_scores` for one method.

    Returns:
        ``word, share, signed_share, texts``: per word, the sum over texts of ``|per-text share|``
        and of the signed per-text share, and the number of texts containing it.
    """
    if scores.empty:
        return pd.DataFrame({"word": pd.Series([], dtype=object), "share": [], "signed_share": [], "texts": []})
    # One grouped sum (not a Python call per text: ~100 us each, minutes over a million texts).
    magnitude = scores["score"].astype("float64").abs()  # summed in float64, as Series.sum does for float32
    totals = magnitude.groupby([scores["doc_id"], scores["target"]], sort=False).transform("sum")
    share = scores["score"] / totals.where(totals > 0, 1.0)
    frame = pd.DataFrame({"word": scores["word"], "doc_id": scores["doc_id"], "signed": share, "share": share.abs()})
    per_text = frame.groupby(["word", "doc_id"], as_index=False).agg(
        share=("share", "sum"), signed_share=("signed", "sum")
    )
    out = per_text.groupby("word", as_index=False).agg(
        share=("share", "sum"), signed_share=("signed_share", "sum"), texts=("doc_id", "size")
    )
    return out[list(SHARE_TOTAL_COLUMNS)]


def add_share_totals(totals: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """The :func:`word_share_totals` of the union of disjoint sets of texts, from each set's totals."""
    frames = [t for t in totals if not t.empty]
    if not frames:
        return word_share_totals(pd.DataFrame())
    if len(frames) == 1:
        return frames[0]
    summed = pd.concat(frames, ignore_index=True).groupby("word", as_index=False)[["share", "signed_share", "texts"]]
    return summed.sum()[list(SHARE_TOTAL_COLUMNS)]


def ranked_words(
    totals: pd.DataFrame, *, k: int = 10, min_count: int = 5, signed: bool = False, negate: bool = False
) -> pd.DataFrame:
    """Words ranked by their mean share of each text's attribution, from :func:`word_share_totals`.

    Args:
        totals: Per-word share totals.
        k: How many words to return.
        min_count: Ignore words seen in fewer texts.
        signed: Rank by signed share (largest positive first) instead of absolute share.
        negate: With ``signed``, rank the negated scores (largest negative share first, as positive numbers).

    Returns:
        ``word, mean_share, texts`` sorted by decreasing ``mean_share``.
    """
    if totals.empty:
        return pd.DataFrame({"word": [], "mean_share": [], "texts": []})
    summed = totals["signed_share"] * (-1.0 if negate else 1.0) if signed else totals["share"]
    table = pd.DataFrame({"word": totals["word"], "mean_share": summed / totals["texts"], "texts": totals["texts"]})
    table = table[table["texts"] >= min_count]
    return table.sort_values(["mean_share", "word"], ascending=[False, True]).head(k).reset_index(drop=True)


def top_words(scores: pd.DataFrame, *, k: int = 10, min_count: int = 5, signed: bool = False) -> pd.DataFrame:
    """Words ranked by their mean share of each text's attribution.

    A word's share in a text is its score divided by the sum of absolute word scores of that
    text, so long and short texts weigh alike. Unsigned ranking uses ``|share|``; signed ranking
    keeps the sign (largest positive first).

    Args:
        scores: Output of :func:`word_scores` for one method.
        k: How many words to return.
        min_count: Ignore words seen in fewer texts.
        signed: Rank by signed share instead of absolute share.

    Returns:
        ``word, mean_share, texts`` sorted by decreasing ``mean_share``.
    """
    return ranked_words(word_share_totals(scores), k=k, min_count=min_count, signed=signed)


def top_word_lists(
    scores: pd.DataFrame | None = None,
    *,
    signed: bool,
    k: int = 10,
    min_count: int = 5,
    totals: pd.DataFrame | None = None,
) -> dict[str, list[dict[str, object]]]:
    """A method's top words as records: ``top`` by absolute share, and for signed scores ``positive`` and ``negative``.

    Args:
        scores: Output of :func:`word_scores` for one method (or give ``totals``).
        signed: Whether the method's scores carry a sign (then the signed rankings are added).
        k: Words per list.
        min_count: Ignore words seen in fewer texts.
        totals: The method's :func:`word_share_totals` (summed over shards with :func:`add_share_totals`).

    Returns:
        ``{"top": [...]}`` (and ``"positive"``, ``"negative"``), each a list of
        ``{"word", "mean_share", "texts"}`` records of :func:`top_words`.
    """
    if totals is None:
        if scores is None:
            raise ValueError("top_word_lists needs the word scores or their share totals")
        totals = word_share_totals(scores)
    entry = {"top": ranked_words(totals, k=k, min_count=min_count).to_dict("records")}
    if signed:
        entry["positive"] = ranked_words(totals, k=k, min_count=min_count, signed=True).to_dict("records")
        entry["negative"] = ranked_words(totals, k=k, min_count=min_count, signed=True, negate=True).to_dict("records")
    return entry
