"""Crash safety for real: a server process is killed with SIGKILL mid-traffic and restarted; every
write it acknowledged must be there. A killed `semrec index` leaves the previous index loadable."""

import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from api.security import digest
from indexer.build import build_index
from indexer.store import ItemIndex
from retriever.eventstore import open_event_store

from .test_personal import events

ADMIN = "sk_crash_admin"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(env: dict, port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "api.cli", "serve", "--index", env["SEMREC_INDEX_DIR"],
                             "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    raise TimeoutError("server did not start")


def test_acknowledged_writes_survive_sigkill(tiny_catalog, embedder, tmp_path):
    build_index(tiny_catalog, embedder, progress=False).save(tmp_path / "ix")
    env = {**os.environ, "SEMREC_INDEX_DIR": str(tmp_path / "ix"), "SEMREC_DB_PATH": str(tmp_path / "ev.db"),
           "SEMREC_API_KEYS": json.dumps([{"name": "ops", "role": "admin", "sha256": digest(ADMIN)}]),
           "SEMREC_PSEUDONYM_KEY": "crash-test-key", "HF_HUB_OFFLINE": "1"}
    port = free_port()
    acked_items, acked_events, deleted = [], [], []
    for round_ in range(2):
        proc = start(env, port)
        stop = threading.Event()

        def write(round_=round_, stop=stop):
            headers = {"X-API-Key": ADMIN}
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=10) as c:
                n = 0
                while not stop.is_set():
                    item = f"r{round_}-item{n}"
                    try:
                        if c.put(f"/items/{item}", json={"title": f"Crash test gadget {n}"}).status_code == 200:
                            acked_items.append(item)
                        batch = events(f"user{n}", ["dryer", "tent"], start=1000 * round_ + 2 * n)
                        if c.post("/events", json={"events": batch}).status_code == 200:
                            acked_events.extend(e["event_id"] for e in batch)
                        if n % 5 == 4 and c.delete(f"/items/{acked_items[-2]}").status_code == 204:
                            deleted.append(acked_items[-2])
                    except httpx.HTTPError:
                        return  # the server died under us: whatever was not acknowledged may be lost
                    n += 1

        writer = threading.Thread(target=write)
        writer.start()
        time.sleep(random.uniform(1.5, 4.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        stop.set()
        writer.join()
    assert len(acked_items) >= 5 and len(acked_events) >= 10
    index = ItemIndex.load(tmp_path / "ix")
    for item in acked_items:
        assert (index.table.get(item) is None) == (item in deleted), item
    store = open_event_store(tmp_path / "ev.db", pseudonym_key="crash-test-key")
    stored = {row[0] for row in store._db.execute("SELECT event_id FROM events")}
    assert set(acked_events) <= stored


@pytest.mark.parametrize("delay", [1.0, 3.0])
def test_killed_index_build_leaves_the_previous_index(tiny_catalog, embedder, tmp_path, delay):
    build_index(tiny_catalog, embedder, progress=False).save(tmp_path / "ix")
    before = ItemIndex.load(tmp_path / "ix").fingerprint()
    proc = subprocess.Popen([sys.executable, "-m", "api.cli", "index", "data/demo", "--out", str(tmp_path / "ix")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    after = ItemIndex.load(tmp_path / "ix")
    assert after.fingerprint() == before and len(after) == 9
