"""The server side of a load test: start a semrec server as a subprocess on a free loopback port
(SQLite file or PostgreSQL event log, a fresh ingest key), stop it, read its log for server-side
errors and count the events it stored. Imports nothing from ``api`` (the server is a process)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx

LOOPBACK = "127.0.0.1"
ROOT = Path(__file__).resolve().parent.parent


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
