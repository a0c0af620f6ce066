"""The per-review match: review pools keep each review's vector (through snapshots and the change
log), and a query close to one review of an item lifts that item. Real MiniLM."""

from __future__ import annotations

import numpy as np

from indexer.build import build_index, upsert_items
from indexer.schema import Catalog, make_items, make_reviews
from indexer.store import ItemIndex
from retriever.search.engine import SearchConfig, SearchEngine
from retriever.search.reviews import review_match

from .conftest import TINY_ITEMS

REVIEWS = [{"item_id": "tent", "user_id": f"u{n}", "text": t} for n, t in enumerate([
    "Kept us dry through a thunderstorm on the ridge.", "Packs down small, fits in my bike bag.",
    "The zipper is smooth and the poles are light."])] + [
    {"item_id": "grinder", "user_id": "u9", "text": "Grinds evenly for espresso and pour over."}]


def test_rows_survive_snapshots_and_the_log(embedder, tmp_path, one_thread):
    index = build_index(Catalog(make_items(TINY_ITEMS), make_reviews(REVIEWS), source="t"), embedder, progress=False)
    assert index.pools["tent"].matrix().shape == (3, embedder.dim) and index.pools["tent"].matrix().dtype == np.float16
    want = embedder.encode(["Packs down small, fits in my bike bag."])[0]
    assert np.abs(index.pools["tent"].matrix().astype(np.float32) - want).max(axis=1).min() < 2e-3
    index.save(tmp_path / "ix")
    loaded = ItemIndex.load(tmp_path / "ix")
    assert np.array_equal(loaded.pools["tent"].matrix(), index.pools["tent"].matrix())
    loaded.open_log()
    upsert_items(loaded, make_items([TINY_ITEMS[-1]]), [["Survived a week of rain in Wales."]], embedder)
    assert len(loaded.pools["tent"].rows) == 4
    again = ItemIndex.load(tmp_path / "ix")  # the snapshot plus the logged upsert
    again.open_log()
    assert np.array_equal(again.pools["tent"].matrix(), loaded.pools["tent"].matrix())


def test_a_query_close_to_one_review_lifts_its_item(embedder, one_thread):
    index = build_index(Catalog(make_items(TINY_ITEMS), make_reviews(REVIEWS), source="t"), embedder, progress=False)
    q = embedder.encode(["fits in a bike bag"])[0]
    labels = index.table.labels(["tent", "grinder", "dryer"])
    m = review_match(index, labels, q, top=1)
    assert m[0] > 0.5 and m[0] > m[1] and m[2] == 0.0  # the dryer has no reviews here
    assert review_match(index, labels, q)[0] < m[0]  # the best 3 of 3: the mean of all its reviews
    plain = SearchEngine.build(index, embedder, config=SearchConfig(review_weight=0.0))
    matched = plain.with_config(review_weight=0.5)
    a, b = plain.search("small enough for a bike bag", 3), matched.search("small enough for a bike bag", 3)
    top = index.table.label_of["tent"]
    assert b.labels[0] == top and (a.labels[0] != top or b.scores[0] > a.scores[0])
