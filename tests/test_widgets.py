"""Widgets from baskets, trends and views: the co-purchase counts, each widget's pipeline function
on the demo catalog (its shoppers' reviews and orders), and their routes."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from api.settings import Settings
from ranker import widgets
from ranker.pipeline import PipelineConfig
from retriever.baskets import CoPurchase
from retriever.eventstore import Erasure, StoredEvent
from retriever.state import InteractionState

from .conftest import demo_events, make_app

DRYER = "D0005"  # Ionique Pro Ionic Hair Dryer 1875W, Black; its demo orders add a heat protectant and an argan oil


def ev(user, item, kind, ts):
    return StoredEvent(user, item, kind, None, float(ts))


def test_a_basket_is_one_shoppers_carts_and_purchases_close_in_time():
    cp = CoPurchase(gap_s=3600)
    cp.add([ev("u", "a", "add_to_cart", 0), ev("u", "b", "view", 10), ev("u", "b", "purchase", 20),
            ev("u", "a", "purchase", 30),  # a again in the same basket: counted once
            ev("v", "c", "purchase", 40),  # another shopper: another basket
            ev("u", "c", "purchase", 5000),  # over an hour later: a new basket
            ev("u", "a", "rating", 5010)])  # ratings are not baskets
    assert dict(cp.baskets) == {"a": 1, "b": 1, "c": 2}
    assert {a: dict(r) for a, r in cp.pairs.items()} == {"a": {"b": 1}, "b": {"a": 1}}
    ids, conf, n = cp.neighbours("a", 5)
    assert ids == ["b"] and conf.tolist() == [1.0] and n.tolist() == [1]
    assert cp.neighbours("a", 5, min_baskets=2)[0] == []
    assert cp.neighbours("c", 5)[0] == []


def test_an_erased_shopper_leaves_no_basket_behind():
    state = InteractionState()
    mine = [(1, ev("k1", "a", "purchase", 0)), (2, ev("k1", "b", "purchase", 5)), (4, ev("k1", "c", "purchase", 9))]
    theirs = [(3, ev("k2", "a", "purchase", 7)), (5, ev("k2", "b", "purchase", 8))]
    state.apply([e for _, e in sorted(mine + theirs)])
    state.last_seq = 5
    state.apply_erasure(Erasure(1, "k1", mine))
    assert dict(state.baskets.baskets) == {"a": 1, "b": 1}
    assert {a: dict(r) for a, r in state.baskets.pairs.items()} == {"a": {"b": 1}, "b": {"a": 1}}


def test_also_bought_is_what_was_bought_with_it_not_what_was_looked_at_next(demo_services):
    svc, cfg = demo_services, PipelineConfig()
    ranked = widgets.also_bought(svc, cfg, DRYER, 6)
    got = [svc.index.table.records[lab] for lab in ranked.labels if lab >= 0]
    assert {r["item_id"] for r in got[:2]} == {"D0200", "D0260"}, [r["title"] for r in got]
    assert all(r["categories"][:2] == ["Beauty", "Hair Care"] for r in got), [r["title"] for r in got]
    assert all(0 < s <= 1 for s in ranked.scores[: len(got)]) and list(ranked.scores[: len(got)]) == sorted(
        ranked.scores[: len(got)], reverse=True)
    with svc.state.lock:  # what co-visitation over consecutive events would have said: anything the guest did next
        covisit, _ = svc.state.covisit.neighbours([DRYER], 20)
    assert any(svc.index.table.get(i)["categories"][1] != "Hair Care" for i in covisit)
    with pytest.raises(KeyError):
        widgets.also_bought(svc, cfg, "nope", 3)


def test_bought_together_is_an_in_stock_bundle_outside_the_items_own_category(demo_services):
    svc = demo_services
    bundle = widgets.bought_together(svc, PipelineConfig(), DRYER, 2)
    ids = [svc.index.table.records[lab]["item_id"] for lab in bundle.companions.labels if lab >= 0]
    assert set(ids) == {"D0200", "D0260"} and all(n >= 2 for n in bundle.baskets)
    assert bundle.total_price == pytest.approx(59.0 + 14.0 + 21.0)
    espresso = widgets.bought_together(svc, PipelineConfig(), "D0053", 3)  # machine, grinder, tamper, cups
    cats = [tuple(svc.index.table.records[lab]["categories"]) for lab in espresso.companions.labels if lab >= 0]
    assert cats and tuple(svc.index.table.get("D0053")["categories"]) not in cats
    lonely = widgets.bought_together(svc, PipelineConfig(), "D0001", 2)  # a puzzle nobody bundled
    assert (lonely.companions.labels >= 0).sum() == 0 and lonely.total_price == 18.0


def test_trending_stays_in_its_category_and_in_stock(demo_services):
    svc = demo_services
    for category in ("Kitchen", "Hair Care", None):
        ranked = widgets.trending(svc, PipelineConfig(), 8, category)
        got = [svc.index.table.records[lab] for lab in ranked.labels if lab >= 0]
        assert len(got) == 8 and all(r["in_stock"] for r in got)
        assert category is None or all(category in r["categories"] for r in got)
        assert ranked.scores[0] == pytest.approx(1.0) or category is not None
        assert list(ranked.scores[:8]) == sorted(ranked.scores[:8], reverse=True)


@pytest.fixture(scope="module")
def client(demo_catalog, demo_index, embedder, tmp_path_factory):
    root = tmp_path_factory.mktemp("widgets")
    settings = Settings(index_dir=root / "ix", db_path=root / "events.db", auth=False)
    store, state = demo_events(settings.db_path, demo_catalog)
    with TestClient(make_app(settings, demo_index, embedder, store, state)) as c:
        yield c
    store.close()


def test_widget_routes(client):
    also = client.get(f"/items/{DRYER}/also-bought", params={"k": 3}).json()
    assert [r["item_id"] for r in also["results"]][:2] in (["D0200", "D0260"], ["D0260", "D0200"])
    assert set(also["results"][0]) >= {"item_id", "title", "score", "rules", "in_stock"}
    together = client.get(f"/items/{DRYER}/bought-together").json()
    assert {r["item_id"] for r in together["results"]} == {"D0200", "D0260"}
    assert together["total_price"] == pytest.approx(94.0) and all(r["baskets"] >= 2 for r in together["results"])
    trend = client.get("/trending", params={"category": "Pet Supplies", "k": 5}).json()
    assert trend["category"] == "Pet Supplies" and len(trend["results"]) == 5
    assert all(r["categories"][0] == "Pet Supplies" for r in trend["results"])
    for bad in ("/items/nope/also-bought", "/items/nope/bought-together"):
        assert client.get(bad).status_code == 404
    assert client.get("/trending", params={"category": "Garden Gnomes"}).status_code == 422
    assert client.get(f"/items/{DRYER}/bought-together", params={"k": 9}).status_code == 422


def test_recently_viewed_is_the_shoppers_own_views_newest_first(client):
    events = [{"event_id": f"rv{n}", "user_id": "rv-shopper", "item_id": item, "type": kind, "timestamp": 1e9 + n}
              for n, (item, kind) in enumerate([("D0005", "view"), ("D0200", "click"), ("D0053", "purchase"),
                                                ("D0005", "view"), ("D0120", "view")])]
    assert client.post("/events", json={"events": events}).json()["stored"] == 5
    got = client.get("/users/rv-shopper/recently-viewed", params={"k": 10}).json()["results"]
    assert [r["item_id"] for r in got] == ["D0120", "D0005", "D0200"]  # a purchase is not a view
    assert got[1]["viewed_at"] == 1e9 + 3
    assert client.get("/users/rv-shopper/recently-viewed", params={"k": 1}).json()["results"][0]["item_id"] == "D0120"
    assert client.get("/users/nobody/recently-viewed").json()["results"] == []
