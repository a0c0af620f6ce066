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
5. Encode throughput per embedder backend (torch, ONNX Runtime, OpenVINO; fp32 / int8) against
   measured peaks, and Beauty retrieval NDCG@10 with each backend's vectors (:mod:`bench.encoders`);
   ``--backends-only`` runs just this section.

Entry points: :func:`run` (returns the figures as a dict) and ``python -m bench.foundation``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .http_latency import http_latency
from .kit import (
    PeakRss,
    Section,
    Timers,
    fmt_lat,
    fmt_load,
    index_memory,
    loadavg,
    machine_facts,
    print_memory,
    rss_bytes,
    similar_latency,
)
from .scale import bench_synthetic

K = 10
REPO_ROOT = Path(__file__).resolve().parent.parent


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



# ----------------------------------------------------------------------------- run


def run(shared: Path, synthetic_n: int = 1_000_000, http: bool = True, queries: int = 500,
        seed: int = 0, limit_items: int | None = None, backends: tuple[str, ...] = (),
        backends_only: bool = False) -> dict:
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
    print(f"  load average: {fmt_load(facts['loadavg'])}   (other processes may share this machine)")
    print(f"  python {facts['python']}, torch {facts['torch']} ({facts['torch_threads']} threads, default), "
          f"faiss {facts['faiss']} ({facts['faiss_omp_threads']} OpenMP threads), numpy {facts['numpy']}; "
          f"thread env: {facts['thread_env'] or 'none set'}")
    sys.stdout.flush()

    if backends:
        sec = {}
        with Section("5. Beauty: encode throughput and retrieval NDCG@10 per embedder backend", sec):
            from . import encoders

            sec.update(encoders.run(load_beauty(shared), backends, seed=seed))
        results["backends"] = sec
    if backends_only:
        results["finished_at"], results["loadavg_end"] = time.strftime("%Y-%m-%d %H:%M:%S"), loadavg()
        return results
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
            print_memory(sec)
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
            print(f"    in-process, no filter              {fmt_lat(sec['in_process']['none'])}")
            if f is not None:
                sec["in_process"]["category"] = similar_latency(index, ids, filters=f)
                print(f"    in-process, category={category!r} ({sec['category_items']:,} items) "
                      f"{fmt_lat(sec['in_process']['category'])}")
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
    print(f"  {m['nproc']} CPUs, {m['cpu_model']}; load at start {fmt_load(m['loadavg'])}, "
          f"at end {fmt_load(r['loadavg_end'])}")
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
    p = argparse.ArgumentParser(prog="python -m bench.foundation", description=__doc__.split("\n\n")[0])
    p.add_argument("--shared", type=Path, default=_default_shared(),
                   help="folder holding data/amazon-beauty-2014 (default: $SEMREC_SHARED or ../shared)")
    p.add_argument("--synthetic-n", type=int, default=1_000_000, help="synthetic vectors (0 skips)")
    p.add_argument("--no-http", action="store_true", help="skip the HTTP latency measurement")
    p.add_argument("--queries", type=int, default=500, help="similar-items queries per latency figure")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit-items", type=int, default=None,
                   help="only the first N Beauty items (smoke runs; figures not comparable)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    p.add_argument("--backends", default="torch,onnx,onnx-int8,openvino,openvino-int8",
                   help="embedder backends for section 5, comma-separated ('' skips it)")
    p.add_argument("--backends-only", action="store_true", help="run only section 5")
    a = p.parse_args(argv)
    from indexer.embed import BACKEND_CHOICES

    backends = tuple(b for b in a.backends.split(",") if b)
    if any(b not in BACKEND_CHOICES for b in backends):
        p.error(f"--backends: choose from {', '.join(BACKEND_CHOICES)}")
    results = run(a.shared, synthetic_n=a.synthetic_n, http=not a.no_http, queries=a.queries, seed=a.seed,
                  limit_items=a.limit_items, backends=backends, backends_only=a.backends_only)
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
