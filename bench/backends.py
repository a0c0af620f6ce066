"""Backends benchmark (figures, not tests): the embedded defaults against the scale-out engines, on
the same data in the same run.

1. Event log, SQLite vs PostgreSQL, each seeded with the same real history: against a real
   ``semrec serve`` on it, ``GET /users/{id}/recommendations`` p50/p99 and durable ``POST /events``
   throughput (batches of 100 and of 1; acknowledged = committed); freshness as a shopper sees it
   (a new shopper's purchase, until their recommendations come from it) and as another worker
   sees it (an event committed by one process, until a second process following the log at the
   service's 0.25 s interval has counted it).
2. Vectors, FAISS vs Milvus Lite, on the same item vectors: in-process similar-item latency and
   recall@10 against exact search.

PostgreSQL is a throwaway cluster (Debian's binaries, ``fsync`` on) unless ``--pg-url`` names one;
SQLite and that cluster live in the same temp dir. Data: ``--index`` (made by ``semrec index``), or
``--items N``: the N most-reviewed items of ``--dataset``, embedded here from their documents.

    python -m bench.backends --dataset beauty --data-dir ../shared/data/amazon-beauty-2014 --items 3000
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import numpy as np

from .kit import fmt_lat, fmt_load, latency_stats, loadavg, machine_facts, similar_latency
from .loadserver import start_server, stop_server
from .personal import freshness, ingestion, recommendation_latency
from .traffic import read_items

FOLLOW_S = 0.25  # the service's default follow_seconds
# The servers started here hash user ids with this key too (SEMREC_PSEUDONYM_KEY), so the seeded
# history is theirs.
KEY = os.environ.setdefault("SEMREC_PSEUDONYM_KEY", "semrec-bench-backends-key")


def build_small_index(dataset: str, data_dir: Path, n_items: int, out: Path) -> dict:
    """The ``n_items`` most-reviewed items of a public dataset, embedded from their documents (no
    review texts: minutes, not hours, on two cores), saved to ``out``."""
    from indexer.build import EmbedConfig, build_index
    from indexer.clean import clean_catalog
    from indexer.embed import load_embedder
    from indexer.loaders import load_dataset
    from indexer.schema import Catalog

    catalog, _ = clean_catalog(load_dataset(dataset, data_dir))
    top = set(catalog.reviews["item_id"].value_counts().index[:n_items])
    small = Catalog(catalog.items[catalog.items["item_id"].isin(top)].reset_index(drop=True),
                    catalog.reviews[catalog.reviews["item_id"].isin(top)].reset_index(drop=True),
                    source=f"{dataset}: {n_items} most-reviewed items")
    index = build_index(small, load_embedder("minilm"), kind="flat", cfg=EmbedConfig(max_reviews=0), progress=False)
    index.save(out)
    return {"items": len(index), "seconds": index.build_info["seconds"], "source": small.source}


def history(dataset: str, data_dir: Path, item_ids: set[str]):
    """The dataset's reviews of the indexed items: the history both event logs are seeded with."""
    from indexer.clean import clean_catalog
    from indexer.loaders import load_dataset

    reviews = clean_catalog(load_dataset(dataset, data_dir))[0].reviews
    return reviews[reviews["item_id"].isin(item_ids)].reset_index(drop=True)


def follower_freshness(writer, follower, items: list[str], trials: int) -> dict:
    """Commit on ``writer``; time until a state following ``follower`` (another process's connection)
    every ``FOLLOW_S`` has counted it."""
    from retriever.eventstore import Event
    from retriever.state import InteractionState

    state, stop = InteractionState(), threading.Event()
    state.catch_up(follower)

    def follow():
        while not stop.wait(FOLLOW_S):
            state.catch_up(follower)

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    rng, seconds = random.Random(4), []
    try:
        for _ in range(trials):
            item = rng.choice(items)
            before = state.interactions(item)
            started = time.perf_counter()
            writer.add_events([Event(uuid.uuid4().hex, f"fresh-{uuid.uuid4().hex[:8]}", item, "view", time.time())])
            while state.interactions(item) == before:
                if time.perf_counter() - started > 10:
                    raise RuntimeError("an event was not counted by the follower within 10 s")
                time.sleep(0.002)
            seconds.append(time.perf_counter() - started)
            time.sleep(rng.random() * FOLLOW_S)  # land anywhere in the follow cycle
    finally:
        stop.set()
        thread.join()
    return latency_stats(seconds)


def event_backend(name: str, where: str, index_dir: Path, reviews, dataset: str, args) -> dict:
    from retriever.eventstore import open_event_store
    from retriever.personal import import_reviews

    store = open_event_store(where, pseudonym_key=KEY)
    started = time.perf_counter()
    read, _ = import_reviews(store, reviews, dataset)
    seeded = {"events": read, "seconds": round(time.perf_counter() - started, 2)}
    items = [i for i, _ in read_items(index_dir)]
    users = list(dict.fromkeys(reviews["user_id"].astype(str)))
    log = Path(tempfile.mkdtemp(prefix=f"semrec-bench-{name}-")) / "server.log"
    proc, url, keys = start_server(index_dir, where, log, startup_s=900)
    try:
        with httpx.Client(base_url=url, headers={"X-API-Key": keys["backend"]}, timeout=60, trust_env=False) as c:
            out = {"seeded": seeded, "load_before": loadavg(),
                   "recommendations": recommendation_latency(c, users, args.requests)["default"],
                   "ingest_batch_100": ingestion(c, items, 100, args.ingest_seconds),
                   "ingest_batch_1": ingestion(c, items, 1, args.ingest_seconds),
                   "freshness_shopper": freshness(c, items, args.trials)}
    finally:
        stop_server(proc)
    other = open_event_store(where, pseudonym_key=KEY)
    try:
        out["freshness_other_worker"] = follower_freshness(store, other, items, args.trials)
    finally:
        other.close()
        store.close()
    out["load_after"] = loadavg()
    return out


def vector_backends(index_dir: Path, milvus_path: Path, n: int) -> dict:
    """Similar items (k=10) on FAISS flat (exact: the truth), FAISS HNSW and Milvus Lite (HNSW)."""
    from indexer.milvus import attach
    from indexer.store import ItemIndex
    from indexer.vectors import make_index
    from retriever.similar import similar_items

    exact = ItemIndex.load(index_dir)
    ids = random.Random(5).sample(sorted(exact.table.label_of), min(n, len(exact)))
    truth = {i: set(similar_items(exact, [i], 10)[0][0].tolist()) for i in ids}
    out = {}
    for name in ("faiss-flat", "faiss-hnsw", "milvus-lite-hnsw"):
        idx = ItemIndex.load(index_dir)
        started = time.perf_counter()
        if name == "faiss-hnsw":
            idx.index = make_index("hnsw", idx.dim)
            idx.index.add(idx.vectors.view)
        elif name.startswith("milvus"):
            attach(idx, f"milvus://{milvus_path}")
        ready = time.perf_counter() - started
        found = {i: similar_items(idx, [i], 10)[0][0].tolist() for i in ids}
        recall = float(np.mean([len(truth[i] & set(found[i])) / max(1, len(truth[i])) for i in ids]))
        out[name] = {"items": len(idx), "load_s": round(ready, 2), "recall_at_10": round(recall, 4),
                     "similar": similar_latency(idx, ids)}
        if name.startswith("milvus"):
            idx.index.drop()
            idx.index.client.close()
    return out


def run(args) -> dict:
    from bench.pgcluster import Cluster

    root = Path(tempfile.mkdtemp(prefix="semrec-backends-"))
    out: dict = {"machine": machine_facts(), "args": {k: str(v) for k, v in vars(args).items()}}
    index_dir = args.index
    if index_dir is None:
        index_dir = root / "index"
        out["index_build"] = build_small_index(args.dataset, args.data_dir, args.items, index_dir)
    reviews = history(args.dataset, args.data_dir, {i for i, _ in read_items(index_dir)})
    cluster = None if args.pg_url else Cluster.start()
    try:
        pg_url = args.pg_url or cluster.create_database("bench")
        out["events"] = {name: event_backend(name, where, index_dir, reviews, args.dataset, args)
                         for name, where in (("sqlite", str(root / "events.db")), ("postgresql", pg_url))}
    finally:
        if cluster is not None:
            cluster.stop()
    out["vectors"] = vector_backends(index_dir, root / "milvus.db", args.similar)
    out["load_end"] = loadavg()
    return out


def report(r: dict) -> str:
    lines = [f"machine: {r['machine']['nproc']} CPUs ({r['machine']['cpu_model']}), load at start "
             f"{fmt_load(r['machine']['loadavg'])}, at end {fmt_load(r['load_end'])}"]
    if "index_build" in r:
        b = r["index_build"]
        lines.append(f"index: {b['items']} items ({b['source']}), embedded in {b['seconds']} s")
    for name, e in r["events"].items():
        lines += [f"\n[{name}] seeded {e['seeded']['events']} events in {e['seeded']['seconds']} s; "
                  f"load {fmt_load(e['load_before'])} -> {fmt_load(e['load_after'])}",
                  f"  recommendations (k=10)   {fmt_lat(e['recommendations'])}"]
        for key in ("ingest_batch_100", "ingest_batch_1"):
            g = e[key]
            lines.append(f"  POST /events batch {g['batch']:<4} {g['events_per_s']:>9} events/s durable "
                         f"({g['requests_per_s']} requests/s)")
        f = e["freshness_shopper"]
        lines.append(f"  freshness, the shopper   ack p50 {f['ack']['p50_ms']:.1f} ms; visible in their "
                     f"recommendations p50 {f['visible']['p50_ms']:.1f} / p99 {f['visible']['p99_ms']:.1f} ms")
        lines.append(f"  freshness, other worker  {fmt_lat(e['freshness_other_worker'])}")
    lines.append("")
    for name, v in r["vectors"].items():
        lines.append(f"[{name}] {v['items']} items, ready in {v['load_s']} s, recall@10 {v['recall_at_10']:.4f}; "
                     f"similar items {fmt_lat(v['similar'])}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="semrec bench backends", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, help="public dataset whose reviews seed both event logs")
    p.add_argument("--data-dir", type=Path, required=True, help="that dataset's folder")
    p.add_argument("--index", type=Path, help="an index of that dataset's items (default: build one, --items)")
    p.add_argument("--items", type=int, default=3000, help="items of the index built here")
    p.add_argument("--pg-url", help="an existing PostgreSQL database (default: a throwaway cluster)")
    p.add_argument("--requests", type=int, default=300, help="recommendation requests per backend")
    p.add_argument("--ingest-seconds", type=float, default=8.0, help="per batch size and backend")
    p.add_argument("--trials", type=int, default=30, help="freshness trials per backend")
    p.add_argument("--similar", type=int, default=500, help="similar-item queries per vector store")
    p.add_argument("--json", type=Path, help="write the results here")
    a = p.parse_args(argv)
    if a.index is not None and not (a.index / "CURRENT").exists():
        p.error(f"--index {a.index}: no semrec index there")
    r = run(a)
    print(report(r))
    if a.json:
        a.json.write_text(json.dumps(r, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
