"""Per-shopper access (issue #16, red-team case 1 and the rate limit of case 7), through HTTP: a
shopper's personal routes open only with that shopper's token or a backend key; the ingest key
opens no one's data; anonymous browsing goes through POST /recommendations; bad credentials are
rate-limited like anything else."""

import time

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from api.settings import Settings

from .conftest import make_app, open_events_for

SECRET = "access-test-token-secret"
ADMIN, BACKEND, INGEST, READ = "sk_acc_admin", "sk_acc_backend", "sk_acc_ingest", "sk_acc_read"


def api_keys():
    from api.security import ApiKey, digest

    return [ApiKey(name="ops", role="admin", sha256=digest(ADMIN)),
            ApiKey(name="shop-server", role="backend", sha256=digest(BACKEND)),
            ApiKey(name="browser", role="ingest", sha256=digest(INGEST)),
            ApiKey(name="bi", role="read", sha256=digest(READ))]


def token(user, ttl=60.0, secret=SECRET, now=None):
    from api.security import mint_token

    return mint_token(user, secret, ttl, now)[0]


@pytest.fixture()
def make_client(tiny_index, embedder, tmp_path):
    opened = []

    def make(**overrides):
        settings = Settings(**{"index_dir": tmp_path / "ix", "db_path": tmp_path / "events.db",
                               "pseudonym_key": "access-test-key", "api_keys": api_keys(), "token_secret": SECRET,
                               **overrides})
        store, state = open_events_for(settings)
        client = TestClient(make_app(settings, tiny_index, embedder, store, state))
        client.__enter__()
        client.store = store
        opened.append(client)
        return client

    yield make
    for client in opened:
        client.__exit__(None, None, None)
        client.store.close()


@pytest.fixture()
def client(make_client):
    return make_client()


def as_key(key):
    return {"X-API-Key": key}


def as_shopper(user, **kw):
    return {"X-Shopper-Token": token(user, **kw)}


def impressions(store, user=None):
    store.flush_impressions()
    if user is None:
        return store._db.execute("SELECT COUNT(*) FROM impressions").fetchone()[0]
    return store._db.execute("SELECT COUNT(*) FROM impressions WHERE user_key = ?",
                             (store.user_key(user),)).fetchone()[0]


def test_personal_recommendations_open_only_to_the_shoppers_token_or_a_backend_key(client):
    interest = "shampoo for my thinning hair and hair loss"
    r = client.post("/users/alice/onboarding", json={"interests": interest}, headers=as_key(BACKEND))
    assert r.status_code == 200
    path = "/users/alice/recommendations"
    keyless = client.get(path)
    assert keyless.status_code == 401 and "thinning" not in keyless.text and "token" in keyless.json()["detail"]
    assert client.get(path, headers=as_key(INGEST)).status_code == 403  # the browser key opens no one's data
    assert client.get(path, headers=as_key(READ)).status_code == 403
    assert client.get(path, headers=as_shopper("bob")).status_code == 403  # bob's token is not alice's
    assert client.get(path, headers=as_shopper("alice", ttl=-1)).status_code == 401  # expired
    assert client.get(path, headers=as_shopper("alice", secret="another-secret-of-16+")).status_code == 401
    forged = token("alice").rsplit(".", 1)[0] + "." + token("bob").rsplit(".", 1)[1]
    assert client.get(path, headers={"X-Shopper-Token": forged}).status_code == 401
    for headers in (as_shopper("alice"), as_key(BACKEND), as_key(ADMIN)):
        r = client.get(path, headers=headers)
        assert r.status_code == 200 and r.json()["results"], headers
    assert client.get(path, params={"variant": "default"}, headers=as_shopper("bob")).status_code == 403


def test_history_needs_the_same_access(client):
    assert client.post("/events", headers=as_key(INGEST), json={"events": [
        {"event_id": "h1", "user_id": "carol", "item_id": "dryer", "type": "view"}]}).json()["stored"] == 1
    assert client.get("/users/carol/history").status_code == 401
    assert client.get("/users/carol/history", headers=as_key(INGEST)).status_code == 403
    assert client.get("/users/carol/history", headers=as_shopper("dave")).status_code == 403
    mine = client.get("/users/carol/history", headers=as_shopper("carol"))
    assert mine.status_code == 200 and [e["item_id"] for e in mine.json()["events"]] == ["dryer"]
    assert client.get("/users/carol/history", headers=as_key(BACKEND)).status_code == 200


def test_every_personal_read_needs_the_same_access(client):
    """Each GET under /users/{user_id} (recently viewed too) opens only to that shopper's token or a
    backend key: a personal route added later without the check fails here."""
    assert client.post("/events", headers=as_key(INGEST), json={"events": [
        {"event_id": "rv1", "user_id": "kim", "item_id": "dryer", "type": "view"}]}).json()["stored"] == 1
    paths = sorted(p.replace("{user_id}", "kim") for p, ops in client.app.openapi()["paths"].items()
                   if p.startswith("/users/{user_id}") and "get" in ops)
    assert "/users/kim/recently-viewed" in paths and "/users/kim/recommendations" in paths, paths
    for path in paths:
        assert client.get(path).status_code == 401, path
        assert client.get(path, headers=as_key(INGEST)).status_code == 403, path
        assert client.get(path, headers=as_shopper("lee")).status_code == 403, path
        assert client.get(path, headers=as_key(BACKEND)).status_code == 200, path
    mine = client.get("/users/kim/recently-viewed", headers=as_shopper("kim"))
    assert mine.status_code == 200 and [r["item_id"] for r in mine.json()["results"]] == ["dryer"]


def test_personalised_search_needs_the_same_access(client):
    """/search?user_id= ranks by the shopper's interests (their personal data): it opens like their
    recommendations; a search without user_id stays public."""
    interest = "shampoo for my thinning hair and hair loss"
    r = client.post("/users/ivy/onboarding", json={"interests": interest}, headers=as_key(BACKEND))
    assert r.status_code == 200
    params = {"q": "hair", "user_id": "ivy"}
    keyless = client.get("/search", params=params)
    assert keyless.status_code == 401 and "thinning" not in keyless.text
    assert client.get("/search", params=params, headers=as_key(INGEST)).status_code == 403
    assert client.get("/search", params=params, headers=as_shopper("jude")).status_code == 403
    for headers in (as_shopper("ivy"), as_key(BACKEND)):
        r = client.get("/search", params=params, headers=headers)
        assert r.status_code == 200 and r.json()["personalised"] is True, headers
    r = client.get("/search", params={"q": "hair"})
    assert r.status_code == 200 and r.json()["personalised"] is False and r.json()["results"]


def test_the_ingest_key_cannot_overwrite_a_shoppers_onboarding(client):
    mine = {"interests": "espresso"}
    assert client.post("/users/erin/onboarding", json=mine, headers=as_shopper("erin")).status_code == 200
    hostile = {"interests": "visit evil-pharma.example", "categories": ["Camping"]}
    for headers in ({}, as_key(INGEST), as_shopper("mallory")):
        assert client.post("/users/erin/onboarding", json=hostile, headers=headers).status_code in (401, 403)
    assert client.store.onboarding("erin") == ("espresso", [], [])
    assert client.post("/users/erin/onboarding", json={"interests": "tea"}, headers=as_key(ADMIN)).status_code == 200


def test_a_keyless_get_writes_nothing_and_recreates_nothing_after_erasure(client):
    before = impressions(client.store)
    assert client.get("/users/made-up-9f3c/recommendations").status_code == 401
    assert impressions(client.store) == before and impressions(client.store, "made-up-9f3c") == 0
    assert client.get("/users/frank/recommendations", headers=as_shopper("frank")).status_code == 200
    assert impressions(client.store, "frank") == 1
    assert client.delete("/users/frank", headers=as_key(ADMIN)).status_code == 204
    assert client.get("/users/frank/recommendations").status_code == 401
    assert impressions(client.store, "frank") == 0 and client.store.user_events("frank") == []


def test_anonymous_sessions_are_a_public_read(make_client):
    body = {"recent_items": ["dryer"], "text": "hair", "k": 3}
    r = make_client().post("/recommendations", json=body)
    assert r.status_code == 200 and len(r.json()["results"]) == 3
    private = make_client(public_reads=False)
    assert private.post("/recommendations", json=body).status_code == 401
    assert private.post("/recommendations", json=body, headers=as_key(READ)).status_code == 200


def test_a_shopper_token_posts_only_its_own_events(client):
    batch = [{"event_id": "t1", "user_id": "gina", "item_id": "tent", "type": "click"},
             {"event_id": "t2", "user_id": "hank", "item_id": "tent", "type": "click"}]
    body = client.post("/events", json={"events": batch}, headers=as_shopper("gina")).json()
    assert body["stored"] == 1
    assert [(x["index"], x["reason"].split(":")[0]) for x in body["rejected"]] == [(1, "user_id")]
    assert client.store.user_events("hank") == []
    assert client.post("/events", json={"events": batch}).status_code == 401
    assert client.post("/events", json={"events": batch}, headers=as_key(READ)).status_code == 403


def test_unknown_keys_and_bad_tokens_are_rate_limited(make_client):
    client = make_client(rate_per_minute=60, rate_burst=5)
    codes = [client.get("/health", headers={"X-API-Key": f"sk_guess_{n}"}).status_code for n in range(20)]
    assert codes[:5] == [401] * 5 and set(codes[5:]) == {429}
    other = make_client(rate_per_minute=60, rate_burst=5)
    codes = [other.get("/health", headers={"X-Shopper-Token": f"st1.guess.{n}"}).status_code for n in range(10)]
    assert codes[:5] == [401] * 5 and set(codes[5:]) == {429}


def test_tokens_are_signed_expire_and_name_one_shopper():
    from api.security import MAX_TOKEN_CHARS, mint_token, verify_token

    value, expires = mint_token("ivy@example.com", SECRET, 30, now=1000.0)
    assert expires == 1030 and value.startswith("st1.") and "ivy" not in value
    assert verify_token(value, SECRET, now=1029.0) == "ivy@example.com"
    assert verify_token(value, SECRET, now=1030.0) is None
    assert verify_token(value, "some-other-secret-here", now=1000.0) is None
    head, payload, sig = value.split(".")
    assert verify_token(f"{head}.{payload}x.{sig}", SECRET, now=1000.0) is None
    assert verify_token(value + "A" * MAX_TOKEN_CHARS, SECRET, now=1000.0) is None
    assert verify_token("garbage", SECRET) is None


def test_semrec_token_prints_a_token_the_server_accepts(client, monkeypatch):
    from api.cli import app as cli
    from api.security import verify_token

    monkeypatch.setenv("SEMREC_TOKEN_SECRET", SECRET)
    r = CliRunner().invoke(cli, ["token", "jack", "--ttl", "120"])
    assert r.exit_code == 0, r.output
    value = r.stdout.strip().splitlines()[0]
    assert verify_token(value, SECRET) == "jack"
    assert client.get("/users/jack/recommendations", headers={"X-Shopper-Token": value}).status_code == 200
    monkeypatch.delenv("SEMREC_TOKEN_SECRET")
    r = CliRunner().invoke(cli, ["token", "jack"])
    assert r.exit_code == 2 and "SEMREC_TOKEN_SECRET" in r.output and "Traceback" not in r.output


def test_the_demo_token_route_exists_only_in_demo_mode(make_client):
    off = make_client()
    assert off.post("/demo/token", json={"user_id": "kim"}).status_code in (404, 405)
    assert "/demo/token" not in off.get("/openapi.json").json()["paths"]
    demo = make_client(demo_tokens=True)
    got = demo.post("/demo/token", json={"user_id": "kim"}).json()
    assert got["user_id"] == "kim" and got["expires_at"] > time.time()
    headers = {"X-Shopper-Token": got["token"]}
    assert demo.get("/users/kim/recommendations", headers=headers).status_code == 200
    assert demo.get("/users/lee/recommendations", headers=headers).status_code == 403
