"""Performance benchmark (not a test): indexing throughput, index memory, similar-items latency.

Sections, each printed with the load average before and after it (other processes may share the
machine, so every figure should be read next to the load it was taken under):

1. Beauty catalog: items/s of the whole pipeline (``build_index``, flat) against the raw
   ``embedder.encode`` throughput of the same MiniLM on the very same texts, same batch size.
2. Index memory per item: serialized FAISS bytes, stored vector bytes, process RSS growth (Beauty).
3. Similar-items latency p50/p99: in-process (with and without a category filter) and over HTTP on
   loopback against a ``semrec serve`` subprocess.
4. A synthetic index of ``synthetic_n`` clustered unit vectors (HNSW): build time, vectors/s, memory
   per item, latency, and recall@10 against exact brute force.

Entry points: :func:`run` (returns the figures as a dict) and ``python -m api.bench``.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

K = 10
INDEX_CHUNK_SYNTHETIC = 65_536  # synthetic vectors added per ItemIndex.add call
REPO_ROOT = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------- machine facts


def loadavg() -> tuple[float, float, float]:
    """The 1, 5 and 15 minute load averages."""
    with open("/proc/loadavg") as fh:
        a, b, c = fh.read().split()[:3]
    return float(a), float(b), float(c)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _meminfo_kb(key: str) -> int | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def machine_facts() -> dict:
    import faiss
    import torch

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    mem = _meminfo_kb("MemTotal")
    return {
        "nproc": usable,
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "mem_total_gib": round(mem / 2**20, 1) if mem else None,
        "loadavg": loadavg(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "faiss": getattr(faiss, "__version__", "?"),
        "faiss_omp_threads": faiss.omp_get_max_threads(),
        "numpy": np.__version__,
        "thread_env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                   "MKL_NUM_THREADS", "OMP_WAIT_POLICY") if k in os.environ},
    }


def rss_bytes() -> int:
    """Resident set size of this process (``VmRSS`` of /proc/self/status)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class PeakRss:
    """Samples VmRSS every ``interval`` seconds on a thread; ``peak`` is the largest value seen."""

    def __init__(self, interval: float = 0.02):
        self.interval = interval
        self.start = self.peak = rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, rss_bytes())

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


def _cpu_jiffies() -> tuple[int, int, int]:
    """(busy, total, steal) jiffies of the whole machine, from the ``cpu`` line of /proc/stat."""
    with open("/proc/stat") as fh:
        f = [int(x) for x in fh.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (f + [0] * 8)[:8]
    total = sum(f[:8])
    return user + nice + system + irq + softirq + steal, total, steal


class Section:
    """Prints a section header and footer with load average, wall time and who used the CPUs."""

    def __init__(self, title: str, record: dict):
        self.title, self.record = title, record

    def __enter__(self) -> Section:
        self.load_before = loadavg()
        self.t0 = time.perf_counter()
        self.cpu0 = time.process_time()
        self.j0 = _cpu_jiffies()
        print(f"\n=== {self.title} ===")
        print(f"    load average before: {_fmt_load(self.load_before)}")
        sys.stdout.flush()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        wall = time.perf_counter() - self.t0
        cpu = time.process_time() - self.cpu0
        j1 = _cpu_jiffies()
        busy, total, steal = (j1[0] - self.j0[0]), (j1[1] - self.j0[1]), (j1[2] - self.j0[2])
        ncpu = machine_cpus()
        machine_busy = busy / total if total else float("nan")  # share of all CPUs busy
        mine = cpu / (wall * ncpu) if wall > 0 else float("nan")
        self.record["section"] = {
            "seconds": round(wall, 2), "load_before": self.load_before, "load_after": loadavg(),
            "machine_cpu_busy": round(machine_busy, 3), "this_process_cpu": round(mine, 3),
            "others_cpu": round(max(machine_busy - mine, 0.0), 3),
            "steal": round(steal / total, 3) if total else None,
        }
        s = self.record["section"]
        print(f"    load average after:  {_fmt_load(s['load_after'])}   ({wall:.1f} s; CPUs busy "
              f"{100 * machine_busy:.0f}%: this process {100 * mine:.0f}%, others/children "
              f"{100 * s['others_cpu']:.0f}%, steal {100 * (s['steal'] or 0):.0f}%)"
              + ("   [section FAILED]" if exc_type else ""))
        sys.stdout.flush()


def machine_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _fmt_load(la) -> str:
    return " ".join(f"{x:.2f}" for x in la)


def _mib(b: float) -> str:
    return f"{b / 2**20:,.1f} MiB"


def latency_stats(seconds: list[float], cpu_seconds: list[float] | None = None) -> dict:
    """Wall-clock percentiles; with ``cpu_seconds`` (process CPU time per call, all threads) also
    CPU percentiles, which waiting for a CPU on a loaded machine does not inflate."""
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    out = {"n": len(ms), "p50_ms": round(float(p50), 3), "p90_ms": round(float(p90), 3),
           "p99_ms": round(float(p99), 3), "mean_ms": round(float(ms.mean()), 3),
           "max_ms": round(float(ms.max()), 3)}
    if cpu_seconds is not None:
        cpu = np.asarray(cpu_seconds, dtype=np.float64) * 1000.0
        c50, c99 = np.percentile(cpu, [50, 99])
        out.update({"cpu_p50_ms": round(float(c50), 3), "cpu_p99_ms": round(float(c99), 3),
                    "cpu_mean_ms": round(float(cpu.mean()), 3)})
    return out


def _fmt_lat(s: dict) -> str:
    text = (f"p50 {s['p50_ms']:8.3f} ms   p99 {s['p99_ms']:8.3f} ms   (mean {s['mean_ms']:.3f}, "
            f"max {s['max_ms']:.3f}, n={s['n']})")
    if "cpu_p50_ms" in s:
        text += f"   CPU/query p50 {s['cpu_p50_ms']:.3f} ms, mean {s['cpu_mean_ms']:.3f} ms"
    if "server_cpu_mean_ms" in s:
        text += f"   server CPU/request mean {s['server_cpu_mean_ms']:.2f} ms"
    return text


class Timers:
    """Seconds spent in wrapped methods, by key. Only the outermost wrapped call is counted, so
    nested wrapped calls (ItemTable.append -> GrowableArray.extend) are not counted twice."""

    def __init__(self, acc: dict | None = None):
        self.acc: dict[str, float] = acc if acc is not None else {}
        self._depth = 0

    def _wrap(self, fn: Callable, key: str) -> Callable:
        self.acc.setdefault(key, 0.0)

        def wrapper(*args, **kwargs):
            outer = self._depth == 0
            self._depth += 1
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self._depth -= 1
                if outer:
                    self.acc[key] += time.perf_counter() - t

        return wrapper

    @contextlib.contextmanager
    def on_instance(self, obj, name: str, key: str) -> Iterator[None]:
        """Time ``obj.name`` through an instance attribute that shadows the class's method."""
        setattr(obj, name, self._wrap(getattr(obj, name), key))
        try:
            yield
        finally:
            delattr(obj, name)

    @contextlib.contextmanager
    def on_class(self, cls, name: str, key: str) -> Iterator[None]:
        """Time every call of ``cls.name`` (a plain function attribute) while the block runs."""
        original = cls.__dict__[name]
        setattr(cls, name, self._wrap(original, key))
        try:
            yield
        finally:
            setattr(cls, name, original)


# ----------------------------------------------------------------------------- memory figures


def faiss_bytes(index) -> int | None:
    """Bytes of the serialized FAISS index behind an ItemIndex (None for the numpy kind)."""
    import faiss

    inner = getattr(index.index, "index", None)
    if inner is None:
        return None
    return int(faiss.serialize_index(inner).nbytes)


def index_memory(index, rss_growth: int, rss_peak_growth: int) -> dict:
    n = max(len(index), 1)
    fb = faiss_bytes(index)
    vec = index.vectors.view
    capacity = index.vectors._data.nbytes  # allocated, incl. the doubling slack of GrowableArray
    return {
        "count": len(index),
        "kind": index.kind,
        "faiss_serialized_bytes": fb,
        "faiss_bytes_per_item": round(fb / n, 1) if fb is not None else None,
        "vectors_bytes": int(vec.nbytes),
        "vectors_bytes_per_item": round(vec.nbytes / n, 1),
        "vectors_allocated_bytes": int(capacity),
        "vectors_allocated_bytes_per_item": round(capacity / n, 1),
        "rss_growth_bytes": int(rss_growth),
        "rss_growth_bytes_per_item": round(rss_growth / n, 1),
        "rss_peak_growth_bytes": int(rss_peak_growth),
        "rss_peak_growth_bytes_per_item": round(rss_peak_growth / n, 1),
    }


def _print_memory(m: dict) -> None:
    fb = m["faiss_serialized_bytes"]
    print(f"    items: {m['count']:,}  kind: {m['kind']}")
    if fb is not None:
        print(f"    FAISS index, serialized:    {_mib(fb):>14}  = {m['faiss_bytes_per_item']:>9,.1f} B/item")
    print(f"    stored vectors (float32):   {_mib(m['vectors_bytes']):>14}  = "
          f"{m['vectors_bytes_per_item']:>9,.1f} B/item   (allocated {_mib(m['vectors_allocated_bytes'])}"
          f" = {m['vectors_allocated_bytes_per_item']:,.1f} B/item)")
    print(f"    RSS growth while building:  {_mib(m['rss_growth_bytes']):>14}  = "
          f"{m['rss_growth_bytes_per_item']:>9,.1f} B/item   (peak {_mib(m['rss_peak_growth_bytes'])}"
          f" = {m['rss_peak_growth_bytes_per_item']:,.1f} B/item)")


# ----------------------------------------------------------------------------- 1. throughput


def load_beauty(shared: Path, limit_items: int | None = None):
    """The cleaned Beauty catalog; ``limit_items`` keeps only the first items (quick smoke runs)."""
    from indexer.clean import clean_catalog
    from indexer.loaders import load_dataset
    from indexer.schema import Catalog

    catalog = load_dataset("beauty", Path(shared) / "data" / "amazon-beauty-2014")
    catalog, _ = clean_catalog(catalog)
    if limit_items is not None and limit_items < len(catalog.items):
        items = catalog.items.iloc[:limit_items].reset_index(drop=True)
        reviews = catalog.reviews[catalog.reviews["item_id"].isin(set(items["item_id"]))]
        catalog = Catalog(items, reviews.reset_index(drop=True), catalog.source)
    return catalog


def raw_encode(embedder, texts: list[str], batch_size: int, chunk: int | None = None
               ) -> tuple[float, float]:
    """(wall, process CPU) seconds for ``embedder.encode`` over ``texts`` (one call, or one call per
    ``chunk`` texts)."""
    c = time.process_time()
    t = time.perf_counter()
    if chunk is None:
        embedder.encode(texts, batch_size=batch_size)
    else:
        for start in range(0, len(texts), chunk):
            embedder.encode(texts[start:start + chunk], batch_size=batch_size)
    return time.perf_counter() - t, time.process_time() - c


def bench_throughput(catalog, embedder, cfg) -> tuple[dict, object]:
    """Raw encode vs the full build_index pipeline (flat), same texts, same batch size, same process.

    Order: warm-up, raw (one call), pipeline, raw (one call per pipeline chunk), raw (one call)
    again; the two one-call runs bracket the pipeline so drift in machine load shows.
    """
    from indexer.build import build_index
    from indexer.documents import documents

    texts = documents(catalog.items)
    n = len(texts)
    has_review_text = bool((catalog.reviews["text"].str.strip().str.len() > 0).any())
    out: dict = {"items": n, "batch_size": cfg.batch_size, "chunk_items": cfg.chunk_items,
                 "texts_identical": not has_review_text,
                 "mean_chars": round(float(np.mean([len(t) for t in texts])), 1)}

    t = time.perf_counter()
    embedder.encode(texts[:512], batch_size=cfg.batch_size)  # warm-up: allocator, kernels, tokenizer
    out["warmup_s"] = round(time.perf_counter() - t, 3)
    print(f"    {n:,} item documents (mean {out['mean_chars']} chars), batch size {cfg.batch_size}, "
          f"pipeline chunk {cfg.chunk_items} items; warm-up {out['warmup_s']} s")

    raw1, raw1_cpu = raw_encode(embedder, texts, cfg.batch_size)
    print(f"    raw encode, one call       : {raw1:7.2f} s  {n / raw1:8.1f} items/s   (CPU {raw1_cpu:.1f} s)")
    sys.stdout.flush()

    from indexer import table as table_mod
    from indexer import vectors as vectors_mod

    timers = Timers()
    parts = timers.acc
    gc.collect()
    rss0 = rss_bytes()
    # The ItemIndex is created inside build_index, so its parts are timed by class-level wraps.
    with PeakRss() as peak, timers.on_instance(embedder, "encode", "encode"), \
            timers.on_class(table_mod.ItemTable, "append", "table_append"), \
            timers.on_class(table_mod.GrowableArray, "extend", "vectors_extend"), \
            timers.on_class(vectors_mod.FaissIndex, "add", "faiss_add"):
        c = time.process_time()
        t = time.perf_counter()
        index = build_index(catalog, embedder, kind="flat", cfg=cfg, progress=False)
        pipe = time.perf_counter() - t
        pipe_cpu = time.process_time() - c
    rss1 = rss_bytes()
    print(f"    pipeline build_index (flat): {pipe:7.2f} s  {n / pipe:8.1f} items/s   "
          f"(CPU {pipe_cpu:.1f} s; build_info says {index.build_info.get('items_per_s')} items/s)")
    sys.stdout.flush()

    raw_chunked, raw_chunked_cpu = raw_encode(embedder, texts, cfg.batch_size, chunk=cfg.chunk_items)
    print(f"    raw encode, per {cfg.chunk_items}-chunk : {raw_chunked:7.2f} s  {n / raw_chunked:8.1f} items/s   "
          f"(CPU {raw_chunked_cpu:.1f} s)")
    raw2, raw2_cpu = raw_encode(embedder, texts, cfg.batch_size)
    print(f"    raw encode, one call again : {raw2:7.2f} s  {n / raw2:8.1f} items/s   (CPU {raw2_cpu:.1f} s)")

    raw_mean = (raw1 + raw2) / 2
    other = pipe - sum(parts.values())
    out.update({
        "raw_one_call_s": [round(raw1, 3), round(raw2, 3)],
        "raw_items_per_s": round(n / raw_mean, 1),
        "raw_chunked_s": round(raw_chunked, 3),
        "raw_chunked_items_per_s": round(n / raw_chunked, 1),
        "pipeline_s": round(pipe, 3),
        "pipeline_items_per_s": round(n / pipe, 1),
        "ratio_vs_raw": round(raw_mean / pipe, 3),
        "ratio_vs_raw_best": round(min(raw1, raw2) / pipe, 3),
        "ratio_vs_raw_chunked": round(raw_chunked / pipe, 3),
        "cpu_s": {"raw_one_call": [round(raw1_cpu, 2), round(raw2_cpu, 2)], "pipeline": round(pipe_cpu, 2),
                  "raw_chunked": round(raw_chunked_cpu, 2)},
        "ratio_cpu_vs_raw": round((raw1_cpu + raw2_cpu) / 2 / pipe_cpu, 3),
        "pipeline_breakdown_s": {**{k: round(v, 3) for k, v in parts.items()}, "other": round(other, 3)},
    })
    # Beauty has no review text, so every item vector is exactly its document's vector.
    check = embedder.encode(texts[:256], batch_size=cfg.batch_size)
    out["max_abs_diff_first256"] = float(np.abs(index.vectors.view[:256] - check).max())
    print(f"    ratio pipeline/raw: {out['ratio_vs_raw']:.3f}x (vs mean of the two one-call runs; "
          f"{out['ratio_vs_raw_best']:.3f}x vs the faster; {out['ratio_vs_raw_chunked']:.3f}x vs raw "
          f"chunked the pipeline's way)   goal >= 0.9x: "
          f"{'MET' if out['ratio_vs_raw'] >= 0.9 else 'NOT MET'}")
    print(f"    same ratio on process CPU time (less sensitive to waiting for a CPU): "
          f"{out['ratio_cpu_vs_raw']:.3f}x")
    b = out["pipeline_breakdown_s"]
    print("    pipeline time by part: " + ", ".join(f"{k} {v:.2f} s" for k, v in b.items()))
    print(f"    texts identical to the pipeline's: {out['texts_identical']}; max |v_index - v_raw| "
          f"over the first 256 items: {out['max_abs_diff_first256']:.2e}")
    mem_parts = (rss1 - rss0, peak.peak - rss0)
    return out, (index, mem_parts)


# ----------------------------------------------------------------------------- 3. latency


def similar_latency(index, ids: list[str], k: int = K, filters=None, warmup: int = 50) -> dict:
    """In-process ``similar_items(index, [id], k, filters)`` latency over ``ids``, one at a time."""
    from retriever.similar import similar_items

    for item_id in ids[:warmup]:
        similar_items(index, [item_id], k, filters)
    times, cpu = [], []
    for item_id in ids:
        c = time.process_time()
        t = time.perf_counter()
        similar_items(index, [item_id], k, filters)
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return latency_stats(times, cpu)


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
                print(f"    GET /health (framework floor)      {_fmt_lat(out['health'])}")
                out["similar"] = timed_get("/items/{}/similar", {"k": k}, warmup, ids)
                print(f"    GET /items/ID/similar?k={k}        {_fmt_lat(out['similar'])}")
                if category is not None:
                    out["similar_filtered"] = timed_get("/items/{}/similar", {"k": k, "category": category},
                                                        warmup, ids)
                    print(f"    ... &category={category:<12}      {_fmt_lat(out['similar_filtered'])}")
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return out


# ----------------------------------------------------------------------------- 4. synthetic


def synthetic_chunks(n: int, dim: int = 384, chunk: int = INDEX_CHUNK_SYNTHETIC, clusters: int = 1000,
                     noise: float = 1.0, seed: int = 0) -> Iterator[tuple[int, np.ndarray]]:
    """``(start, float32 (m, dim) unit vectors)`` chunks of ``n`` clustered vectors.

    Each vector is a random unit cluster centre plus isotropic noise of expected norm ``noise``,
    renormalised: cosine to its centre ~ 1/sqrt(1 + noise^2) (0.71 at noise 1), ~0.5 between two
    members of a cluster, ~0 across clusters. Only one chunk is in memory at a time.
    """
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    scale = np.float32(noise / np.sqrt(dim))
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        x = rng.standard_normal((m, dim), dtype=np.float32)
        x *= scale
        x += centres[rng.integers(0, clusters, m)]
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        yield start, x


def synthetic_items(start: int, m: int):
    """Minimal item rows for synthetic vectors ``start .. start+m-1``: id, title and two categories.

    ``group g`` holds 10% of the items (filtered search goes through HNSW with an ID selector);
    ``sub s`` holds 1% (at most EXACT_SUBSET_MAX items: answered by an exact scan of the subset).
    """
    import pandas as pd

    idx = range(start + 1, start + m + 1)
    return pd.DataFrame({
        "item_id": [f"s{i:07d}" for i in idx],
        "title": [f"synthetic item {i}" for i in idx],
        "categories": [["Synthetic", f"group {i % 10}", f"sub {i % 100}"] for i in idx],
    })


def exact_top_k(vectors: np.ndarray, query_labels: np.ndarray, k: int, allowed: np.ndarray | None = None,
                chunk: int = 131_072) -> np.ndarray:
    """Exact top-``k`` labels by inner product for the rows ``query_labels`` of ``vectors``,
    excluding each query itself (as similar_items does), computed in chunks of rows."""
    q = vectors[query_labels]
    best_s = np.full((len(q), 0), -np.inf, dtype=np.float32)
    best_l = np.zeros((len(q), 0), dtype=np.int64)
    rows = np.arange(len(q))
    for start in range(0, len(vectors), chunk):
        s = q @ vectors[start:start + chunk].T
        inside = (query_labels >= start) & (query_labels < start + len(s[0]))
        s[rows[inside], query_labels[inside] - start] = -np.inf
        if allowed is not None:
            s[:, ~allowed[start:start + chunk]] = -np.inf
        labels = np.broadcast_to(np.arange(start, start + s.shape[1]), s.shape)
        s = np.concatenate([best_s, s], axis=1)
        labels = np.concatenate([best_l, labels], axis=1)
        kk = min(k, s.shape[1])
        part = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
        best_s = np.take_along_axis(s, part, axis=1)
        best_l = np.take_along_axis(labels, part, axis=1)
    return best_l


def recall_at_k(index, ids: list[str], k: int = K, filters=None) -> dict:
    """recall@k of ``similar_items`` (HNSW) against exact brute force over all live vectors."""
    from retriever.similar import similar_items

    labels = index.table.labels(ids)
    t = time.perf_counter()
    got, _ = similar_items(index, ids, k, filters)
    approx_s = time.perf_counter() - t
    allowed = index.table.mask(filters) if filters is not None else None
    t = time.perf_counter()
    exact = exact_top_k(index.vectors.view, labels, k, allowed)
    exact_s = time.perf_counter() - t
    hits = np.array([len(set(g[g >= 0].tolist()) & set(e.tolist())) / k for g, e in zip(got, exact)])
    # Score ratio: sum of the found neighbours' cosines / sum of the exact ones'. Near 1 with a low
    # recall means near-ties were swapped; far below 1 means the search missed the neighbourhood.
    vec = index.vectors.view
    ratios = [float((vec[g[g >= 0]] @ vec[q]).sum()) / max(float((vec[e] @ vec[q]).sum()), 1e-9)
              for g, e, q in zip(got, exact, labels)]
    return {"queries": len(ids), "k": k, "recall": round(float(hits.mean()), 4),
            "min_recall": round(float(hits.min()), 2), "queries_below_half": int((hits < 0.5).sum()),
            "score_ratio_mean": round(float(np.mean(ratios)), 4),
            "score_ratio_min": round(float(np.min(ratios)), 4),
            "approx_s": round(approx_s, 3), "exact_s": round(exact_s, 3)}


def bench_synthetic(n: int, queries: int, seed: int = 0, dim: int = 384) -> dict:
    from indexer.store import ItemIndex, auto_kind
    from indexer.table import Filters

    kind = auto_kind(n)
    out: dict = {"n": n, "dim": dim, "kind": kind, "chunk": INDEX_CHUNK_SYNTHETIC}
    print(f"    {n:,} clustered unit vectors, {dim}-d float32, kind {kind!r} (auto), added to an "
          f"ItemIndex in chunks of {INDEX_CHUNK_SYNTHETIC:,}")
    if kind == "hnsw":
        print("    HNSW: M=32, efConstruction=80, efSearch=max(64, 2k) (indexer/vectors.py)")
    gc.collect()
    rss0 = rss_bytes()
    timers = Timers({"generate": 0.0, "make_rows": 0.0, "index_add": 0.0})
    parts = timers.acc
    from indexer import table as table_mod
    from indexer import vectors as vectors_mod

    index = ItemIndex(model="synthetic", dim=dim, kind=kind, build={"source": "synthetic"})
    t_all = time.perf_counter()
    last_print = t_all
    with PeakRss() as peak, \
            timers.on_class(table_mod.ItemTable, "append", "table_append"), \
            timers.on_class(vectors_mod.FaissIndex, "add", "faiss_add"):
        t = time.perf_counter()
        for start, x in synthetic_chunks(n, dim, seed=seed):
            parts["generate"] += time.perf_counter() - t
            t = time.perf_counter()
            rows = synthetic_items(start, len(x))
            parts["make_rows"] += time.perf_counter() - t
            t = time.perf_counter()
            index.add(rows, x)
            parts["index_add"] += time.perf_counter() - t
            done = start + len(x)
            now = time.perf_counter()
            if now - last_print > 30 or done == n:
                print(f"      {done:>10,} added  {now - t_all:8.1f} s  "
                      f"{done / max(parts['index_add'], 1e-9):8.1f} vectors/s (index.add)  "
                      f"RSS {_mib(rss_bytes())}  load {_fmt_load(loadavg())}")
                sys.stdout.flush()
                last_print = now
            t = time.perf_counter()
    total = time.perf_counter() - t_all
    rss1 = rss_bytes()
    out["build_total_s"] = round(total, 2)
    out["index_add_s"] = round(parts["index_add"], 2)
    out["vectors_per_s"] = round(n / parts["index_add"], 1)
    out["faiss_add_vectors_per_s"] = round(n / parts["faiss_add"], 1)
    out["breakdown_s"] = {k: round(v, 2) for k, v in parts.items()}
    out["over_15_min"] = parts["index_add"] > 900
    print(f"    build: {out['index_add_s']:.1f} s in ItemIndex.add -> {out['vectors_per_s']:,.1f} vectors/s "
          f"(FAISS add alone {parts['faiss_add']:.1f} s = {out['faiss_add_vectors_per_s']:,.1f}/s; table "
          f"{parts['table_append']:.1f} s; data generation {parts['generate']:.1f} s + rows "
          f"{parts['make_rows']:.1f} s, not counted)")
    if out["over_15_min"]:
        print(f"    NOTE: the {n:,}-vector build took more than 15 minutes ({total / 60:.1f} min) on this machine")

    print("    memory:")
    out["memory"] = index_memory(index, rss1 - rss0, peak.peak - rss0)
    _print_memory(out["memory"])

    rng = np.random.default_rng(seed + 1)
    all_ids = [f"s{i:07d}" for i in rng.choice(np.arange(1, n + 1), size=min(queries, n), replace=False)]
    out["latency"] = {}
    print("    similar_items in-process, k=10, one query at a time:")
    out["latency"]["none"] = similar_latency(index, all_ids)
    print(f"      no filter                        {_fmt_lat(out['latency']['none'])}")
    for name in ("group 3", "sub 7"):
        f = Filters(category=name)
        out["latency"][name] = similar_latency(index, all_ids, filters=f)
        size = int(index.table.mask(f).sum())
        print(f"      category={name!r:<10} ({size:>7,} items) {_fmt_lat(out['latency'][name])}")

    rec_ids = all_ids[:200]
    out["recall"] = {"none": recall_at_k(index, rec_ids)}
    out["recall"]["group 3"] = recall_at_k(index, rec_ids, filters=Filters(category="group 3"))
    for name, r in out["recall"].items():
        print(f"    recall@{K} vs exact brute force ({r['queries']} query items, filter {name!r}): "
              f"{r['recall']:.4f} (worst query {r['min_recall']:.1f}, {r['queries_below_half']} queries below 0.5; "
              f"score ratio found/exact mean {r['score_ratio_mean']:.4f}, min {r['score_ratio_min']:.3f}; "
              f"exact scan {r['exact_s']:.1f} s)")
    del index
    gc.collect()
    return out


# ----------------------------------------------------------------------------- run


def run(shared: Path, synthetic_n: int = 1_000_000, http: bool = True, queries: int = 500,
        seed: int = 0, limit_items: int | None = None) -> dict:
    """Run every section, print a readable report, return the figures as a dict.

    ``limit_items`` benchmarks only the first Beauty items (a quick smoke run, not a figure to quote).
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from indexer.build import EmbedConfig
    from indexer.embed import load_embedder
    from indexer.table import Filters

    results: dict = {"started_at": time.strftime("%Y-%m-%d %H:%M:%S"), "args": {
        "shared": str(shared), "synthetic_n": synthetic_n, "http": http, "queries": queries, "seed": seed,
        "limit_items": limit_items}}
    facts = machine_facts()
    results["machine"] = facts
    print("semrec benchmark")
    print(f"  machine: {facts['nproc']} CPUs usable (nproc), {facts['cpu_model']}, "
          f"{facts['mem_total_gib']} GiB RAM")
    print(f"  load average: {_fmt_load(facts['loadavg'])}   (other processes may share this machine)")
    print(f"  python {facts['python']}, torch {facts['torch']} ({facts['torch_threads']} threads, default), "
          f"faiss {facts['faiss']} ({facts['faiss_omp_threads']} OpenMP threads), numpy {facts['numpy']}; "
          f"thread env: {facts['thread_env'] or 'none set'}")
    sys.stdout.flush()

    cfg = EmbedConfig()
    tmp = Path(tempfile.mkdtemp(prefix="semrec-bench-"))
    try:
        # -- 1. throughput ----------------------------------------------------------------------
        sec: dict = {}
        with Section("1. Beauty: indexing throughput, pipeline vs raw encode", sec):
            t = time.perf_counter()
            catalog = load_beauty(shared, limit_items)
            sec["load_clean_s"] = round(time.perf_counter() - t, 2)
            t = time.perf_counter()
            embedder = load_embedder("minilm")
            sec["load_model_s"] = round(time.perf_counter() - t, 2)
            print(f"    loaded + cleaned {len(catalog.items):,} items, {len(catalog.reviews):,} reviews in "
                  f"{sec['load_clean_s']} s; model {embedder.name} ({embedder.dim}-d, max "
                  f"{embedder.max_tokens} tokens) in {sec['load_model_s']} s")
            tp, (index, (rss_growth, rss_peak)) = bench_throughput(catalog, embedder, cfg)
            sec.update(tp)
        results["throughput"] = sec

        # -- 2. memory --------------------------------------------------------------------------
        sec = {}
        with Section("2. Beauty: index memory per item (flat)", sec):
            sec.update(index_memory(index, rss_growth, rss_peak))
            _print_memory(sec)
            print("    (RSS growth covers the whole build_index call: item table, vectors, FAISS, and "
                  "whatever the encoder kept)")
            index_dir = tmp / "beauty-index"
            t = time.perf_counter()
            index.save(index_dir)
            sec["save_s"] = round(time.perf_counter() - t, 2)
            snap = index_dir / (index_dir / "CURRENT").read_text().strip()
            sec["disk_bytes"] = {p.name: p.stat().st_size for p in snap.iterdir()}
            print(f"    saved in {sec['save_s']} s; on disk per item: " + ", ".join(
                f"{name} {size / len(index):,.0f} B" for name, size in sorted(sec["disk_bytes"].items())))
        results["beauty_memory"] = sec

        # -- 3. latency -------------------------------------------------------------------------
        sec = {}
        with Section("3. Beauty: similar-items latency", sec):
            rng = np.random.default_rng(seed)
            live = list(index.table.label_of)
            ids = [live[i] for i in rng.choice(len(live), size=min(queries, len(live)), replace=False)]
            from collections import Counter

            level2 = Counter(c[1] for c in catalog.items["categories"] if len(c) > 1)
            category = level2.most_common(3)[2][0] if len(level2) >= 3 else None
            f = Filters(category=category) if category else None
            sec["category"] = category
            sec["category_items"] = int(index.table.mask(f).sum()) if f else None
            print(f"    {len(ids)} random item ids, k={K}, sequential, after {50} warm-up calls")
            sec["in_process"] = {"none": similar_latency(index, ids)}
            print(f"    in-process, no filter              {_fmt_lat(sec['in_process']['none'])}")
            if f is not None:
                sec["in_process"]["category"] = similar_latency(index, ids, filters=f)
                print(f"    in-process, category={category!r} ({sec['category_items']:,} items) "
                      f"{_fmt_lat(sec['in_process']['category'])}")
            if http:
                try:
                    sec["http"] = http_latency(index_dir, ids, category)
                except Exception as e:  # report and go on to the synthetic section
                    sec["http"] = {"error": repr(e)}
                    print(f"    HTTP section failed: {e!r}")
            else:
                print("    HTTP: skipped (--no-http)")
        results["beauty_latency"] = sec
        del index, catalog, embedder
        gc.collect()

        # -- 4. synthetic -----------------------------------------------------------------------
        if synthetic_n > 0:
            sec = {}
            with Section(f"4. Synthetic: {synthetic_n:,} vectors", sec):
                sec.update(bench_synthetic(synthetic_n, queries, seed=seed))
            results["synthetic"] = sec
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    results["finished_at"] = time.strftime("%Y-%m-%d %H:%M:%S")
    results["loadavg_end"] = loadavg()
    print_summary(results)
    return results


def print_summary(r: dict) -> None:
    print("\n=== summary ===")
    m = r["machine"]
    print(f"  {m['nproc']} CPUs, {m['cpu_model']}; load at start {_fmt_load(m['loadavg'])}, "
          f"at end {_fmt_load(r['loadavg_end'])}")
    t = r.get("throughput", {})
    if t:
        print(f"  Beauty indexing: pipeline {t['pipeline_items_per_s']:,.1f} items/s vs raw encode "
              f"{t['raw_items_per_s']:,.1f} items/s -> {t['ratio_vs_raw']:.3f}x (goal >= 0.9x); on CPU time "
              f"{t.get('ratio_cpu_vs_raw', float('nan')):.3f}x")
    bm = r.get("beauty_memory", {})
    if bm:
        print(f"  Beauty flat index: FAISS {bm['faiss_bytes_per_item']:,.0f} B/item, vectors "
              f"{bm['vectors_bytes_per_item']:,.0f} B/item, RSS growth {bm['rss_growth_bytes_per_item']:,.0f}"
              f" B/item")
    bl = r.get("beauty_latency", {})
    if bl:
        for name, s in bl.get("in_process", {}).items():
            print(f"  Beauty similar in-process ({name}): p50 {s['p50_ms']:.3f} ms, p99 {s['p99_ms']:.3f} ms"
                  f" (CPU/query p50 {s.get('cpu_p50_ms', float('nan')):.3f} ms)")
        h = bl.get("http", {})
        for name in ("similar", "similar_filtered"):
            if name in h:
                print(f"  Beauty similar over HTTP ({name}): p50 {h[name]['p50_ms']:.3f} ms, "
                      f"p99 {h[name]['p99_ms']:.3f} ms")
        if "error" in h:
            print(f"  Beauty HTTP: FAILED {h['error']}")
    s = r.get("synthetic", {})
    if s:
        print(f"  synthetic {s['n']:,} ({s['kind']}): build {s['index_add_s']:,.1f} s = "
              f"{s['vectors_per_s']:,.1f} vectors/s{' (over 15 min)' if s['over_15_min'] else ''}; "
              f"FAISS {s['memory']['faiss_bytes_per_item']:,.0f} B/item, vectors "
              f"{s['memory']['vectors_bytes_per_item']:,.0f} B/item, RSS growth "
              f"{s['memory']['rss_growth_bytes_per_item']:,.0f} B/item")
        for name, lat in s["latency"].items():
            print(f"  synthetic similar in-process ({name}): p50 {lat['p50_ms']:.3f} ms, "
                  f"p99 {lat['p99_ms']:.3f} ms (CPU/query p50 {lat.get('cpu_p50_ms', float('nan')):.3f} ms)")
        for name, rc in s["recall"].items():
            print(f"  synthetic recall@{rc['k']} ({name}): {rc['recall']:.4f}")
    sys.stdout.flush()


def _default_shared() -> Path:
    return Path(os.environ.get("SEMREC_SHARED") or REPO_ROOT.parent / "shared")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m api.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--shared", type=Path, default=_default_shared(),
                   help="folder holding data/amazon-beauty-2014 (default: $SEMREC_SHARED or ../shared)")
    p.add_argument("--synthetic-n", type=int, default=1_000_000, help="synthetic vectors (0 skips)")
    p.add_argument("--no-http", action="store_true", help="skip the HTTP latency measurement")
    p.add_argument("--queries", type=int, default=500, help="similar-items queries per latency figure")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit-items", type=int, default=None,
                   help="only the first N Beauty items (smoke runs; figures not comparable)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    a = p.parse_args(argv)
    results = run(a.shared, synthetic_n=a.synthetic_n, http=not a.no_http, queries=a.queries, seed=a.seed,
                  limit_items=a.limit_items)
    if a.json is not None:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(results, indent=2, default=_json_default))
        print(f"\nfigures written to {a.json}")
    return 0


def _json_default(o):
    if isinstance(o, np.integer | np.floating | np.bool_):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    return str(o)


if __name__ == "__main__":
    sys.exit(main())
