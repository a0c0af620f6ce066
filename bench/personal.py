"""Personalisation benchmark (not a test), against a real ``semrec serve`` on loopback:

1. ``GET /users/{id}/recommendations?k=10`` latency p50/p99 for real users of the loaded history;
2. event ingestion throughput: durable events/s (each acknowledged batch is an fsync'd commit), for
   batches of 100 and of 1;
3. freshness: a brand-new shopper's first purchase, from sending ``POST /events`` until their
   recommendations come from their own interests (a ``dense`` source appears instead of the cold-start
   popular list).

``python -m bench.personal --index DIR --db EVENTS.db --users Beauty.txt [--variant NAME ...] [--json OUT]``.
Each ``--variant`` (an A/B variant of the server's ``SEMREC_VARIANTS``, e.g. one with ``"rerank":
false``) is timed in the same run, its requests interleaved with the default's, so the stage's cost
is a ratio measured side by side. Run it on a copy of the event log: it writes events and impressions.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from .kit import latency_stats
from .loadserver import start_server, stop_server
from .traffic import read_items, read_users


def recommendation_latency(client: httpx.Client, users: list[str], n: int, variants: list[str | None] = (None,)
                           ) -> dict[str, dict]:
    """p50/p99 of ``n`` requests per variant (None: the shopper's own bucket), one user asked in
    every variant in turn, so each variant meets the same users and the same machine load."""
    params = [{"k": 10, **({"variant": v} if v else {})} for v in variants]
    for user in users[:20]:  # warm-up: model, caches, connections
        for q in params:
            r = client.get(f"/users/{user}/recommendations", params=q)
            if r.status_code == 422:  # an unknown --variant: the server names the configured ones
                raise ValueError("; ".join(d.get("msg", "") for d in r.json().get("detail", [])) or r.text)
    seconds: list[list[float]] = [[] for _ in variants]
    for user in random.Random(0).choices(users, k=n):
        for times, q in zip(seconds, params):
            t = time.perf_counter()
            r = client.get(f"/users/{user}/recommendations", params=q)
            times.append(time.perf_counter() - t)
            r.raise_for_status()
    return {v or "default": latency_stats(times) for v, times in zip(variants, seconds)}


def ingestion(client: httpx.Client, items: list[str], batch: int, seconds: float) -> dict:
    run, sent, started, n = uuid.uuid4().hex[:8], 0, time.perf_counter(), 0
    rng = random.Random(1)
    while time.perf_counter() - started < seconds:
        events = [{"event_id": f"bench-{run}-{n}-{j}", "user_id": f"bench-user-{rng.randrange(5000)}",
                   "item_id": rng.choice(items), "type": "view"} for j in range(batch)]
        r = client.post("/events", json={"events": events})
        r.raise_for_status()
        sent += r.json()["stored"]
        n += 1
    elapsed = time.perf_counter() - started
    return {"batch": batch, "requests": n, "events": sent, "seconds": round(elapsed, 2),
            "events_per_s": round(sent / elapsed, 1), "requests_per_s": round(n / elapsed, 1)}


def freshness(client: httpx.Client, items: list[str], trials: int) -> dict:
    ack, visible = [], []
    rng = random.Random(2)
    for _ in range(trials):
        user = f"fresh-{uuid.uuid4().hex[:12]}"
        started = time.perf_counter()
        r = client.post("/events", json={"events": [{"event_id": uuid.uuid4().hex, "user_id": user,
                                                      "item_id": rng.choice(items), "type": "purchase"}]})
        r.raise_for_status()
        ack.append(time.perf_counter() - started)
        while True:
            recs = client.get(f"/users/{user}/recommendations", params={"k": 10}).json()["results"]
            if any("dense" in row["sources"] for row in recs):
                visible.append(time.perf_counter() - started)
                break
            if time.perf_counter() - started > 10:
                raise RuntimeError(f"an event for {user} was not visible after 10 s")
    return {"ack": latency_stats(ack), "visible": latency_stats(visible)}


def run(index: Path, db: Path, users_file: Path, requests: int = 500, ingest_seconds: float = 15.0,
        trials: int = 50, variants: list[str] = ()) -> dict:
    users = read_users(users_file)
    items = [item_id for item_id, _ in read_items(index)]
    log = Path(tempfile.mkdtemp(prefix="semrec-bench-")) / "server.log"
    proc, url, keys = start_server(index, db, log, startup_s=900)
    try:
        with httpx.Client(base_url=url, headers={"X-API-Key": keys["backend"]}, timeout=30, trust_env=False) as c:
            out = {"users_in_history": len(users),
                   "recommendations": recommendation_latency(c, users, requests, [None, *variants]),
                   "ingest_batch_100": ingestion(c, items, 100, ingest_seconds),
                   "ingest_batch_1": ingestion(c, items, 1, ingest_seconds),
                   "freshness": freshness(c, items, trials)}
    finally:
        stop_server(proc)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--index", type=Path, required=True)
    p.add_argument("--db", type=Path, required=True, help="event log (a copy: the benchmark writes to it)")
    p.add_argument("--users", type=Path, required=True, help="Beauty.txt, a reviews .jsonl or a dataset folder")
    p.add_argument("--requests", type=int, default=500)
    p.add_argument("--ingest-seconds", type=float, default=15.0)
    p.add_argument("--trials", type=int, default=50)
    p.add_argument("--variant", action="append", default=[], help="also time this A/B variant (repeatable)")
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)
    try:
        r = run(a.index, a.db, a.users, a.requests, a.ingest_seconds, a.trials, a.variant)
    except ValueError as e:
        print(f"error: --variant: {e}", file=sys.stderr)
        return 2
    f = r["freshness"]
    base = r["recommendations"]["default"]
    for name, rec in r["recommendations"].items():
        ratio = f" ({rec['p99_ms'] / base['p99_ms']:.2f}x the default's p99)" if name != "default" else ""
        print(f"GET /users/{{id}}/recommendations, variant {name} (k=10, {r['users_in_history']} users in the "
              f"history): p50 {rec['p50_ms']:.1f} ms, p99 {rec['p99_ms']:.1f} ms over {rec['n']} requests{ratio}")
    for key in ("ingest_batch_100", "ingest_batch_1"):
        g = r[key]
        print(f"POST /events, batches of {g['batch']}: {g['events_per_s']} events/s durable "
              f"({g['requests_per_s']} requests/s)")
    print(f"freshness: event acknowledged p50 {f['ack']['p50_ms']:.1f} / p99 {f['ack']['p99_ms']:.1f} ms; "
          f"visible in recommendations p50 {f['visible']['p50_ms']:.1f} / p99 {f['visible']['p99_ms']:.1f} ms")
    if a.json:
        a.json.write_text(json.dumps(r, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
