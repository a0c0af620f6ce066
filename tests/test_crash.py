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
    in_doubt = []  # a delete sent but not answered when the server died may or may not have happened
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
                        if n % 5 == 4:
                            target = acked_items[-2]
                            in_doubt.append(target)
                            if c.delete(f"/items/{target}").status_code == 204:
                                deleted.append(target)
                            in_doubt.remove(target)
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
    assert len(in_doubt) <= 2  # at most one unanswered delete per round
    for item in acked_items:
        if item not in in_doubt:
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


class Ledger:
    """What the clients were told, and what each key may hold after crashes: per key the set of
    acceptable values (one after an acknowledged write; the old and the new one while a write was
    sent but never answered, because the server died)."""

    def __init__(self):
        self.allowed: dict[str, set] = {}
        self.events: list[str] = []
        self.unexpected: list[tuple[str, int]] = []  # answers other than success (none expected)

    def check(self, what: str, response: httpx.Response, ok=(200,)) -> bool:
        if response.status_code not in ok:
            self.unexpected.append((what, response.status_code))
        return response.status_code in ok

    def sent(self, key, value):
        self.allowed[key] = self.allowed.get(key, {None}) | {value}

    def acked(self, key, value):
        self.allowed[key] = {value}


def mixed_writes(c: httpx.Client, round_: int, ledger: Ledger, stop: threading.Event) -> None:
    """Upserts and deletes over a small pool of items, event batches and onboarding answers, until
    ``stop`` or the server dies; every write is recorded in ``ledger`` before it is sent."""
    n = 0
    while not stop.is_set():
        item, user = f"k{n % 7}", f"u{n % 5}"
        title = f"Gadget {round_}-{n}"
        try:
            ledger.sent(f"item:{item}", title)
            if ledger.check("put", c.put(f"/items/{item}", json={"title": title})):
                ledger.acked(f"item:{item}", title)
            batch = events(f"shopper{n % 11}", ["dryer", "tent", item], start=100_000 * round_ + 3 * n)
            for e in batch:
                e["event_id"] = f"r{round_}-{e['event_id']}"
            r = c.post("/events", json={"events": batch})
            if ledger.check("events", r) and r.json()["stored"] == len(batch):
                ledger.events.extend(e["event_id"] for e in batch)
            interests = f"interest {round_}-{n}"
            ledger.sent(f"onboarding:{user}", interests)
            if ledger.check("onboarding", c.post(f"/users/{user}/onboarding", json={"interests": interests})):
                ledger.acked(f"onboarding:{user}", interests)
            if n % 3 == 2:
                victim = f"k{(n * 5) % 7}"
                ledger.sent(f"item:{victim}", None)
                if ledger.check("delete", c.delete(f"/items/{victim}"), ok=(204, 404)):
                    ledger.acked(f"item:{victim}", None)
        except httpx.HTTPError:
            return  # the server died under us: the write in flight stays in doubt in the ledger
        n += 1


def tear_the_log_tail(index_dir, round_: int) -> None:
    """What a crash inside a write leaves: the first bytes of an entry, no newline."""
    with open(index_dir / "wal.jsonl", "ab") as fh:
        fh.write(b'{"op": "upsert", "items": [{"item_id": "torn-%d", "title": "never ack' % round_)


@pytest.mark.parametrize("rounds", [3, pytest.param(20, marks=pytest.mark.slow)])
def test_kill9_rounds_under_mixed_writes_lose_nothing_acknowledged(tiny_catalog, embedder, tmp_path, rounds):
    ix = tmp_path / "ix"
    build_index(tiny_catalog, embedder, progress=False).save(ix)
    env = {**os.environ, "SEMREC_INDEX_DIR": str(ix), "SEMREC_DB_PATH": str(tmp_path / "ev.db"),
           "SEMREC_API_KEYS": json.dumps([{"name": "ops", "role": "admin", "sha256": digest(ADMIN)}]),
           "SEMREC_PSEUDONYM_KEY": "crash-test-key", "HF_HUB_OFFLINE": "1",
           "SEMREC_COMPACT_LOG_MB": "0.05", "SEMREC_COMPACT_RETIRED": "20"}  # compactions happen mid-round too
    port, ledger, rng = free_port(), Ledger(), random.Random(rounds)
    for round_ in range(rounds):
        proc = start(env, port)  # every restart must succeed, torn tails included
        stop = threading.Event()
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"X-API-Key": ADMIN}, timeout=10) as c:
            writer = threading.Thread(target=mixed_writes, args=(c, round_, ledger, stop))
            writer.start()
            time.sleep(rng.uniform(1.0, 3.0))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            stop.set()
            writer.join()
        if round_ % 2 == 1:
            tear_the_log_tail(ix, round_)
    proc = start(env, port)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ledger.unexpected == []
    assert len(ledger.events) >= 10 * rounds and len(ledger.allowed) >= 12
    assert int((ix / "CURRENT").read_text()[1:]) > 1  # the log was compacted online between the kills
    index = ItemIndex.load(ix)
    store = open_event_store(tmp_path / "ev.db", pseudonym_key="crash-test-key")
    for key, allowed in ledger.allowed.items():
        kind, name = key.split(":", 1)
        if kind == "item":
            rec = index.table.get(name)
            assert (None if rec is None else rec["title"]) in allowed, (key, rec and rec["title"], allowed)
        else:
            got = store.onboarding(name)
            assert (None if got is None else got[0]) in allowed, (key, got, allowed)
    stored = {row[0] for row in store._db.execute("SELECT event_id FROM events")}
    assert set(ledger.events) <= stored
    assert not any(index.table.get(f"torn-{r}") for r in range(rounds))
    store.close()
