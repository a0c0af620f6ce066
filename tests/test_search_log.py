"""The search log through HTTP: /search returns a request_id and its parse, clicks from the list join
their query, suggestions need several distinct shoppers and forget an erased one, /expand answers
with provenance (and from its cache), co-clicks reach /expand, items carry review aspects, and an
A/B variant can change search settings. Real MiniLM, a real SQLite event log."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from api.experiments import Variant
from api.settings import Settings
from indexer.build import build_index
from indexer.schema import Catalog, make_items, make_reviews
from ranker import pipeline
from ranker.pipeline import PipelineConfig

from .conftest import TINY_ITEMS, make_app, open_events_for

REVIEWS = [
    {"item_id": "dryer", "user_id": "u1", "text": "Dries my thick hair in minutes and the diffuser is gentle. "
                                                  "The cord broke after a month."},
    {"item_id": "dryer", "user_id": "u2", "text": "The diffuser works wonders on curls, love it. Great diffuser."},
    {"item_id": "dryer", "user_id": "u3", "text": "Cord is flimsy and the cord broke quickly."},
]


@pytest.fixture()
def client(embedder, tmp_path, one_thread):
    catalog = Catalog(make_items(TINY_ITEMS), make_reviews(REVIEWS), source="tiny")
    index = build_index(catalog, embedder, progress=False)
    variants = [Variant(name="plain", share=0.5, search={"personal_weight": 0.0}),
                Variant(name="personal", share=0.5)]
    # no relevance cut-off: on these 12 items it would leave two hits for "warm bedtime drink", and
    # the co-click tests cart an item from the list shown
    settings = Settings(index_dir=tmp_path / "ix", db_path=tmp_path / "events.db", auth=False, variants=variants,
                        search={"min_relevance": 0.0})
    store, state = open_events_for(settings)
    with TestClient(make_app(settings, index, embedder, store, state)) as c:
        yield c
    store.close()


def test_request_ids_clicks_and_the_parse(client):
    r = client.get("/search", params={"q": "coffee under $22", "user_id": "ann"}).json()
    assert len(r["request_id"]) == 32 and r["variant"] in ("plain", "personal")
    assert r["parsed"]["max_price"] == 22 and r["parsed"]["text"] == "coffee"
    assert r["parsed"]["spans"] == [{"kind": "price", "text": "under $22"},
                                    {"kind": "category boost", "text": "Coffee"}]
    assert r["results"][0]["item_id"] == "espresso" and all(x["price"] <= 22 for x in r["results"])
    assert "grinder" not in [x["item_id"] for x in r["results"]]  # no price: never "under $22"
    anon = client.get("/search", params={"q": "coffee"}).json()
    assert anon["variant"] is None and anon["request_id"] != r["request_id"]
    ev = {"event_id": "c1", "user_id": "ann", "item_id": "espresso", "type": "click", "request_id": r["request_id"]}
    assert client.post("/events", json={"events": [ev]}).json()["stored"] == 1
    store = client.app.state.components.svc.events
    assert [(q, i, t) for q, i, t, _ in store.search_interactions()] == [("coffee under $22", "espresso", "click")]
    assert [o[1:] for o in store.search_outcomes()] == [(r["request_id"], 1, 0, 0)]


def test_suggestions_need_distinct_shoppers_and_forget_an_erased_one(client):
    def suggested() -> bool:
        got = client.get("/suggest", params={"q": "matte r"}).json()["suggestions"]
        return {"text": "matte red lipstick gift", "kind": "query"} in got

    for user in ("ann", "ann", None):
        client.get("/search", params={"q": "matte red lipstick gift"} | ({"user_id": user} if user else {}))
    assert not suggested()
    client.get("/search", params={"q": "Matte red  lipstick gift", "user_id": "bob"})
    assert suggested()
    assert client.delete("/users/bob").status_code == 204
    assert not suggested()  # bob's search no longer counts, here at once
    store = client.app.state.components.svc.events
    assert all(r.user_key != store.user_key("bob") for _, r in store.searches_after(0))


def test_expand_answers_with_provenance_and_from_its_cache(client):
    r = client.get("/expand", params={"q": "lipstik under $13"})
    assert r.status_code == 200
    body = r.json()
    assert {"term": "lipstick", "source": "typo", "weight": 1.0} in body["terms"]
    assert body["parsed"]["max_price"] == 13 and body["cached"] is False
    assert all(t["source"] in ("typo", "catalog", "co-click") and 0 < t["weight"] <= 1 for t in body["terms"])
    assert {"kind": "brand", "name": "Rouge", "weight": pytest.approx(1.0, abs=0.5)}.keys() <= body["hints"][0].keys()
    es = body["elasticsearch"]["query"]["bool"]
    assert es["filter"] == [{"range": {"price": {"lte": 13.0}}}]
    assert {"multi_match": {"query": "lipstick", "fields": ["title^2", "description"], "boost": 1.0}} in es["should"]
    again = client.get("/expand", params={"q": "LIPSTIK  under $13"}).json()
    assert again["cached"] is True and again["terms"] == body["terms"]
    assert client.get("/expand", params={"q": " "}).status_code == 422
    assert client.get("/expand", params={"q": "x", "fields": "a b"}).status_code == 422


def test_co_clicks_reach_expand(client):
    before = [t["term"] for t in client.get("/expand", params={"q": "warm bedtime drink"}).json()["terms"]
              if t["source"] == "co-click"]
    assert before == []
    for n, user in enumerate(["ann", "bob", "cat"]):
        r = client.get("/search", params={"q": "warm bedtime drink", "user_id": user}).json()
        client.post("/events", json={"events": [{"event_id": f"x{n}", "user_id": user, "item_id": "espresso",
                                                 "type": "add_to_cart", "request_id": r["request_id"]}]})
    box = client.app.state.components.svc.search
    box.sync_queries(client.app.state.components.svc.events, wait=True)
    after = client.get("/expand", params={"q": "warm bedtime drink"}).json()["terms"]
    coclick = [t for t in after if t["source"] == "co-click"]
    svc = client.app.state.components.svc
    assert coclick and {t["term"] for t in coclick} <= set(svc.search.engine.lexical.tokens_of(
        svc.index.table.label_of["espresso"]))


def test_search_log_clicks_lift_the_carted_item_for_a_near_identical_query(client):
    client.get("/search", params={"q": "coffee"})  # the search box opens with the first search
    svc = client.app.state.components.svc

    def rank(query: str, weight: float) -> int:
        res, _ = pipeline.search(svc, PipelineConfig(search=(("click_weight", weight),)), query, 12, explain=False)
        return int(np.flatnonzero(res.labels == svc.index.table.label_of["espresso"])[0]) + 1

    before = rank("warm bedtime drinks", 1.0)
    assert before > 1  # not first by its text: the log has to move it
    for n, user in enumerate(["ann", "bob"]):
        r = client.get("/search", params={"q": "warm bedtime drink", "user_id": user}).json()
        client.post("/events", json={"events": [{"event_id": f"x{n}", "user_id": user, "item_id": "espresso",
                                                 "type": "add_to_cart", "request_id": r["request_id"]}]})
    svc.search.sync_queries(svc.events, wait=True)  # the service embeds the logged queries
    assert rank("warm bedtime drinks", 1.0) == 1  # borrowed from the nearest logged query
    assert rank("warm bedtime drinks", 0.0) == before  # off: the log changes nothing
    hits = client.get("/search", params={"q": "warm bedtime drinks"}).json()["results"]
    clicked = {h["item_id"]: h["evidence"]["search_clicks"] for h in hits}
    assert clicked.pop("espresso") == 1.0 and set(clicked.values()) == {None}  # the reason says so, for it only


def test_items_carry_review_aspects_and_reasons_skip_complaints(client):
    item = client.get("/items/dryer").json()
    assert [a["term"] for a in item["pros"]] == ["diffuser"] and [a["term"] for a in item["cons"]] == ["cord"]
    assert "broke" not in item["pros"][0]["sentence"] and "broke" in item["cons"][0]["sentence"]
    assert item["shopper_queries"] == []  # not enriched
