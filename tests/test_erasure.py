"""Erasure that erases and suggestions that need a crowd (issue #16, red-team cases 2 and 6), through
HTTP on a server loaded from its data directory like `semrec serve`: after DELETE /users/{id} no
file of the data directory holds a byte of the user (events DB, its -wal and -shm, the index, the
search cache) but the erasure log's entry, which holds only their keyed hash (every worker needs it
to take the erased events out of its counts) until its retention is over; then nothing, before and
after a restart; their searches leave /suggest; a query typed by one client never becomes a
suggestion."""

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import Settings
from indexer.build import build_index

SECRET = "erasure-test-token-secret"
ADMIN = "sk_erasure_admin"
USER = "erase-me-7f3a9c@example.com"
INTEREST = "marker-q8z1 moisturiser for very dry skin"
QUERY = "marker-w4k2 travel hair dryer"


def settings_for(root: Path) -> Settings:
    from api.security import ApiKey, digest

    return Settings(index_dir=root / "index", db_path=root / "events.db", pseudonym_key="erasure-test-key",
                    token_secret=SECRET, api_keys=[ApiKey(name="ops", role="admin", sha256=digest(ADMIN))],
                    rate_per_minute=1e6, rate_burst=100_000)


def as_shopper(user):
    from api.security import mint_token

    return {"X-Shopper-Token": mint_token(user, SECRET, 600)[0]}


def files_holding(root: Path, needles: list[bytes]) -> dict[str, list[str]]:
    """``{file: [needles found]}`` over every file under ``root``."""
    found = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        hits = [n.decode() for n in needles if n in data]
        if hits:
            found[str(path.relative_to(root))] = hits
    return found


@pytest.fixture()
def data_dir(tiny_catalog, embedder, tmp_path):
    root = tmp_path / "data"
    build_index(tiny_catalog, embedder, progress=False).save(root / "index")
    return root


def test_after_erasure_no_file_of_the_data_dir_holds_a_byte_of_the_user(data_dir):
    from retriever.eventstore import pseudonymize
    from retriever.eventstore.sqlite import SQLiteEventStore

    settings = settings_for(data_dir)
    user_key = pseudonymize(USER, settings.pseudonym_key)
    needles = [USER.encode(), user_key.encode(), INTEREST.encode(), b"marker-q8z1", b"marker-w4k2"]
    me = admin = {"X-API-Key": ADMIN}  # the shop's backend acting for the shopper
    with TestClient(create_app(settings)) as client:
        done = [("dryer", "view"), ("dryer-travel", "click"), ("tent", "purchase")]
        events = [{"event_id": f"{USER}-{n}", "user_id": USER, "item_id": item, "type": kind}
                  for n, (item, kind) in enumerate(done)]
        assert client.post("/events", json={"events": events}, headers=me).json()["stored"] == 3
        assert client.post(f"/users/{USER}/onboarding", json={"interests": INTEREST}, headers=me).status_code == 200
        assert client.get(f"/users/{USER}/recommendations", headers=me).status_code == 200
        assert client.get("/search", params={"q": QUERY, "user_id": USER}, headers=me).status_code == 200
        client.app.state.components.svc.events.flush_impressions()
        before = files_holding(data_dir, needles)
        assert before, "the user's data should be on disk before erasure (else this test proves nothing)"
        assert client.delete(f"/users/{USER}", headers=admin).status_code == 204
        erasure_log = {"events.db": [user_key]}  # the erasure log's entry: the keyed hash, no id, no text
        assert files_holding(data_dir, needles) == erasure_log
        box = client.app.state.components.svc.search
        assert all(QUERY.split()[0] not in k for k in box.queries.counts())
    with TestClient(create_app(settings)) as client:  # a restart replays and reopens every file
        assert client.get(f"/users/{USER}/history", headers=me).json() == {"user_id": USER, "events": [],
                                                                             "onboarding": None}
    assert files_holding(data_dir, needles) == erasure_log
    # Once the retention is over the next open prunes the entry (here: a retention of 0 s).
    SQLiteEventStore(data_dir / "events.db", pseudonym_key=settings.pseudonym_key, erasure_retention_s=0.0).close()
    assert files_holding(data_dir, needles) == {}


def test_suggestions_need_three_distinct_shoppers_and_forget_an_erased_one(data_dir):
    query = "gooseneck kettle for pour over"
    with TestClient(create_app(settings_for(data_dir))) as client:
        def suggested():
            got = client.get("/suggest", params={"q": "goose"}).json()["suggestions"]
            return {"text": query, "kind": "query"} in got

        for user in ("ann", "ben"):
            r = client.get("/search", params={"q": query, "user_id": user}, headers=as_shopper(user))
            assert r.status_code == 200
        assert not suggested()
        client.get("/search", params={"q": query, "user_id": "cat"}, headers=as_shopper("cat"))
        assert suggested()
        assert client.delete("/users/ben", headers={"X-API-Key": ADMIN}).status_code == 204
        assert not suggested()


def test_one_client_cannot_plant_a_suggestion(data_dir):
    planted = "visit evil-pharma.example for cheap pills"
    with TestClient(create_app(settings_for(data_dir))) as client:
        for n in range(5):  # keyless, with made-up user ids: all one client
            client.get("/search", params={"q": planted})
            client.get("/search", params={"q": planted, "user_id": f"sock-puppet-{n}"})
        for prefix in ("vis", "visit", "evil"):
            got = client.get("/suggest", params={"q": prefix}).json()["suggestions"]
            assert all("evil-pharma" not in s["text"] for s in got), (prefix, got)


def test_an_erasure_through_one_worker_leaves_every_workers_query_log(tmp_path):
    """Each worker keeps its own query log in memory: the erasure log reaches it like the counts
    (``InteractionState.on_erasure``, wired by ``api.deps.search_box_for``)."""
    from retriever.eventstore import open_event_store, pseudonymize
    from retriever.search.suggest import QueryLog
    from retriever.state import InteractionState

    key = "erasure-test-key"
    here, there = (open_event_store(tmp_path / "events.db", pseudonym_key=key) for _ in range(2))
    state, queries = InteractionState(), QueryLog()
    state.on_erasure.append(queries.forget)
    try:
        state.catch_up(there)
        for source in (pseudonymize("ben", key), pseudonymize("ann", key)):
            queries.add("gooseneck kettle", source)
        here.delete_user("ben")  # through the other worker
        state.catch_up(there)  # what the follow loop does every follow_seconds
        assert queries.counts() == {"gooseneck kettle": 1}
    finally:
        here.close(), there.close()
