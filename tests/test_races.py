"""Races and odd ids (issue #16, red-team cases 5 and 7), through a real server on loopback: a delete
racing a recommendation for a shopper with that item in their history, labels renumbered while
requests read them, item ids containing '/', and the report's directory without the server's
absolute path."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import uvicorn

from api.settings import Settings
from indexer.build import build_index

from .conftest import make_app, open_events_for
from .test_crash import free_port

ADMIN = "sk_races_admin"


def serve(app):
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                        log_level="error"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    while not srv.started:
        time.sleep(0.05)
    return srv, thread, f"http://127.0.0.1:{port}"


@pytest.fixture()
def server(tiny_catalog, embedder, tmp_path):
    from api.security import ApiKey, digest

    index = build_index(tiny_catalog, embedder, progress=False)
    index.save(tmp_path / "ix")
    index.open_log()
    cfg = Settings(index_dir=tmp_path / "ix", db_path=tmp_path / "ev.db", rate_per_minute=1e7, rate_burst=1_000_000,
                   report_dir=tmp_path / "runs" / "report", api_keys=[ApiKey(name="ops", role="admin",
                                                                                sha256=digest(ADMIN))])
    store, state = open_events_for(cfg)
    srv, thread, url = serve(make_app(cfg, index, embedder, store, state))
    yield url, index
    srv.should_exit = True
    thread.join()
    store.close()


def churn(index, stop, item_ids, relabel=False):
    """Delete and re-add ``item_ids`` (same vectors) as fast as possible; renumber labels too."""
    saved = {i: (index.table.get(i), index.vectors_of([i])) for i in item_ids}
    from indexer.schema import make_items

    while not stop.is_set():
        for item_id, (record, vector) in saved.items():
            index.delete(item_id)
            index.add(make_items([record]), vector)
        if relabel:
            index.compact_labels(timeout_s=1.0)


def test_deletes_racing_personal_recommendations_are_never_500s(server):
    url, index = server
    history = ["dryer", "dryer-travel", "straightener", "lipstick-red", "espresso", "tent"]
    headers = {"X-API-Key": ADMIN}
    events = [{"event_id": f"r{n}", "user_id": "racer", "item_id": i, "type": "click"} for n, i in enumerate(history)]
    assert httpx.post(f"{url}/events", json={"events": events}, headers=headers).json()["stored"] == len(history)
    stop = threading.Event()
    writer = threading.Thread(target=churn, args=(index, stop, history))
    writer.start()
    try:
        with httpx.Client(base_url=url, headers=headers, timeout=30) as client, ThreadPoolExecutor(4) as pool:
            codes = list(pool.map(lambda _: client.get("/users/racer/recommendations", params={"k": 5}).status_code,
                                  range(300)))
            similar = list(pool.map(lambda _: client.get("/items/dryer/similar", params={"k": 3}).status_code,
                                    range(100)))
    finally:
        stop.set()
        writer.join()
    assert set(codes) == {200}, {c: codes.count(c) for c in set(codes)}
    assert set(similar) <= {200, 404}


def test_labels_renumbered_under_traffic_never_mix_up_items(server):
    url, index = server
    stop = threading.Event()
    writer = threading.Thread(target=churn, args=(index, stop, ["lipstick-red", "grinder"], True))
    writer.start()
    checks = []

    def check(n):
        with httpx.Client(base_url=url, timeout=30) as client:
            sim = client.get("/items/dryer/similar", params={"k": 8})
            found = client.get("/search", params={"q": "espresso coffee beans", "k": 3})
            sug = client.get("/suggest", params={"q": "cof"})
            session = client.post("/recommendations", json={"recent_items": ["tent"], "k": 4})
            return (sim.status_code, found.status_code, sug.status_code, session.status_code,
                    "dryer" not in [r["item_id"] for r in sim.json()["results"]] if sim.status_code == 200 else True,
                    found.json()["results"][0]["item_id"] == "espresso" if found.status_code == 200 else False)

    try:
        with ThreadPoolExecutor(4) as pool:
            checks = list(pool.map(check, range(120)))
    finally:
        stop.set()
        writer.join()
    assert index.generation > 3  # labels really were renumbered while the requests ran
    statuses = {c[:4] for c in checks}
    assert statuses == {(200, 200, 200, 200)}, statuses
    assert all(c[4] and c[5] for c in checks)


def test_item_ids_with_slashes_are_reachable(server):
    url, _ = server
    headers = {"X-API-Key": ADMIN}
    for item_id in ("sku/123", "a/b/c", "shoes/similar-ish"):
        path = f"{url}/items/{httpx.URL(item_id).path}"
        assert httpx.put(path, json={"title": f"Item {item_id}"}, headers=headers).status_code == 200, item_id
        got = httpx.get(path)
        assert got.status_code == 200 and got.json()["item_id"] == item_id
        assert httpx.get(f"{path}/similar", params={"k": 2}).json()["item_id"] == item_id
        assert httpx.get(f"{path}/also-bought").json()["item_id"] == item_id
        assert httpx.get(f"{url}/items/{item_id.replace('/', '%2F')}").json()["item_id"] == item_id
        assert httpx.delete(path, headers=headers).status_code == 204
        assert httpx.get(path).status_code == 404
    assert httpx.get(f"{url}/items/dryer/similar").status_code == 200
    schema = httpx.get(f"{url}/openapi.json").json()
    assert "/items/{item_id}" in schema["paths"] and "/items/{item_id}/similar" in schema["paths"]


def test_the_report_does_not_show_the_servers_absolute_path(server, tmp_path):
    url, _ = server
    body = httpx.get(f"{url}/report").json()
    assert not body["directory"].startswith("/") and str(tmp_path) not in body["directory"]
    assert body["directory"].endswith("runs/report")


def test_live_vectors_skip_items_deleted_meanwhile(tiny_index):
    from retriever.personal import live_vectors

    keep, vecs = live_vectors(tiny_index, ["dryer", "no-such-item", "tent"])
    assert keep == [0, 2] and vecs.shape == (2, tiny_index.dim)
    assert np.allclose(vecs[1], tiny_index.vectors_of(["tent"])[0])
