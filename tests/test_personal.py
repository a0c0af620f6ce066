"""Personalisation through HTTP on a real Beauty subset: events, freshness, onboarding, cold start,
new items, erasure, A/B buckets, privacy."""

import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from api.cli import app as cli
from api.experiments import Variant, assign, bucket
from api.settings import Settings
from indexer.build import build_index
from indexer.clean import clean_catalog
from indexer.loaders import load_dataset
from indexer.schema import Catalog
from retriever.eventstore import Event, open_event_store

from .conftest import make_app, open_events_for, shared_data


@pytest.fixture(scope="session")
def beauty_index(embedder):
    """Every 8th Beauty item (1,513 real products, all categories), embedded once per session."""
    catalog, _ = clean_catalog(load_dataset("beauty", shared_data("amazon-beauty-2014")))
    items = catalog.items.iloc[::8].reset_index(drop=True)
    return build_index(Catalog(items, catalog.reviews.iloc[:0]), embedder, progress=False)


def styling_tools(index):
    return {i for i, r in ((r["item_id"], r) for r in index.table.records) if "Styling Tools" in r["categories"]}


@pytest.fixture()
def client(beauty_index, embedder, tmp_path):
    variants = [Variant(name="a", share=0.5), Variant(name="b", share=0.5, candidates={"covisit": 0})]
    settings = Settings(index_dir=tmp_path / "ix", db_path=tmp_path / "events.db", pseudonym_key="test-secret-key",
                        variants=variants, auth=False)
    beauty_index.save(settings.index_dir)  # the shared index is read-only here: updates go to the log
    store, state = open_events_for(settings)
    with TestClient(make_app(settings, beauty_index, embedder, store, state)) as c:
        c.store = store
        yield c
    store.close()


def ids(response):
    return [r["item_id"] for r in response.json()["results"]]


def events(user, items, kind="click", start=0):
    return [{"event_id": f"{user}-{start + n}", "user_id": user, "item_id": i, "type": kind,
             "timestamp": time.time() - 100 + n} for n, i in enumerate(items)]


def test_partial_batch_stores_the_valid_and_explains_the_rest(client, beauty_index):
    item = beauty_index.table.records[0]["item_id"]
    batch = [*events("u1", [item]), {"event_id": "x1", "user_id": "u1", "item_id": item, "type": "teleport"},
             {"event_id": "x2", "user_id": "u1", "item_id": "no-such-item", "type": "view"},
             {"event_id": "x3", "user_id": "u1", "item_id": item, "type": "rating"},
             {"event_id": "x4", "item_id": item, "type": "view"}, "not an object"]
    r = client.post("/events", json={"events": batch})
    assert r.status_code == 200
    body = r.json()
    assert body["stored"] == 1 and body["duplicates"] == 0
    reasons = {x["index"]: x["reason"] for x in body["rejected"]}
    assert set(reasons) == {1, 2, 3, 4, 5}
    assert reasons[1].startswith("type") and "unknown item" in reasons[2] and "rating needs value" in reasons[3]
    assert reasons[4].startswith("user_id")
    again = client.post("/events", json={"events": batch[:1]}).json()
    assert again == {"stored": 0, "duplicates": 1, "rejected": []}
    assert client.store.count_events() == 1
    assert client.post("/events", json={"events": []}).status_code == 422


def test_clicks_change_the_next_recommendations(client, beauty_index):
    tools = sorted(styling_tools(beauty_index))
    before = ids(client.get("/users/shopper/recommendations", params={"k": 10}))
    client.post("/events", json={"events": events("shopper", tools[:3])})
    after = client.get("/users/shopper/recommendations", params={"k": 10})
    assert after.status_code == 200 and ids(after) != before
    assert len(set(ids(after)) & styling_tools(beauty_index)) >= 5
    assert all(r["sources"] for r in after.json()["results"])
    assert "dense" in {s for r in after.json()["results"] for s in r["sources"]}


def test_hair_dryer_onboarding_yields_hair_tools(client, beauty_index):
    r = client.post("/users/newbie/onboarding", json={"interests": "hair dryer"})
    assert r.status_code == 200
    assert len(set(ids(r)) & styling_tools(beauty_index)) >= 7
    again = client.get("/users/newbie/recommendations")
    assert len(set(ids(again)) & styling_tools(beauty_index)) >= 7
    bad = client.post("/users/newbie/onboarding", json={"categories": ["Spaceships"]})
    assert bad.status_code == 422 and "Spaceships" in str(bad.json())


def test_a_stranger_gets_a_varied_popular_list(client, beauty_index):
    client.post("/events", json={"events": events("crowd", [r["item_id"] for r in beauty_index.table.records[:40]])})
    r = client.get("/users/stranger/recommendations", params={"k": 6})
    assert r.status_code == 200 and len(ids(r)) == 6
    tops = [client.get(f"/items/{i}").json()["categories"][1] for i in ids(r)]
    assert len(set(tops)) >= 3


def test_a_new_item_reaches_similar_lists_and_relevant_users_within_a_second(client, beauty_index):
    dryers = sorted(r["item_id"] for r in beauty_index.table.records if "hair dryer" in r["title"].lower())
    assert len(dryers) >= 4
    client.post("/events", json={"events": events("stylist", dryers[:3])})
    put = time.perf_counter()
    client.put("/items/new-dryer", json={"title": "Ionic Hair Dryer 2200W with Diffuser and Concentrator",
                                         "categories": ["Beauty", "Hair Care", "Styling Tools", "Hair Dryers"]})
    recs = ids(client.get("/users/stylist/recommendations", params={"k": 10}))
    nearest = ids(client.get("/items/new-dryer/similar", params={"k": 1}))[0]
    similar = ids(client.get(f"/items/{nearest}/similar", params={"k": 10}))
    assert time.perf_counter() - put < 1.0
    assert "new-dryer" in recs and "new-dryer" in similar
    skincare = ids(client.post("/users/skin/onboarding", json={"interests": "anti-aging face serum"}))
    assert "new-dryer" not in skincare


def test_purchases_are_excluded_unless_asked(client, beauty_index):
    tools = sorted(styling_tools(beauty_index))
    client.post("/events", json={"events": events("buyer", tools[:2], kind="purchase")})
    assert not set(tools[:2]) & set(ids(client.get("/users/buyer/recommendations", params={"k": 30})))
    kept = ids(client.get("/users/buyer/recommendations", params={"k": 30, "exclude_purchased": "false"}))
    assert set(tools[:2]) & set(kept)


def test_filters_apply_to_recommendations(client):
    r = client.post("/users/f/onboarding", json={"interests": "shampoo for dry hair"})
    assert r.status_code == 200
    cheap = client.get("/users/f/recommendations", params={"max_price": 10, "category": "Hair Care"}).json()
    assert cheap["results"] and all(x["price"] <= 10 and "Hair Care" in x["categories"] for x in cheap["results"])


def test_anonymous_session_stores_nothing(client, beauty_index):
    tools = sorted(styling_tools(beauty_index))
    r = client.post("/recommendations", json={"recent_items": tools[:2], "text": "curling iron", "k": 5})
    assert r.status_code == 200 and len(ids(r)) == 5 and not set(tools[:2]) & set(ids(r))
    assert client.store.count_events() == 0
    assert client.post("/recommendations", json={"recent_items": ["nope"]}).status_code == 422


def test_deleting_a_user_erases_them(client, beauty_index, tmp_path):
    tools = sorted(styling_tools(beauty_index))
    client.post("/events", json={"events": events("leaver", tools[:3])})
    client.post("/users/leaver/onboarding", json={"interests": "hair straightener"})
    client.get("/users/leaver/recommendations")
    assert client.delete("/users/leaver").status_code == 204
    assert client.store.user_events("leaver") == [] and client.store.onboarding("leaver") is None
    assert client.store.count_events() == 0 and client.store.variant_outcomes() == []
    cold = client.get("/users/leaver/recommendations").json()["results"]
    assert "dense" not in {s for r in cold for s in r["sources"]}


def test_user_ids_never_reach_the_database_in_clear(tmp_path):
    store = open_event_store(tmp_path / "e.db", pseudonym_key="k" * 16)
    store.add_events([Event("e1", "alice@example.com", "i1", "view", 1.0)])
    store.set_onboarding("alice@example.com", "tea", [], [])
    store.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert b"alice@example.com" not in raw and b"i1" in raw
    from retriever.eventstore.sqlite import MIGRATIONS

    assert open_event_store(tmp_path / "e.db", pseudonym_key="k" * 16).schema_version == len(MIGRATIONS)


def test_buckets_are_deterministic_and_follow_shares():
    variants = [Variant(name="a", share=0.2), Variant(name="b", share=0.8)]
    users = [f"user{n}" for n in range(5000)]
    first = [assign(u, variants, "salt").name for u in users]
    assert first == [assign(u, variants, "salt").name for u in users]
    assert 0.17 < first.count("a") / 5000 < 0.23
    assert [assign(u, variants, "pepper").name for u in users] != first
    assert 0 <= bucket("x", "s") < 1


def test_recommendations_carry_request_and_variant_and_feed_the_ab_report(client, beauty_index, tmp_path):
    item = beauty_index.table.records[5]["item_id"]
    shown = {}
    for n in range(12):
        body = client.get(f"/users/ab{n}/recommendations", params={"k": 3}).json()
        assert len(body["request_id"]) == 32 and body["variant"] in {"a", "b"}
        shown[n] = body
    clicks = [{"event_id": f"c{n}", "user_id": f"ab{n}", "item_id": item, "type": "click",
               "request_id": shown[n]["request_id"]} for n in range(0, 12, 3)]
    assert client.post("/events", json={"events": clicks}).json()["stored"] == 4
    client.store.flush_impressions()  # written in batches; test_impressions_reach_disk_on_their_own
    r = CliRunner().invoke(cli, ["ab-report", "--db", str(tmp_path / "events.db"),
                                 "--pseudonym-key", "test-secret-key"])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0].startswith("variant") and "b - a" in lines[-1]
    impressions = {line.split()[0]: int(line.split()[1]) for line in lines[1:3]}
    assert sum(impressions.values()) == 12


def test_impressions_reach_disk_on_their_own(tmp_path):
    """Buffered impressions are committed by the store's timer, seen by another connection."""
    import sqlite3

    from retriever.eventstore import IMPRESSION_FLUSH_S, open_event_store

    store = open_event_store(tmp_path / "e.db", pseudonym_key="k" * 8)
    for n in range(3):
        store.log_impression(f"r{n}", "shopper", "a", ["x", "y"])
    other = sqlite3.connect(tmp_path / "e.db")
    deadline = time.time() + 20 * IMPRESSION_FLUSH_S
    while time.time() < deadline and other.execute("SELECT COUNT(*) FROM impressions").fetchone()[0] < 3:
        time.sleep(0.05)
    assert other.execute("SELECT COUNT(*) FROM impressions").fetchone()[0] == 3
    store.log_impression("r9", "gone", "a", ["x"])
    store.delete_user("gone")  # a buffered impression is erased with its user
    assert other.execute("SELECT COUNT(*) FROM impressions WHERE request_id = 'r9'").fetchone()[0] == 0
    store.close()


@pytest.mark.parametrize("seed", range(6))
def test_decayed_top_matches_a_full_stable_sort(seed):
    """``DecayedCounter.top`` sorts only a head of the scores; it must equal the full stable sort."""
    import random

    from retriever.covisit import DecayedCounter
    from retriever.eventstore import StoredEvent

    rng = random.Random(seed)
    counter = DecayedCounter(86_400.0)
    events = [StoredEvent("u", f"i{rng.randrange(400)}", rng.choice(["view", "click", "purchase"]), None,
                          1_000.0 + rng.random() * 1e5) for _ in range(rng.randrange(1, 3000))]
    counter.add(sorted(events, key=lambda e: e.ts))
    scores = counter.score[: len(counter.ids)]
    for n, keep in ((1, None), (7, None), (50, lambda i: int(i[1:]) % 7 == 0), (500, lambda i: i.endswith("3"))):
        want = [counter.ids[i] for i in np.argsort(-scores, kind="stable") if scores[i] > 0
                and (keep is None or keep(counter.ids[i]))][:n]
        assert counter.top(n, keep)[0] == want
