"""Benchmark section 4: a synthetic index of clustered unit vectors (HNSW) at catalog scale:
build time, memory per item, latency, and recall@10 against exact brute force."""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Iterator

import numpy as np

from .kit import (
    PeakRss,
    Timers,
    fmt_lat,
    fmt_load,
    index_memory,
    loadavg,
    mib,
    print_memory,
    rss_bytes,
    similar_latency,
)

K = 10
INDEX_CHUNK_SYNTHETIC = 65_536  # synthetic vectors added per ItemIndex.add call

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
                      f"RSS {mib(rss_bytes())}  load {fmt_load(loadavg())}")
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
    print_memory(out["memory"])

    rng = np.random.default_rng(seed + 1)
    all_ids = [f"s{i:07d}" for i in rng.choice(np.arange(1, n + 1), size=min(queries, n), replace=False)]
    out["latency"] = {}
    print("    similar_items in-process, k=10, one query at a time:")
    out["latency"]["none"] = similar_latency(index, all_ids)
    print(f"      no filter                        {fmt_lat(out['latency']['none'])}")
    for name in ("group 3", "sub 7"):
        f = Filters(category=name)
        out["latency"][name] = similar_latency(index, all_ids, filters=f)
        size = int(index.table.mask(f).sum())
        print(f"      category={name!r:<10} ({size:>7,} items) {fmt_lat(out['latency'][name])}")

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
