"""Several server processes on one index and event log: each sees any write within a second."""

import json
import os
import shutil
import subprocess
import sys
import time

import httpx
import pytest

from api.security import digest
from indexer.build import build_index
from indexer.wal import holds_entries

from .test_crash import free_port

ADMIN = "sk_workers_admin"


def test_two_workers_see_each_others_writes_within_a_second(tiny_catalog, embedder, tmp_path):
    build_index(tiny_catalog, embedder, progress=False).save(tmp_path / "ix")
    port = free_port()
    env = {**os.environ, "SEMREC_DB_PATH": str(tmp_path / "ev.db"), "HF_HUB_OFFLINE": "1",
           "SEMREC_API_KEYS": json.dumps([{"name": "ops", "role": "admin", "sha256": digest(ADMIN)}])}
    log = tmp_path / "server.log"
    with open(log, "wb") as err:  # shown on failure: pytest prints what a failing test printed
        proc = subprocess.Popen([sys.executable, "-m", "api.cli", "serve", "--index", str(tmp_path / "ix"),
                                 "--port", str(port), "--workers", "2"], env=env, stdout=subprocess.DEVNULL, stderr=err)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 120
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                assert time.time() < deadline and proc.poll() is None, "server did not start"
                time.sleep(0.3)
        time.sleep(3.0)  # the second worker may still be loading its model
        headers = {"X-API-Key": ADMIN, "Connection": "close"}
        assert httpx.put(f"{url}/items/kettle", headers=headers,
                         json={"title": "Gooseneck pour-over kettle", "categories": ["Kitchen", "Coffee"]}
                         ).status_code == 200
        events = [{"event_id": f"e{n}", "user_id": f"u{n}", "item_id": "tent", "type": "purchase"} for n in range(5)]
        assert httpx.post(f"{url}/events", headers=headers, json={"events": events}).json()["stored"] == 5
        assert httpx.delete(f"{url}/items/grinder", headers=headers).status_code == 204
        time.sleep(1.0)
        for _ in range(20):  # new connections land on either worker
            c = {"Connection": "close"}
            assert httpx.get(f"{url}/items/kettle", headers=c).status_code == 200
            assert httpx.get(f"{url}/items/grinder", headers=c).status_code == 404
            first = httpx.get(f"{url}/users/stranger/recommendations", headers={**c, "X-API-Key": ADMIN}
                              ).json()["results"][0]
            assert first["item_id"] == "tent" and "popular" in first["sources"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        print(log.read_text(errors="replace")[-4000:])


def _serve(index_dir, port, workers, env):
    return subprocess.Popen([sys.executable, "-m", "api.cli", "serve", "--index", str(index_dir), "--port", str(port),
                             "--workers", str(workers)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _until(check, seconds: float) -> float:
    """Poll ``check()`` until it is true; returns the seconds it took (fails after ``seconds``)."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < seconds, "not visible in time"
        time.sleep(0.05)
    return time.monotonic() - started


@pytest.mark.parametrize("machines,workers", [
    pytest.param(2, 1, id="2-workers"),
    pytest.param(2, 2, id="4-workers", marks=pytest.mark.slow),  # ~60 s: four model loads on two cores
])
def test_workers_on_postgresql_share_events_erasures_and_catalog(machines, workers, tiny_catalog, embedder,
                                                                 tmp_path, pg_url):
    """``machines`` servers of ``workers`` processes each, every server with its OWN copy of the index
    (as on separate machines) and one PostgreSQL: an event, an erasure and catalog changes made
    through one server reach every other within a second or so (follow interval 0.25 s)."""
    build_index(tiny_catalog, embedder, progress=False).save(tmp_path / "ix0")
    for m in range(1, machines):
        shutil.copytree(tmp_path / "ix0", tmp_path / f"ix{m}")
    env = {**os.environ, "SEMREC_DB_URL": pg_url, "HF_HUB_OFFLINE": "1", "SEMREC_FOLLOW_SECONDS": "0.25",
           "SEMREC_API_KEYS": json.dumps([{"name": "ops", "role": "admin", "sha256": digest(ADMIN)}])}
    ports = [free_port() for _ in range(machines)]
    procs = [_serve(tmp_path / f"ix{m}", ports[m], workers, env) for m in range(machines)]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    fresh = {"Connection": "close"}  # a new connection each time: any worker of a server may answer
    admin = {"X-API-Key": ADMIN, **fresh}

    def everywhere(path, want, tries=6 * workers):
        """Every server (each over several connections, so each of its workers) answers as ``want``
        (asked with the admin key: a shopper's recommendations are personal data)."""
        return all(want(httpx.get(f"{u}{path}", headers=admin, timeout=10)) for u in urls for _ in range(tries))

    def first_popular(r):
        first = r.json()["results"][0]
        return first["item_id"], "popular" in first["sources"]

    try:
        deadline = time.time() + 240
        for u, proc in zip(urls, procs):
            while True:
                try:
                    if httpx.get(f"{u}/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.time() < deadline and proc.poll() is None, "server did not start"
                time.sleep(0.3)
        time.sleep(3.0 * workers)  # a second worker of a server may still be loading its model
        assert httpx.put(f"{urls[0]}/items/kettle", headers=admin, json={
            "title": "Gooseneck pour-over kettle", "categories": ["Kitchen", "Coffee"]}).status_code == 200
        _until(lambda: everywhere("/items/kettle", lambda r: r.status_code == 200), 5)
        events = [{"event_id": f"big{n}", "user_id": "big-spender", "item_id": "espresso", "type": "purchase"}
                  for n in range(3)] + [{"event_id": f"t{n}", "user_id": f"u{n}", "item_id": "tent",
                                         "type": "purchase"} for n in range(2)]
        assert httpx.post(f"{urls[0]}/events", headers=admin, json={"events": events}).json()["stored"] == 5
        _until(lambda: everywhere("/users/stranger/recommendations",
                                  lambda r: first_popular(r) == ("espresso", True)), 5)
        assert httpx.delete(f"{urls[-1]}/users/big-spender", headers=admin).status_code == 204
        _until(lambda: everywhere("/users/stranger/recommendations",
                                  lambda r: first_popular(r) == ("tent", True)), 5)
        assert httpx.delete(f"{urls[-1]}/items/grinder", headers=admin).status_code == 204
        _until(lambda: everywhere("/items/grinder", lambda r: r.status_code == 404), 5)
        assert not any(holds_entries(tmp_path / f"ix{m}" / "wal.jsonl") for m in range(machines))
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)
