"""Load generator: mixed traffic against a semrec server on loopback, for a bounded time.

Routes driven (shares set by ``mix``): ``GET /users/{id}/recommendations`` for real user ids,
``GET /items/{id}/similar`` for item ids from the index, ``GET /search?q=`` with real queries (the
ESCI query set, a text file, or item titles) and ``POST /events`` batches with ids unique to the run.

Modes: open loop at a fixed rate (each request has an intended send time ``start + i / rate``;
latency is measured from that time, so a slow server cannot hide its queue: no coordinated
omission), closed loop with N workers, and ``find_max``: open-loop steps of rising rate until a step
has an error, leaves requests unsent, or exceeds the p99 threshold. In-flight requests are bounded.

At the end the events acknowledged (``stored`` in 200 responses) are checked against the server's
event log, by the run's event-id prefix: "zero lost events" is verified, not assumed. The log is a
SQLite file or a PostgreSQL database (``--db postgresql://...``: the server it starts gets
``SEMREC_DB_URL``). This module starts servers as subprocesses and imports nothing from ``api``.

    python -m bench.loadtest --index out/beauty --db out/events.db --duration 60 --rate 50 --json lt.json
    python -m bench.loadtest --index out/beauty --db postgresql://semrec@/semrec?host=/run/pg --server-workers 4
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import os
import random
import re
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import httpx

ROUTES = ("recommendations", "similar", "search", "events")
DEFAULT_MIX = {"recommendations": 0.35, "similar": 0.25, "search": 0.3, "events": 0.1}
EVENT_TYPES = (("view", 0.6), ("click", 0.2), ("add_to_cart", 0.1), ("purchase", 0.05), ("rating", 0.05))
LOOPBACK = "127.0.0.1"
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


# ---- the server ----------------------------------------------------------------------------------
def check_loopback(url: str) -> str:
    u = httpx.URL(url)
    if u.scheme != "http" or u.host != LOOPBACK:
        raise ValueError(f"the load test only targets http://{LOOPBACK}:PORT, not {url!r}")
    return str(u).rstrip("/")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def is_url(db: Path | str | None) -> bool:
    return str(db).startswith(("postgresql://", "postgres://"))


def new_key() -> tuple[str, str]:
    """A random API key and its sha256 digest, in the format of ``semrec keygen``."""
    key = "sk_" + secrets.token_urlsafe(32)
    return key, hashlib.sha256(key.encode()).hexdigest()


def start_server(index: Path, db: Path | str, log_path: Path, startup_s: float, workers: int = 1
                 ) -> tuple[subprocess.Popen, str, dict]:
    """``semrec serve`` (``workers`` processes) on a free loopback port with fresh admin, ingest and backend
    keys (rate limits lifted unless SEMREC_RATE_* are set); returns once /health answers. ``db``: a SQLite
    path (SEMREC_DB_PATH) or a PostgreSQL URL (SEMREC_DB_URL)."""
    keys = {role: new_key() for role in ("admin", "ingest", "backend")}
    env = dict(os.environ, SEMREC_API_KEYS=json.dumps(
        [{"name": f"loadtest-{role}", "role": role, "sha256": sha} for role, (_, sha) in keys.items()]))
    env.pop("SEMREC_DB_URL", None)  # the log we verify is the one the server writes
    env["SEMREC_DB_URL" if is_url(db) else "SEMREC_DB_PATH"] = str(db)
    env.setdefault("SEMREC_PSEUDONYM_KEY", secrets.token_urlsafe(24))  # a throwaway server needs a secret too
    env.setdefault("SEMREC_RATE_PER_MINUTE", "1e9")
    env.setdefault("SEMREC_RATE_BURST", "1000000")
    port = free_port()
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "api.cli", "serve", "--index", str(index), "--host", LOOPBACK,
                                 "--port", str(port), "--workers", str(workers)],
                                env=env, stdout=log, stderr=subprocess.STDOUT)
    url, deadline = f"http://{LOOPBACK}:{port}", time.monotonic() + startup_s
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode} at start-up:\n{tail(log_path)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not up after {startup_s:.0f} s:\n{tail(log_path)}")
            try:
                if httpx.get(f"{url}/health", timeout=2, trust_env=False).status_code == 200:
                    return proc, url, {role: key for role, (key, _) in keys.items()}
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
    except BaseException:
        stop_server(proc)
        raise


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)  # uvicorn's graceful shutdown
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def tail(path: Path, n: int = 30) -> str:
    return "\n".join(Path(path).read_text(errors="replace").splitlines()[-n:])


FRAME = re.compile(r'File "([^"]+)", line (\d+), in (\S+)')
EXC = re.compile(r"^[\s|+]*((?:[\w.]+\.)?[A-Z]\w*(?:Error|Exception|Exit|Timeout)\w*(?::.*)?)$")


def server_errors(log_path: Path) -> list[dict]:
    """Distinct tracebacks in the server log: exception text, deepest project frame, count."""
    found: Counter = Counter()
    where = None
    for line in Path(log_path).read_text(errors="replace").splitlines():
        if "Traceback (most recent call last)" in line:
            where = "?"
        elif where is not None and (m := FRAME.search(line)):
            path = Path(m[1])
            if path.is_relative_to(ROOT) and ".venv" not in path.parts:
                where = f"{path.relative_to(ROOT)}:{m[2]} in {m[3]}"
        elif where is not None and (m := EXC.match(line)):
            found[(m[1].strip()[:300], where)] += 1
            where = None
    return [{"error": e, "where": w, "count": n} for (e, w), n in found.most_common()]


def stored_event_ids(db: Path | str, prefix: str) -> set[str]:
    """Event ids starting with ``prefix`` in the event log, SQLite or PostgreSQL (a range scan on the
    unique index)."""
    upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    query = "SELECT event_id FROM events WHERE event_id >= ? AND event_id < ?"
    if is_url(db):
        import psycopg

        with psycopg.connect(str(db)) as conn:
            return {r[0] for r in conn.execute(query.replace("?", "%s"), (prefix, upper))}
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return {r[0] for r in con.execute(query, (prefix, upper))}
    finally:
        con.close()


# ---- the run -------------------------------------------------------------------------------------
def run_coroutine(coro) -> None:
    """``asyncio.run``, or in a fresh thread when this thread already runs an event loop (a caller
    inside async code, or a test session that holds Playwright's loop)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(coro)
        return
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, coro).result()


def run(index: Path, db: Path | str | None = None, *, url: str | None = None, ingest_key: str | None = None,
        admin_key: str | None = None, read_key: str | None = None, backend_key: str | None = None,
        duration: float = 60.0,
        rate: float | None = None, workers: int | None = None, max_in_flight: int = 64,
        mix: dict[str, float] | None = None, batch: int = 10, users: Path | None = None,
        queries: Path | None = None, find_max_rate: bool = False, step_s: float = 10.0, step_factor: float = 1.5,
        max_steps: int = 8, p99_ms: float = 1000.0, timeout: float = 30.0, seed: int = 0,
        startup_s: float = 600.0, server_log: Path | None = None, server_workers: int = 1, log=print) -> dict:
    """Drive mixed traffic at the server (started here unless ``url`` is given) and return the results.

    ``rate`` alone: open loop; ``workers`` alone: closed loop; ``find_max_rate``: open-loop steps
    from ``rate`` (default 5/s) of ``step_s`` seconds each. ``users`` defaults to the demo reviews.
    ``db``: the server's event log, a SQLite path or a ``postgresql://`` URL.
    """
    mix, url = dict(mix or DEFAULT_MIX), url and check_loopback(url)  # loopback only, checked first
    if rate is not None and workers is not None:
        raise ValueError("give a rate (open loop) or workers (closed loop), not both")
    if rate is None and workers is None:
        rate = 5.0 if find_max_rate else 10.0
    if (rate is not None and rate <= 0) or (workers is not None and workers < 1):
        raise ValueError("rate must be > 0 and workers >= 1")
    if mix.get("events", 0) > 0 and db is None:
        raise ValueError("events are sent, so --db (the server's event log) is needed to verify them")
    items = read_items(index)
    user_ids = read_users(users or DEMO_REVIEWS)
    texts = read_queries(queries) if queries else [" ".join(t.split()[:8]) for _, t in items if t.strip()]
    server, started = None, url is None
    server_log = Path(server_log or Path(tempfile.gettempdir()) / f"semrec-loadtest-{os.getpid()}.log")
    try:
        if started:
            server_log.write_text("")
            log(f"starting semrec serve --index {index} (db {db}, log {server_log}) ...")
            server, url, keys = start_server(index, db, server_log, startup_s, server_workers)
            ingest_key, admin_key, backend_key = keys["ingest"], keys["admin"], keys["backend"]
        traffic = Traffic(user_ids, items, texts, mix, batch, ingest_key or admin_key, read_key, seed,
                          backend_key or admin_key)
        result: dict = {"url": url, "started_server": started, "prefix": traffic.prefix, "mix": mix,
                        "users": len(user_ids), "items": len(items), "queries": len(texts), "batch": batch,
                        "max_in_flight": max_in_flight}
        conns = max(max_in_flight, workers or 0)
        limits = httpx.Limits(max_connections=conns, max_keepalive_connections=conns)

        async def drive() -> None:
            async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits, trust_env=False) as client:
                warm = {r: await traffic.send(client, r) for r in ROUTES if mix.get(r, 0) > 0}  # one each, untimed
                result["warmup_errors"] = {r: o for r, o in warm.items() if o != "ok"}
                if find_max_rate:
                    result.update(mode="find-max", start_rate=rate, step_s=step_s, p99_ms_limit=p99_ms)
                    result.update(await find_max(client, traffic, rate, step_s, step_factor, max_steps, p99_ms,
                                                 max_in_flight, log))
                elif workers:
                    result.update(mode="closed", workers=workers,
                                  summary=await closed_loop(client, traffic, workers, duration))
                else:
                    result.update(mode="open", rate=rate,
                                  summary=await open_loop(client, traffic, rate, duration, max_in_flight))

        run_coroutine(drive())
    finally:
        if server is not None:
            stop_server(server)
    if db is not None and (is_url(db) or Path(db).exists()):
        in_log = stored_event_ids(db, traffic.prefix)
        lost = traffic.acked - in_log
        extra = in_log - traffic.acked - traffic.in_doubt
        result["events"] = {"acknowledged": traffic.acked_sum, "in_log": len(in_log), "lost": len(lost),
                            "unexpected": len(extra), "in_doubt": len(traffic.in_doubt),
                            "stored_of_in_doubt": len(in_log & traffic.in_doubt),
                            "ok": not lost and not extra and traffic.acked_sum == len(traffic.acked)}
    if started:
        result.update(server_log=str(server_log), server_errors=server_errors(server_log))
    steps = result.get("steps") or [result["summary"]]
    result["ok"] = (find_max_rate or all(s["errors"] == 0 for s in steps)) and not result["warmup_errors"] \
        and result.get("events", {}).get("ok", True) and not result.get("server_errors")
    return result


def format_report(r: dict) -> str:
    lines = [f"semrec load test against {r['url']} ({'started here' if r['started_server'] else 'attached'}), "
             f"mode {r['mode']}, mix " + ", ".join(f"{k} {v:g}" for k, v in r["mix"].items()),
             f"  {r['users']} users, {r['items']} items, {r['queries']} queries, {r['batch']} events per POST, "
             f"event ids {r['prefix']}*"]
    for s in r.get("steps") or [r["summary"]]:
        head = f"step at {s['rate']} req/s" if "rate" in s else "result"
        lines += [f"{head}: {s['seconds']} s, {s['requests']} requests, {s['throughput_rps']} req/s, "
                  f"{s['errors']} errors",
                  f"  {'route':<16}{'req':>7}{'req/s':>9}{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}{'max ms':>10}"
                  f"{'errors':>8}"]
        for name, st in [*s["routes"].items(), ("all", s["all"])]:
            lines.append(f"  {name:<16}{st['requests']:>7}{st['rps']:>9}{st['p50_ms']:>10}{st['p95_ms']:>10}"
                         f"{st['p99_ms']:>10}{st['max_ms']:>10}{st['errors']:>8}")
        lines += [f"  error {n:>6}  {kind}" for kind, n in s["errors_by_kind"].items()]
        if "send_lag_ms" in s:
            lines.append("  client send lag (ms after the intended time): " +
                         ", ".join(f"{k} {v}" for k, v in s["send_lag_ms"].items()))
    if r["warmup_errors"]:
        lines.append(f"warm-up errors: {r['warmup_errors']}")
    if "max_rate_zero_errors" in r:
        lines.append(f"highest rate held with zero errors (p99 <= {r['p99_ms_limit']} ms): "
                     f"{r['max_rate_zero_errors']} req/s")
    if "events" in r:
        e = r["events"]
        lines.append(f"events: {e['acknowledged']} acknowledged, {e['in_log']} in the event log, {e['lost']} lost, "
                     f"{e['unexpected']} unexpected; {e['in_doubt']} without an answer ({e['stored_of_in_doubt']} "
                     f"of them stored) -> {'OK' if e['ok'] else 'MISMATCH'}")
    for err in r.get("server_errors", []):
        lines.append(f"server error x{err['count']}: {err['error']}  (at {err['where']})")
    if "server_log" in r:
        lines.append(f"server log: {r['server_log']}")
    lines.append("PASS" if r["ok"] else "FAIL")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.loadtest", description=__doc__.split("\n\n")[0])
    p.add_argument("--index", type=Path, required=True, help="index directory (item ids, titles)")
    p.add_argument("--db", help="the server's event log (to verify stored events): a SQLite file or a "
                                "postgresql:// URL (the server started here then gets SEMREC_DB_URL)")
    p.add_argument("--url", help=f"attach to a running server (http://{LOOPBACK}:PORT); default: start one")
    for key in ("--ingest-key", "--admin-key", "--read-key", "--backend-key"):
        p.add_argument(key, help="API key (attach mode); reads go without a key unless --read-key")
    p.add_argument("--duration", type=float, default=60.0, help="seconds (open and closed loop)")
    p.add_argument("--rate", type=float, help="open loop: requests per second (find-max: the first step)")
    p.add_argument("--workers", type=int, help="closed loop: concurrent workers")
    p.add_argument("--max-in-flight", type=int, default=64)
    p.add_argument("--mix", type=parse_mix, help="e.g. recommendations=0.35,similar=0.25,search=0.3,events=0.1")
    p.add_argument("--batch", type=int, default=10, help="events per POST /events")
    p.add_argument("--users", type=Path, help="user ids: Beauty.txt, reviews .jsonl, or a dataset folder")
    p.add_argument("--queries", type=Path, help="ESCI query set .json or one query per line; default: item titles")
    p.add_argument("--find-max", action="store_true", help="raise the rate until errors or p99 over --p99-ms")
    p.add_argument("--step-duration", type=float, default=10.0)
    p.add_argument("--step-factor", type=float, default=1.5)
    p.add_argument("--max-steps", type=int, default=8)
    p.add_argument("--p99-ms", type=float, default=1000.0)
    p.add_argument("--timeout", type=float, default=30.0, help="per request, seconds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--server-log", type=Path)
    p.add_argument("--server-workers", type=int, default=1, help="processes of the server it starts")
    p.add_argument("--json", type=Path, help="write the results here")
    a = p.parse_args(argv)
    try:
        r = run(a.index, a.db, url=a.url, ingest_key=a.ingest_key, admin_key=a.admin_key, read_key=a.read_key,
                backend_key=a.backend_key,
                duration=a.duration, rate=a.rate, workers=a.workers, max_in_flight=a.max_in_flight, mix=a.mix,
                batch=a.batch, users=a.users, queries=a.queries, find_max_rate=a.find_max, step_s=a.step_duration,
                step_factor=a.step_factor, max_steps=a.max_steps, p99_ms=a.p99_ms, timeout=a.timeout, seed=a.seed,
                server_log=a.server_log, server_workers=a.server_workers, log=lambda m: print(m, flush=True))
    except (ValueError, RuntimeError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_report(r))
    if a.json:
        a.json.write_text(json.dumps(r, indent=2, default=str))
    return 0 if r["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
