"""Several server processes on one index and event log: each sees any write within a second."""

import json
import os
import subprocess
import sys
import time

import httpx

from api.security import digest
from indexer.build import build_index

from .test_crash import free_port

ADMIN = "sk_workers_admin"


def test_two_workers_see_each_others_writes_within_a_second(tiny_catalog, embedder, tmp_path):
    build_index(tiny_catalog, embedder, progress=False).save(tmp_path / "ix")
    port = free_port()
    env = {**os.environ, "SEMREC_DB_PATH": str(tmp_path / "ev.db"), "HF_HUB_OFFLINE": "1",
           "SEMREC_API_KEYS": json.dumps([{"name": "ops", "role": "admin", "sha256": digest(ADMIN)}])}
    proc = subprocess.Popen([sys.executable, "-m", "api.cli", "serve", "--index", str(tmp_path / "ix"),
                             "--port", str(port), "--workers", "2"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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
