"""Similar-items latency over HTTP: a ``semrec serve`` subprocess on a free loopback port, timed
from outside (p50/p99 per route, the server process's CPU seconds) against the ``/health`` floor."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from .kit import (
    fmt_lat,
    latency_stats,
)

K = 10
REPO_ROOT = Path(__file__).resolve().parent.parent


def _proc_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` (all its threads), from /proc/PID/stat."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve_command(index_dir: Path, port: int) -> list[str]:
    script = Path(sys.executable).parent / "semrec"
    base = [str(script)] if script.exists() else [sys.executable, "-m", "api.cli"]
    return [*base, "serve", "--index", str(index_dir), "--host", "127.0.0.1", "--port", str(port)]


def http_latency(index_dir: Path, ids: list[str], category: str | None, k: int = K,
                 warmup: int = 50, startup_timeout: float = 180.0) -> dict:
    """Start ``semrec serve`` as a subprocess on loopback, time sequential similar-items GETs, stop it."""
    import httpx

    port = _free_port()
    cmd = _serve_command(index_dir, port)
    log_path = index_dir.parent / "serve.log"
    # The service rate-limits each client address; a benchmark client is one address sending
    # back-to-back requests, so the limit is lifted here. Its event log goes to the temp dir.
    overrides = {"SEMREC_RATE_PER_MINUTE": "1000000000", "SEMREC_RATE_BURST": "1000000000",
                 "SEMREC_DB_PATH": str(index_dir.parent / "events.db")}
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **overrides}
    out: dict = {"command": " ".join(cmd), "env": overrides}
    print(f"    server: {out['command']}")
    print(f"    server env: {' '.join(f'{k}={v}' for k, v in overrides.items())}")
    sys.stdout.flush()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            base = f"http://127.0.0.1:{port}"
            t0 = time.perf_counter()
            with httpx.Client(base_url=base, timeout=30.0) as client:
                while True:
                    if proc.poll() is not None:
                        raise RuntimeError(f"server exited with {proc.returncode}; log:\n"
                                           + log_path.read_text(errors="replace")[-3000:])
                    if time.perf_counter() - t0 > startup_timeout:
                        raise TimeoutError(f"server not healthy after {startup_timeout} s")
                    try:
                        if client.get("/health").status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    time.sleep(0.1)
                out["startup_s"] = round(time.perf_counter() - t0, 2)
                print(f"    healthy after {out['startup_s']} s (loads the index and the embedder)")

                def timed_get(path: str, params: dict, n_warm: int, keys: list[str]) -> dict:
                    for key in keys[:n_warm]:
                        client.get(path.format(key), params=params).raise_for_status()
                    times = []
                    server_cpu = _proc_cpu_seconds(proc.pid)
                    for key in keys:
                        t = time.perf_counter()
                        r = client.get(path.format(key), params=params)
                        times.append(time.perf_counter() - t)
                        r.raise_for_status()
                    stats = latency_stats(times)
                    if server_cpu is not None and (after := _proc_cpu_seconds(proc.pid)) is not None:
                        stats["server_cpu_mean_ms"] = round((after - server_cpu) / len(keys) * 1000, 3)
                    return stats

                out["health"] = timed_get("/health", {}, warmup, ["-"] * max(len(ids) // 2, 1))
                print(f"    GET /health (framework floor)      {fmt_lat(out['health'])}")
                out["similar"] = timed_get("/items/{}/similar", {"k": k}, warmup, ids)
                print(f"    GET /items/ID/similar?k={k}        {fmt_lat(out['similar'])}")
                if category is not None:
                    out["similar_filtered"] = timed_get("/items/{}/similar", {"k": k, "category": category},
                                                        warmup, ids)
                    print(f"    ... &category={category:<12}      {fmt_lat(out['similar_filtered'])}")
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return out
