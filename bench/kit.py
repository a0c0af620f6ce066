"""What every benchmark needs: machine facts, load average, memory, CPU time and latency figures."""

from __future__ import annotations

import contextlib
import os
import platform
import sys
import threading
import time
from collections.abc import Callable, Iterator

import numpy as np

K = 10  # list length of the latency figures

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
        print(f"    load average before: {fmt_load(self.load_before)}")
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
        print(f"    load average after:  {fmt_load(s['load_after'])}   ({wall:.1f} s; CPUs busy "
              f"{100 * machine_busy:.0f}%: this process {100 * mine:.0f}%, others/children "
              f"{100 * s['others_cpu']:.0f}%, steal {100 * (s['steal'] or 0):.0f}%)"
              + ("   [section FAILED]" if exc_type else ""))
        sys.stdout.flush()


def machine_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def fmt_load(la) -> str:
    return " ".join(f"{x:.2f}" for x in la)


def mib(b: float) -> str:
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


def fmt_lat(s: dict) -> str:
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


def print_memory(m: dict) -> None:
    fb = m["faiss_serialized_bytes"]
    print(f"    items: {m['count']:,}  kind: {m['kind']}")
    if fb is not None:
        print(f"    FAISS index, serialized:    {mib(fb):>14}  = {m['faiss_bytes_per_item']:>9,.1f} B/item")
    print(f"    stored vectors (float32):   {mib(m['vectors_bytes']):>14}  = "
          f"{m['vectors_bytes_per_item']:>9,.1f} B/item   (allocated {mib(m['vectors_allocated_bytes'])}"
          f" = {m['vectors_allocated_bytes_per_item']:,.1f} B/item)")
    print(f"    RSS growth while building:  {mib(m['rss_growth_bytes']):>14}  = "
          f"{m['rss_growth_bytes_per_item']:>9,.1f} B/item   (peak {mib(m['rss_peak_growth_bytes'])}"
          f" = {m['rss_peak_growth_bytes_per_item']:,.1f} B/item)")


# ----------------------------------------------------------------------------- 1. throughput


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
