"""Words, attribute-value pairs and noun-chunk phrases of hand-made listings."""

from __future__ import annotations

import pytest

from xattr.reporting.phrases import AttributeRule, Unit, extract_units, load_spacy, noun_chunk_spans


def _by_kind(units: list[Unit], kind: str) -> dict[str, tuple[int, ...]]:
    return {u.key: u.words for u in units if u.kind == kind}


def test_words_merge_repeats_and_strip_punctuation() -> None:
    units = extract_units("Black ink, black INK cartridge", nlp=None, rules=())
    assert _by_kind(units, "word") == {"black": (0, 2), "ink": (1, 3), "cartridge": (4,)}
    assert [u.kind for u in units] == ["word", "word", "word"]


def test_default_rules_on_a_laptop_listing() -> None:
    text = "Dell Latitude Intel Core i7 16GB RAM 512GB SSD 15.6 inch refurbished"
    attributes = _by_kind(extract_units(text, brand="Dell", nlp=None), "attribute")
    assert attributes == {
        "brand: dell": (0,),
        "processor: i7": (2, 3, 4),
        "ram: 16gb": (5, 6),
        "storage: 512gb": (7, 8),
        "screen: 15.6in": (9, 10),
        "condition: refurbished": (11,),
    }


def test_earlier_rules_claim_words_so_capacity_does_not_double_count_ram() -> None:
    attributes = _by_kind(extract_units("kingston 4gb memory and 32 gb usb drive", nlp=None), "attribute")
    assert attributes == {"ram: 4gb": (1, 2), "capacity: 32gb": (4, 5)}


def test_processor_variants_power_and_packs() -> None:
    text = "hp i5-8250u processor 65w adapter pack of 3 ink 2-pack"
    attributes = _by_kind(extract_units(text, nlp=None), "attribute")
    assert attributes == {"processor: i5": (1, 2), "power: 65w": (3,), "pack: 3": (5, 6, 7), "pack: 2": (9,)}


def test_multi_word_brand_and_absent_brand() -> None:
    units = extract_units("the western digital my passport 1tb", brand="Western Digital", nlp=None)
    assert _by_kind(units, "attribute") == {"brand: western digital": (1, 2), "capacity: 1tb": (5,)}
    assert "brand: sony" not in _by_kind(extract_units("a tv", brand="Sony", nlp=None), "attribute")


def test_custom_rules_and_their_validation() -> None:
    rule = AttributeRule("colour", r"\b(?P<value>black|white)\b")
    assert _by_kind(extract_units("white mouse", rules=[rule], nlp=None), "attribute") == {"colour: white": (0,)}
    with pytest.raises(ValueError, match="invalid pattern"):
        AttributeRule("x", "(unclosed")
    with pytest.raises(ValueError, match=r"uses group\(s\) \['size'\]"):
        AttributeRule("x", r"(?P<value>\d+)", "{size}")


def test_phrases_from_given_chunk_spans_keep_two_to_four_words() -> None:
    text = "wireless optical mouse for the big office desk today ok"
    # "wireless optical mouse", "big office desk today", "for" (one word: not a phrase), by hand.
    chunks = [(0, 22), (31, 52), (23, 26)]
    phrases = _by_kind(extract_units(text, chunks=chunks, rules=()), "phrase")
    assert phrases == {"wireless optical mouse": (0, 1, 2), "big office desk today": (5, 6, 7, 8)}
    long = _by_kind(extract_units(text, chunks=[(0, len(text))], rules=()), "phrase")
    assert long == {}  # 10 words: longer than max_phrase_words


def test_spacy_noun_chunks_are_found_on_a_title() -> None:
    nlp = load_spacy()
    spans = noun_chunk_spans(nlp, ["The wireless optical mouse has a long battery life"])[0]
    text = "The wireless optical mouse has a long battery life"
    assert [text[s:e] for s, e in spans] == ["The wireless optical mouse", "a long battery life"]
    phrases = _by_kind(extract_units(text, chunks=spans, rules=()), "phrase")
    assert phrases == {"the wireless optical mouse": (0, 1, 2, 3), "a long battery life": (5, 6, 7, 8)}


def test_word_filter_drops_stop_words_bare_numbers_and_one_character_words() -> None:
    from xattr.reporting.phrases import WordFilter

    keep = WordFilter().keeps
    assert [
        w for w in ["the", "for", "x", "-", "100", "2.5", "8x10", "1,299", "black", "i7", "4k", "mp"] if keep(w)
    ] == [
        "black",
        "i7",
        "4k",
        "mp",
    ]
    loose = WordFilter(stop_words=False, numbers=False, min_chars=1).keeps
    assert all(loose(w) for w in ["the", "x", "100"])
    units = extract_units("The HP 100 x black pen, the pen", nlp=None, rules=(), words=WordFilter())
    assert _by_kind(units, "word") == {"hp": (1,), "black": (4,), "pen": (5, 7)}


def test_a_word_that_is_an_attribute_value_is_reported_once_as_the_pair() -> None:
    from xattr.reporting.phrases import WordFilter

    text = "Dell 8GB RAM laptop with 16 GB memory card dell"
    units = extract_units(text, brand="Dell", nlp=None, words=WordFilter())
    # "8gb" spells ram: 8gb, "16" and "gb" spell ram: 16gb; both "dell"s are brand: dell (the word
    # "dell" everywhere it occurs), "ram" and "memory" name the attribute and stay words.
    assert _by_kind(units, "attribute") == {"brand: dell": (0, 9), "ram: 8gb": (1, 2), "ram: 16gb": (5, 6, 7)}
    assert set(_by_kind(units, "word")) == {"ram", "laptop", "memory", "card"}
    unfiltered = extract_units(text, brand="Dell", nlp=None)
    assert {"8gb", "dell", "16", "gb", "with"} <= set(_by_kind(unfiltered, "word"))


def test_phrases_lose_filtered_words_at_their_edges() -> None:
    from xattr.reporting.phrases import WordFilter

    text = "the wireless mouse for a desk"
    phrases = _by_kind(extract_units(text, chunks=[(0, 18), (23, 29)], rules=(), words=WordFilter()), "phrase")
    assert phrases == {"wireless mouse": (1, 2)}  # "a desk" -> "desk": one word, not a phrase


def test_laptop_rules_apply_only_where_they_match_a_useful_share_of_listings() -> None:
    from xattr.reporting.phrases import DEFAULT_RULES, UNIT_RULES, choose_rules

    office = ["Pilot G2 pens 12-pack black", "Avery 8.5 x 11 in labels new", "HP 64 ink", "Stapler 20 sheet"] * 5
    laptops = office[:16] + ["Dell Core i7 16GB RAM", "HP 8GB memory 256GB SSD", "Acer Celeron", "Lenovo 4GB RAM"]
    chosen = choose_rules(office, 0.1)
    assert not chosen.laptop and chosen.rules == UNIT_RULES and chosen.laptop_share == 0.0
    assert "generic unit rules only" in chosen.describe() and "0.0% of listings" in chosen.describe()
    attributes = _by_kind(extract_units(office[1], rules=chosen.rules, nlp=None), "attribute")
    assert attributes == {"size: 11in": (3, 4)}  # no "condition: new", no "screen:" on labels
    assert _by_kind(extract_units(office[0], rules=chosen.rules, nlp=None), "attribute") == {"pack: 12": (3,)}
    with_laptops = choose_rules(laptops, 0.1)
    assert with_laptops.laptop and with_laptops.laptop_share == 4 / 20
    assert with_laptops.rules[: len(DEFAULT_RULES)] == DEFAULT_RULES
    assert not choose_rules(laptops, 0.25).laptop
    unit = _by_kind(extract_units("Canon 20.1 mp camera 2.4 GHz 5000mAh 16gb", rules=UNIT_RULES, nlp=None), "attribute")
    assert unit == {
        "capacity: 16gb": (7,),
        "resolution: 20.1mp": (1, 2),
        "frequency: 2.4ghz": (4, 5),
        "battery: 5000mah": (6,),
    }
