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
import json
import os
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from .loadserver import (
    LOOPBACK,
    check_loopback,
    is_url,
    server_errors,
    start_server,
    stop_server,
    stored_event_ids,
)
from .traffic import (
    DEFAULT_MIX,
    DEMO_REVIEWS,
    ROUTES,
    Traffic,
    closed_loop,
    find_max,
    open_loop,
    parse_mix,
    read_items,
    read_queries,
    read_users,
)


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
