"""The web page and its helper routes through HTTP: the page is self-contained, and also-bought
(from baskets), ratings, categories, shoppers, history, variants and report plots give known answers."""

import json
import re
import time

import pytest
from fastapi.testclient import TestClient

from api.experiments import Variant, assign
from api.settings import Settings

from .conftest import make_app, open_events_for

VARIANTS = [Variant(name="a", share=0.5), Variant(name="b", share=0.5, candidates={"covisit": 0})]
PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082")


@pytest.fixture()
def make_client(tiny_index, embedder, tmp_path):
    opened = []

    def make(**overrides):
        settings = Settings(**{"index_dir": tmp_path / "ix", "db_path": tmp_path / "events.db",
                               "pseudonym_key": "test-secret-key", "variants": VARIANTS, "auth": False,
                               "report_dir": tmp_path / "report", "shoppers_file": tmp_path / "reviews.jsonl",
                               **overrides})
        store, state = open_events_for(settings)
        client = TestClient(make_app(settings, tiny_index, embedder, store, state))
        client.__enter__()
        client.store, client.settings = store, settings
        opened.append(client)
        return client

    yield make
    for client in opened:
        client.__exit__(None, None, None)
        client.store.close()


@pytest.fixture()
def client(make_client):
    return make_client()


def post(client, user, items, kind="click", value=None, start=0):
    now = time.time()
    events = [{"event_id": f"{user}-{kind}-{start + n}", "user_id": user, "item_id": item, "type": kind,
               "timestamp": now - 1000 + start + n, **({"value": value} if value is not None else {})}
              for n, item in enumerate(items)]
    r = client.post("/events", json={"events": events})
    assert r.status_code == 200 and not r.json()["rejected"], r.text
    return r


def test_the_page_and_its_assets_are_served_with_no_external_urls(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    refs = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert "/static/app.js" in refs and "/static/style.css" in refs
    assert all(r.startswith(("/", "#", "data:")) and not r.startswith("//") for r in refs), refs
    bodies = {"/": html}
    for path, kind in [("/static/app.js", "javascript"), ("/static/style.css", "text/css")]:
        r = client.get(path)
        assert r.status_code == 200 and kind in r.headers["content-type"]
        bodies[path] = r.text
    for path, text in bodies.items():
        assert not re.search(r"https?://", text), f"{path} refers to another origin"
        assert "@import" not in text and "url(http" not in text
    assert "/" not in client.get("/openapi.json").json()["paths"]  # the page is not an API route


def test_also_bought_ranks_items_by_their_share_of_the_items_baskets(client):
    post(client, "u1", ["dryer", "straightener"], "purchase")
    post(client, "u2", ["dryer", "straightener"], "add_to_cart")
    post(client, "u3", ["dryer", "espresso"], "purchase")
    post(client, "u4", ["dryer", "tent", "grinder"])  # clicks: looked at, not bought together
    r = client.get("/items/dryer/also-bought", params={"k": 5})
    assert r.status_code == 200
    rows = r.json()["results"]
    # dryer in 3 baskets: with the straightener in 2, with the espresso in 1.
    assert [x["item_id"] for x in rows] == ["straightener", "espresso"]
    assert [x["score"] for x in rows] == pytest.approx([2 / 3, 1 / 3], abs=1e-5)
    assert rows[0]["title"] == "Ceramic hair straightener flat iron" and rows[0]["price"] == 39.0
    assert [x["item_id"] for x in client.get("/items/dryer/also-bought", params={"k": 1}).json()["results"]] == [
        "straightener"]
    assert client.get("/items/tent/also-bought").json()["results"] == []  # only ever clicked
    assert client.get("/items/nope/also-bought").status_code == 404
    assert client.get("/items/dryer/also-bought", params={"k": 0}).status_code == 422
    assert client.get("/items/dryer/also-bought", params={"k": 10_000}).status_code == 422


def test_ratings_average_the_rating_events_and_follow_new_ones_and_erasure(client):
    post(client, "r1", ["dryer"], "rating", 5)
    post(client, "r2", ["dryer"], "rating", 4)
    post(client, "r2", ["tent"], "rating", 2, start=1)
    post(client, "r3", ["espresso"])  # a click is no rating
    got = client.get("/ratings", params={"ids": "dryer,tent,espresso,unknown-item"}).json()["ratings"]
    assert got == {"dryer": {"average": 4.5, "count": 2, "stars": [0, 0, 0, 1, 1]},
                   "tent": {"average": 2.0, "count": 1, "stars": [0, 1, 0, 0, 0]}}
    post(client, "r3", ["dryer"], "rating", 3, start=1)
    assert client.get("/ratings", params={"ids": "dryer"}).json()["ratings"]["dryer"]["average"] == 4.0
    assert client.delete("/users/r1").status_code == 204  # erasure takes their stars out too
    assert client.get("/ratings", params={"ids": "dryer"}).json()["ratings"]["dryer"] == {
        "average": 3.5, "count": 2, "stars": [0, 0, 1, 1, 0]}
    assert client.get("/ratings", params={"ids": " , "}).status_code == 422
    assert client.get("/ratings", params={"ids": ",".join(f"i{n}" for n in range(201))}).status_code == 422
    assert client.get("/ratings").status_code == 422


def test_history_is_found_by_the_clear_id_through_its_pseudonym(client):
    post(client, "alice@example.com", ["dryer", "straightener"])
    post(client, "alice@example.com", ["straightener"], "purchase", start=5)
    post(client, "bob", ["tent"])
    r = client.get("/users/alice@example.com/history")
    assert r.status_code == 200
    body = r.json()
    assert [(e["item_id"], e["type"]) for e in body["events"]] == [
        ("straightener", "purchase"), ("straightener", "click"), ("dryer", "click")]  # newest first
    assert body["events"][2]["title"] == "Ionic hair dryer 1800W with diffuser"
    assert body["events"][2]["categories"] == ["Beauty", "Hair Care", "Hair Dryers"]
    assert body["onboarding"] is None
    assert len(client.get("/users/alice@example.com/history", params={"limit": 1}).json()["events"]) == 1
    assert client.get("/users/nobody/history").json()["events"] == []
    client.post("/users/alice@example.com/onboarding", json={"interests": "coffee", "categories": ["Kitchen"]})
    assert client.get("/users/alice@example.com/history").json()["onboarding"] == {
        "interests": "coffee", "categories": ["Kitchen"], "liked_items": []}
    assert client.get("/users/alice@example.com/history", params={"limit": 0}).status_code == 422
    assert client.get("/users/alice@example.com/history", params={"limit": 201}).status_code == 422


def test_shoppers_come_from_the_reviews_file_and_are_checked_in_the_log(client, tmp_path):
    assert client.get("/shoppers").json()["shoppers"] == []  # no file yet: an empty list that says why
    assert "no shoppers file" in client.get("/shoppers").json()["note"]
    reviews = [{"item_id": "dryer", "user_id": "U2", "rating": 5, "text": "great"},
               {"item_id": "espresso", "user_id": "U1", "rating": 4, "text": "rich"},
               {"item_id": "tent", "user_id": "U3", "rating": 3, "text": "ok"}]
    (tmp_path / "reviews.jsonl").write_text("".join(json.dumps(r) + "\n" for r in reviews))
    post(client, "U1", ["espresso", "grinder"])
    post(client, "U2", ["dryer", "straightener", "lipstick-red"])
    body = client.get("/shoppers").json()
    assert body["source"].endswith("reviews.jsonl") and body["without_history"] == 1  # U3: no events
    rows = {s["user_id"]: s for s in body["shoppers"]}
    assert list(rows) == ["U1", "U2"]
    assert rows["U1"]["events"] == 2 and rows["U1"]["top_categories"] == ["Coffee"]
    assert rows["U2"]["events"] == 3 and rows["U2"]["top_categories"][0] == "Hair Care"
    assert rows["U2"]["last_seen"] > time.time() - 2000


def test_a_named_variant_can_be_requested_and_is_no_ab_impression(client):
    post(client, "v", ["dryer"])
    assigned = assign("v", VARIANTS, client.settings.ab_salt).name
    other = "b" if assigned == "a" else "a"
    r = client.get("/users/v/recommendations", params={"variant": other, "k": 3})
    assert r.status_code == 200 and r.json()["variant"] == other
    assert client.store.variant_outcomes() == []  # forced: not counted in the A/B report
    assert client.get("/users/v/recommendations", params={"k": 3}).json()["variant"] == assigned
    assert len(client.store.variant_outcomes()) == 1
    bad = client.get("/users/v/recommendations", params={"variant": "c"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "variant"]
    assert "'a'" in bad.json()["detail"][0]["msg"]
    assert client.get("/users/v/recommendations", params={"variant": ""}).status_code == 422
    assert client.get("/users/v/recommendations", params={"variant": "x" * 51}).status_code == 422
    variants = client.get("/variants", params={"user_id": "v"}).json()
    assert [v["name"] for v in variants["variants"]] == ["a", "b"] and variants["assigned"] == assigned
    assert variants["variants"][1]["candidates"] == {"covisit": 0.0}
    assert client.get("/variants").json()["assigned"] is None


def test_categories_count_live_items(client):
    cats = client.get("/categories").json()["categories"]
    assert [(c["name"], c["count"]) for c in cats] == [("Beauty", 6), ("Kitchen", 2), ("Sports", 1)]
    assert [(c["name"], c["count"]) for c in cats[0]["children"]] == [("Hair Care", 3), ("Makeup", 3)]


def test_report_lists_and_serves_plots_only(client, tmp_path):
    empty = client.get("/report").json()
    # the server's absolute path is not shown, only the folder's last parts
    assert empty == {"directory": f".../{tmp_path.name}/report", "exists": False, "plots": [], "markdown": None}
    report = tmp_path / "report"
    (report / "beauty").mkdir(parents=True)
    (report / "metrics.png").write_bytes(PNG)
    (report / "beauty" / "cold_vs_warm.png").write_bytes(PNG)
    (report / "results.md").write_text("# Offline evaluation\n\n| system | ndcg@10 |\n|---|---:|\n| dense | 0.1 |\n")
    (report / "secret.txt").write_text("not a plot")
    (tmp_path / "outside.png").write_bytes(PNG)
    body = client.get("/report").json()
    assert body["exists"] and body["markdown"].startswith("# Offline evaluation")
    assert [(p["path"], p["url"]) for p in body["plots"]] == [
        ("metrics.png", "/report/files/metrics.png"),
        ("beauty/cold_vs_warm.png", "/report/files/beauty/cold_vs_warm.png")]
    got = client.get("/report/files/beauty/cold_vs_warm.png")
    assert got.status_code == 200 and got.headers["content-type"] == "image/png" and got.content == PNG
    for bad in ["secret.txt", "../outside.png", "..%2Foutside.png", "beauty/../../outside.png", "nope.png"]:
        assert client.get(f"/report/files/{bad}").status_code == 404, bad


def test_console_routes_need_an_admin_key_when_keys_are_required(make_client):
    client = make_client(auth=True)
    assert client.get("/users/alice/history").status_code == 401
    assert client.get("/shoppers").status_code == 401
    assert client.get("/ratings", params={"ids": "dryer"}).status_code == 200  # public reads stay public
    assert client.get("/").status_code == 200
