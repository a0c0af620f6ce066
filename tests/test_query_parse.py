"""Understood queries: the constructed set with known answers (accuracy >= 0.95), the parser's rules,
and results that honour every parsed hard constraint (the served pipeline, real MiniLM)."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.parse_eval import accuracy, bare_demo_index, load_set, violations
from indexer.build import build_index
from indexer.schema import make_items
from indexer.table import Filters
from ranker import pipeline
from ranker.services import Services, build_search
from retriever.search import SearchConfig
from retriever.search.parse import QueryParser, size_matches, title_violates

from .conftest import TINY_ITEMS


@pytest.fixture(scope="module")
def demo_parser():
    return QueryParser(bare_demo_index())


def test_constructed_set_accuracy(demo_parser):
    acc, misses = accuracy(demo_parser, load_set())
    assert acc >= 0.95, misses


def test_prices_sizes_and_model_numbers(demo_parser):
    p = demo_parser.parse("quietwave earbuds 50-150")
    assert (p.min_price, p.max_price, p.brand, p.text) == (50, 150, "Quietwave", "earbuds")
    assert demo_parser.parse("headphones 20 to 40").filters() == Filters(min_price=20, max_price=40)
    for q in ("2-person tent", "sm-50 headphones", "10-12 inch skillet", "toys for 3 to 5 years", "4k monitor"):
        p = demo_parser.parse(q)
        assert p.min_price is None and p.max_price is None, q
    assert [(s.value, s.unit) for s in demo_parser.parse("hair mask 250ml").sizes] == [(250.0, "ml")]
    # a request's own filters win for brand / category, price bounds intersect
    merged = demo_parser.parse("thermalia bottle under $50").filters(Filters(brand="Other", max_price=30))
    assert merged == Filters(brand="Other", max_price=30)


def test_brands_boosts_and_negations(demo_parser):
    assert demo_parser.parse("lipstick by rouge atelier").brand == "Rouge Atelier"
    p = demo_parser.parse("yoga mat without lotus ground")
    assert p.exclude_brands == ("Lotus Ground",) and p.brand is None and p.text == "yoga mat"
    assert demo_parser.parse("candles -soy").exclude_words == ("soy",)
    for q in ("no-show socks", "sulfate-free shampoo", "non-stick skillet"):
        assert demo_parser.parse(q).exclude_words == () and demo_parser.parse(q).text == q, q
    assert demo_parser.parse("mugs in Drinkware").category == "Drinkware"
    assert demo_parser.parse("tents").category is None and demo_parser.parse("tents").text == "tents"


def test_a_brand_that_is_a_common_word_is_only_a_boost():
    records = [dict(r) for r in TINY_ITEMS] + [
        {"item_id": f"trail-{n}", "title": f"Trail running shoe {n}", "brand": "Stride"} for n in range(3)]
    index = bare(records)
    p = QueryParser(index).parse("trail tent")
    assert p.brand is None and p.boost_brands == ("Trail",) and p.text == "trail tent"
    assert QueryParser(index).parse("by trail tent").brand == "Trail"


def bare(records):
    from indexer.store import ItemIndex

    items = make_items(records)
    index = ItemIndex(model="none", dim=4)
    index.add(items, np.eye(4, dtype=np.float32)[np.arange(len(items)) % 4])
    return index


def test_helpers():
    assert title_violates("Soy wax candle", ("soy",)) and not title_violates("Soy-free beeswax candle", ("soy",))
    rec = {"title": "Hair mask, 250 ml", "attributes": {"size": "250 ml"}}
    parsed = QueryParser(bare(TINY_ITEMS)).parse("mask 250ml")
    assert size_matches(rec, parsed.sizes) and not size_matches(rec, QueryParser(bare(TINY_ITEMS)).parse(
        "mask 500ml").sizes)


def test_every_result_honours_the_parsed_hard_constraints(embedder, one_thread):
    from indexer.clean import clean_catalog
    from indexer.loaders import load_catalog

    from .conftest import ROOT

    catalog, _ = clean_catalog(load_catalog(ROOT / "data" / "demo"))
    index = build_index(catalog, embedder, progress=False)
    svc = Services(index, embedder, search=build_search(index, embedder, SearchConfig()))
    cases = [c for c in load_set() if set(c["expect"]) - {"text", "sizes"}]
    assert len(cases) >= 50
    shown = 0
    for c in cases:
        res, _ = pipeline.search(svc, pipeline.PipelineConfig(), c["query"], 24, explain=False)
        assert violations(index, res.parsed, res.labels) == [], c["query"]
        shown += int((res.labels >= 0).sum())
    assert shown > 200  # constraints filter, they do not empty every list
    # the parse can be switched off: the same query then searches its words as typed
    off = Services(index, embedder, search=build_search(index, embedder, SearchConfig(understand=False)))
    res, _ = pipeline.search(off, pipeline.PipelineConfig(), "quietwave headphones under $80", 24, explain=False)
    assert res.parsed is None
