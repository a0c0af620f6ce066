"""The traffic of a load test: inputs (item ids from an index, real user ids, queries, the route
mix), the request generator (:class:`Traffic`: open loop at a rate or closed loop with N workers,
latency measured from each request's intended send time) and the statistics of its samples."""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
import uuid
from collections import Counter
from pathlib import Path
from urllib.parse import quote

import httpx

ROUTES = ("recommendations", "similar", "search", "events")
DEFAULT_MIX = {"recommendations": 0.35, "similar": 0.25, "search": 0.3, "events": 0.1}
EVENT_TYPES = (("view", 0.6), ("click", 0.2), ("add_to_cart", 0.1), ("purchase", 0.05), ("rating", 0.05))
ROOT = Path(__file__).resolve().parent.parent
DEMO_REVIEWS = ROOT / "data" / "demo" / "reviews.jsonl"  # the settings' default shoppers_file


# ---- statistics ----------------------------------------------------------------------------------
def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (nan when empty)."""
    if not sorted_values:
        return math.nan
    return sorted_values[min(len(sorted_values) - 1, max(0, math.ceil(q / 100 * len(sorted_values)) - 1))]


def route_stats(latencies: list[float], errors: int, seconds: float) -> dict:
    lat = sorted(latencies)
    ms = {f"p{q}_ms": round(1000 * percentile(lat, q), 2) for q in (50, 95, 99)}
    return {"requests": len(latencies), "errors": errors, "rps": round(len(latencies) / seconds, 2) if seconds else 0.0,
            **ms, "max_ms": round(1000 * lat[-1], 2) if lat else math.nan}


def summarize(samples: list[tuple[str, str, float | None]], seconds: float) -> dict:
    """``samples``: (route, outcome, latency s or None when never sent); outcome "ok" or an error kind."""
    by_route = {r: [s for s in samples if s[0] == r] for r in ROUTES}
    errors = Counter(f"{r} {o}" for r, o, _ in samples if o != "ok")
    done = [s for s in samples if s[2] is not None]
    return {"seconds": round(seconds, 2), "requests": len(done), "throughput_rps": round(len(done) / seconds, 2),
            "errors": sum(errors.values()), "errors_by_kind": dict(errors.most_common()),
            "all": route_stats([s[2] for s in done], sum(errors.values()), seconds),
            "routes": {r: route_stats([s[2] for s in v if s[2] is not None], sum(s[1] != "ok" for s in v), seconds)
                       for r, v in by_route.items() if v}}


# ---- inputs --------------------------------------------------------------------------------------
def read_items(index_dir: Path) -> list[tuple[str, str]]:
    """(item_id, title) of the index's live snapshot."""
    import pandas as pd

    snap = Path(index_dir) / (Path(index_dir) / "CURRENT").read_text().strip()
    frame = pd.read_parquet(snap / "items.parquet", columns=["item_id", "title"])
    return list(zip(frame["item_id"].astype(str), frame["title"].fillna("").astype(str)))


def read_users(path: Path) -> list[str]:
    """User ids from a ``user item`` log (Beauty.txt) or a one-id-per-line file, a reviews .jsonl
    with ``user_id``, or a folder holding one of those."""
    path = Path(path)
    if path.is_dir():
        found = [p for p in (path / "Beauty.txt", path / "reviews.jsonl") if p.is_file()] + sorted(path.glob("*.txt"))
        if not found:
            raise ValueError(f"no user log (Beauty.txt, reviews.jsonl, *.txt) in {path}")
        path = found[0]
    if path.suffix == ".jsonl":
        ids = [str(json.loads(line)["user_id"]) for line in path.read_text().splitlines() if line.strip()]
    else:
        ids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    return list(dict.fromkeys(ids))


def read_queries(path: Path) -> list[str]:
    """Queries from an ESCI query set (``querySetQueries[].queryText``), a JSON list, or text lines."""
    text = Path(path).read_text()
    if Path(path).suffix == ".json":
        data = json.loads(text)
        rows = data["querySetQueries"] if isinstance(data, dict) else data
        queries = [r["queryText"] if isinstance(r, dict) else str(r) for r in rows]
    else:
        queries = text.splitlines()
    return [q.strip()[:500] for q in queries if q.strip()]


def parse_mix(text: str) -> dict[str, float]:
    """``"recommendations=0.4,search=0.3,..."``; routes left out get share 0."""
    mix = {r: 0.0 for r in ROUTES}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, share = part.partition("=")
        if name not in mix:
            raise ValueError(f"unknown route {name!r} in mix; routes: {', '.join(ROUTES)}")
        mix[name] = float(share)
    if any(v < 0 for v in mix.values()) or sum(mix.values()) <= 0:
        raise ValueError("mix shares must be >= 0 with a positive sum")
    return mix


# ---- traffic -------------------------------------------------------------------------------------
class Traffic:
    """Picks and sends requests; remembers every event id sent and which ones were acknowledged."""

    def __init__(self, users, items, queries, mix, batch, ingest_key, read_key=None, seed=0, backend_key=None):
        self.users, self.items, self.queries, self.batch = users, [i for i, _ in items], queries, batch
        self.routes, self.weights = list(mix), [mix[r] for r in mix]
        self.rng = random.Random(seed)
        self.prefix = f"lt-{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:8]}-"
        self.ingest = {"X-API-Key": ingest_key} if ingest_key else {}
        self.read = {"X-API-Key": read_key} if read_key else {}
        # a shopper's recommendations are personal data: asked for as the shop's backend would
        self.personal = {"X-API-Key": backend_key} if backend_key else self.read
        self.next_id, self.acked_sum = 0, 0
        self.acked: set[str] = set()
        self.in_doubt: set[str] = set()  # sent, but no 200 came back: stored or not, we cannot know

    def pick(self) -> str:
        return self.rng.choices(self.routes, self.weights)[0]

    def _events(self) -> list[dict]:
        out = []
        for _ in range(self.batch):
            self.next_id += 1
            kind = self.rng.choices([t for t, _ in EVENT_TYPES], [w for _, w in EVENT_TYPES])[0]
            out.append({"event_id": f"{self.prefix}{self.next_id:09d}", "user_id": self.rng.choice(self.users),
                        "item_id": self.rng.choice(self.items), "type": kind,
                        "value": float(self.rng.randint(1, 5)) if kind == "rating" else None,
                        "timestamp": time.time()})
        return out

    async def send(self, client: httpx.AsyncClient, route: str) -> str:
        """One request; returns "ok" or the error kind ("HTTP 500", "ReadTimeout", "rejected", ...)."""
        events: list[dict] = []
        try:
            if route == "recommendations":
                r = await client.get(f"/users/{quote(self.rng.choice(self.users), safe='')}/recommendations",
                                     params={"k": 10}, headers=self.personal)
            elif route == "similar":
                r = await client.get(f"/items/{quote(self.rng.choice(self.items), safe='')}/similar",
                                     params={"k": 10}, headers=self.read)
            elif route == "search":
                r = await client.get("/search", params={"q": self.rng.choice(self.queries), "k": 10},
                                     headers=self.read)
            else:
                events = self._events()
                r = await client.post("/events", json={"events": events}, headers=self.ingest)
        except (httpx.HTTPError, OSError) as e:
            self.in_doubt.update(e["event_id"] for e in events)
            return type(e).__name__
        if r.status_code != 200:
            self.in_doubt.update(e["event_id"] for e in events)
            return f"HTTP {r.status_code}"
        if route != "events":
            return "ok"
        try:
            body = r.json()
            rejected, stored, duplicates = {x["event_id"] for x in body["rejected"]}, body["stored"], body["duplicates"]
        except (ValueError, KeyError, TypeError):
            self.in_doubt.update(e["event_id"] for e in events)
            return "bad response body"
        self.acked_sum += stored
        self.acked.update(e["event_id"] for e in events if e["event_id"] not in rejected)
        return "rejected" if rejected else "duplicates" if duplicates else "ok"


async def open_loop(client, traffic: Traffic, rate: float, duration: float, max_in_flight: int) -> dict:
    """Requests at ``rate``/s on a fixed schedule; latency counts from the intended send time. When
    ``max_in_flight`` are out the scheduler waits (later requests then start late, and that delay
    is in their latency); intended requests still unsent at the end count as "unsent" errors."""
    samples: list[tuple[str, str, float | None]] = []
    slots, tasks, lags = asyncio.Semaphore(max_in_flight), set(), []

    async def one(route: str, intended: float) -> None:
        lags.append(time.perf_counter() - intended)  # how late the client sent it (its own overload)
        try:
            outcome = await traffic.send(client, route)
        finally:
            slots.release()
        samples.append((route, outcome, time.perf_counter() - intended))

    start = time.perf_counter()
    total = int(rate * duration)
    for i in range(total):
        intended = start + i / rate
        if (delay := intended - time.perf_counter()) > 0:
            await asyncio.sleep(delay)
        await slots.acquire()
        if time.perf_counter() >= start + duration:
            slots.release()
            samples += [(traffic.pick(), "unsent (max in flight)", None) for _ in range(total - i)]
            break
        task = asyncio.create_task(one(traffic.pick(), intended))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(set(tasks))
    lags.sort()
    return {**summarize(samples, time.perf_counter() - start),
            "send_lag_ms": {f"p{q}": round(1000 * percentile(lags, q), 2) for q in (50, 99, 100)}}


async def closed_loop(client, traffic: Traffic, workers: int, duration: float) -> dict:
    """``workers`` loops, each sending its next request when the last one is answered."""
    samples: list[tuple[str, str, float | None]] = []
    start = time.perf_counter()

    async def worker() -> None:
        while (t0 := time.perf_counter()) < start + duration:
            route = traffic.pick()
            outcome = await traffic.send(client, route)
            samples.append((route, outcome, time.perf_counter() - t0))

    await asyncio.gather(*(worker() for _ in range(workers)))
    return summarize(samples, time.perf_counter() - start)


async def find_max(client, traffic: Traffic, start_rate: float, step_s: float, factor: float, max_steps: int,
                   p99_ms: float, max_in_flight: int, log=print) -> dict:
    """Raise the rate step by step; the answer is the highest rate held: zero errors (nothing left
    unsent for want of an in-flight slot) and p99 at most ``p99_ms``."""
    steps, best, rate = [], None, start_rate
    for _ in range(max_steps):
        s = await open_loop(client, traffic, rate, step_s, max_in_flight)
        held = s["errors"] == 0 and s["all"]["p99_ms"] <= p99_ms
        steps.append({"rate": round(rate, 2), "held": held, **s})
        log(f"  step {rate:8.2f} req/s: {s['throughput_rps']:8.2f} req/s done, p99 {s['all']['p99_ms']} ms, "
            f"{s['errors']} errors -> {'held' if held else 'NOT held'}")
        if not held:
            break
        best, rate = rate, rate * factor
    return {"steps": steps, "max_rate_zero_errors": best}
