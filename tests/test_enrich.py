"""LLM enrichment: cached by item text, incremental, grounded, into the lexical document and
GET /items/{id}, and kept up to date on upserts in the background. The default tests run on cached
generations (a generator that may not be called proves the cache is used); the real SmolLM2-135M
generates in the slow test."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from api.settings import Settings
from indexer.build import build_index, upsert_items
from indexer.schema import Catalog, make_items, make_reviews
from retriever.search import SearchBox
from retriever.search.enrich import (
    EnrichConfig,
    EnrichedText,
    EnrichmentStore,
    enrich,
    grounded,
    item_prompt,
    text_hash,
)
from retriever.search.lexical import LexicalIndex
from retriever.search.llm import TextGenerator

from .conftest import TINY_ITEMS, TINY_REVIEWS, make_app

REPLIES = {"espresso": "espresso beans dark roast, strong coffee beans, unicornroast blend",
           "tent": "two person tent, waterproof camping tent, backpacking shelter",
           "dryer": "ionic hair dryer, blow dryer with diffuser"}


class CacheOnly(TextGenerator):
    """A generator that must never be asked: every reply has to come from the cache."""

    name = "smollm2"

    def generate(self, system, shots, user, max_new_tokens=32):
        raise AssertionError(f"generated for {user!r}: the reply cache was not used")


def seeded_store(index, cache_dir, replies=REPLIES) -> EnrichmentStore:
    """A store whose reply cache holds the generations for ``replies``' items (as a past run left it)."""
    store = EnrichmentStore(cache_dir)
    for item, reply in replies.items():
        rec = index.table.get(item)
        store.replies[text_hash("smollm2", item_prompt(rec, list(index.reviews.get(item, [])), 240))] = \
            [q.strip() for q in reply.split(",")]
    return store


@pytest.fixture()
def tiny(embedder, one_thread):
    return build_index(Catalog(make_items(TINY_ITEMS), make_reviews(TINY_REVIEWS), source="t"), embedder,
                       progress=False)


def test_cached_incremental_and_grounded(tiny, tmp_path):
    store = seeded_store(tiny, tmp_path / "cache")
    lexical = LexicalIndex(tiny, background_rebuild=False)
    known = lambda t: lexical.doc_freq(t) > 0  # noqa: E731
    ids = list(REPLIES)
    stats = enrich(tiny, store, CacheOnly(), EnrichConfig(), item_ids=ids, progress=False,
                   ground=lambda qs: [q for q in qs if grounded(q, known)])
    assert (stats["generated"], stats["from_cache"], stats["unchanged"]) == (0, 3, 0)
    assert store.get("espresso").queries == ["espresso beans dark roast", "strong coffee beans"]  # not "unicornroast"
    assert enrich(tiny, store, CacheOnly(), item_ids=ids, progress=False)["unchanged"] == 3  # nothing changed
    (tmp_path / "ix-files").mkdir()
    store.save(tmp_path / "ix-files")  # no index there: only the files
    again = EnrichmentStore.load(tmp_path / "ix-files", cache_dir=tmp_path / "cache")
    assert again.get("espresso").queries == store.get("espresso").queries and again.replies == store.replies


def test_queries_join_the_lexical_document(tiny, tmp_path):
    store = seeded_store(tiny, tmp_path / "cache")
    enrich(tiny, store, CacheOnly(), item_ids=["tent"], progress=False)
    lexical = LexicalIndex(tiny, extra_text=EnrichedText(store), background_rebuild=False)
    labels, _ = lexical.search(["backpacking shelter"], 1)
    assert tiny.table.records[int(labels[0, 0])]["item_id"] == "tent"
    plain = LexicalIndex(tiny, background_rebuild=False)
    assert (plain.search(["backpacking shelter"], 1)[0] == -1).all()


def test_a_server_on_an_enriched_index_serves_and_keeps_up(tiny, embedder, tmp_path):
    cache = tmp_path / "cache"
    store = seeded_store(tiny, cache)
    enrich(tiny, store, CacheOnly(), item_ids=["tent", "espresso"], progress=False)
    ix = tmp_path / "ix"
    ix.mkdir()
    store.save(ix)
    box = SearchBox.build(tiny, embedder, index_dir=ix, enrich=EnrichConfig(), llm_cache_dir=cache,
                          generator=CacheOnly)
    settings = Settings(index_dir=ix, db_path=tmp_path / "events.db", auth=False)
    with TestClient(make_app(settings, tiny, embedder, search=box)) as client:
        item = client.get("/items/tent").json()
        assert item["shopper_queries"] == ["two person tent", "waterproof camping tent", "backpacking shelter"]
        hit = client.get("/search", params={"q": "backpacking shelter", "k": 1}).json()["results"][0]
        assert hit["item_id"] == "tent" and "backpacking" in hit["evidence"]["matched_terms"]
        # an upsert: the enricher reads the dryer (its reply is cached), then re-indexes its words
        box.enrichment.replies[text_hash("smollm2", item_prompt(tiny.table.get("dryer"), list(
            tiny.reviews.get("dryer", [])), 240))] = ["salon hair dryer"]
        upsert_items(tiny, make_items([TINY_ITEMS[0]]), [[]], embedder)
        box.enricher.wait()
        assert client.get("/items/dryer").json()["shopper_queries"] == ["salon hair dryer"]
        hit = client.get("/search", params={"q": "salon", "k": 1}).json()["results"][0]
        assert hit["item_id"] == "dryer" and hit["evidence"]["lexical_rank"] == 1
    assert "salon hair dryer" in (ix / "enrichment.json").read_text()


@pytest.mark.slow
def test_smollm2_generates_queries_in_batches(tiny, tmp_path, one_thread):
    from retriever.search.llm import load_generator

    store = EnrichmentStore(tmp_path / "cache")
    stats = enrich(tiny, store, load_generator("smollm2"), EnrichConfig(batch_size=2), item_ids=["tent", "dryer"],
                   progress=False)
    assert stats["generated"] == 2 and stats["items_per_s"] > 0
    assert all(store.get(i).queries for i in ("tent", "dryer"))
    assert np.isfinite(stats["seconds"])
