"""Lists a merchandiser would sign, measured on the bundled demo catalog (issue 18, part 2).

    python -m bench.lists [--out runs/lists]

The demo's 300 items, its 60 reviewers' reviews (as ratings) and its orders (as purchases) go into a
temporary event log; then, through the served pipeline functions:

* reasons: over every reviewer's home feed (12 items), the kind of each reason, and whether a named
  history item is closer than ``HISTORY_MIN_COSINE`` to the item (none should be);
* stock: out-of-stock items in those feeds with ``in_stock_only`` on (the default) and off;
* also bought: for every item with a list (k=6), the share of results in the item's department
  (top-level category) and sub-category: co-visitation neighbours (the former "also bought")
  against baskets (``ranker.widgets.also_bought``);
* rules: the home feed's latency over the 60 reviewers without rules and with six live rules
  (two pins, a boost, a bury, two blocks), and how many of those lists the rules changed.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np

from indexer.build import build_index
from indexer.clean import clean_catalog
from indexer.embed import load_embedder
from indexer.loaders import load_catalog
from ranker.explain import HISTORY_MIN_COSINE
from ranker.pipeline import PipelineConfig, recommend_users
from ranker.rules import Rule, RuleBook
from ranker.services import Services, open_events
from ranker.widgets import also_bought
from retriever.orders import import_orders
from retriever.personal import import_reviews

from .kit import loadavg

DEMO = Path(__file__).resolve().parent.parent / "data" / "demo"
SHOPPERS = [f"U{n:03d}" for n in range(1, 61)]
RULES = [Rule("pin", ("home",), id=1, item_ids=("D0053",), slot=1),
         Rule("pin", ("home",), id=2, item_ids=("D0297",), slot=4),
         Rule("boost", ("home",), id=3, brand="Ionique Pro", strength=0.5),
         Rule("bury", ("home",), id=4, category="Books", strength=1.0),
         Rule("block", ("home",), id=5, brand="Rouge Atelier"),
         Rule("block", ("home",), id=6, max_price=10.0)]


def services(root: Path) -> Services:
    catalog, _ = clean_catalog(load_catalog(DEMO))
    embedder = load_embedder("minilm")
    index = build_index(catalog, embedder, kind="flat", progress=False)
    store, state = open_events(root / "events.db", "bench-lists-pseudonym-key")
    import_reviews(store, catalog.reviews, "demo")
    import_orders(store, DEMO / "orders.jsonl", "demo")
    state.catch_up(store)
    return Services(index, embedder, store, state)


def reasons(svc: Services) -> dict:
    kinds, weak = Counter(), 0
    for user in SHOPPERS:
        recs = recommend_users(svc, PipelineConfig(), [user], 12)
        for why in recs.reasons[0]:
            kinds[why.kind] += 1
            if why.kind == "history" and why.score < HISTORY_MIN_COSINE:
                weak += 1
    return {"slots": sum(kinds.values()), "kinds": dict(kinds.most_common()), "history_under_threshold": weak}


def stock(svc: Services) -> dict:
    out = {}
    for name, cfg in (("in_stock_only", PipelineConfig()), ("off", replace(PipelineConfig(), in_stock_only=False))):
        shown = [lab for u in SHOPPERS for lab in recommend_users(svc, cfg, [u], 12).labels[0] if lab >= 0]
        out[name] = {"slots": len(shown), "out_of_stock": sum(not svc.index.table.records[lab]["in_stock"]
                                                              for lab in shown)}
    return out


def purity(svc: Services) -> dict:
    table, per = svc.index.table, {"covisit": [], "baskets": []}
    for rec in table.records:
        item, cats = rec["item_id"], rec["categories"]
        with svc.state.lock:
            ids, _ = svc.state.covisit.neighbours([item], 6)
        lists = {"covisit": [table.get(i)["categories"] for i in ids if table.get(i) is not None],
                 "baskets": [table.records[lab]["categories"] for lab in also_bought(svc, PipelineConfig(), item, 6)
                             .labels if lab >= 0]}
        for name, got in lists.items():
            if got:
                per[name].append((np.mean([c[:1] == cats[:1] for c in got]), np.mean([c[:2] == cats[:2] for c in got])))
    return {name: {"items_with_a_list": len(v), "same_department": round(float(np.mean([a for a, _ in v])), 3),
                   "same_subcategory": round(float(np.mean([b for _, b in v])), 3)} for name, v in per.items()}


def rules(svc: Services, repeat: int = 3) -> dict:
    def run() -> tuple[list[float], list[list[int]]]:
        times, lists = [], []
        for _ in range(repeat):
            for user in SHOPPERS:
                start = time.perf_counter()
                recs = recommend_users(svc, PipelineConfig(), [user], 12)
                times.append((time.perf_counter() - start) * 1000)
                lists.append(recs.labels[0].tolist())
        return times, lists

    svc.rules = None
    plain_ms, plain = run()
    svc.rules = RuleBook(RULES, 1)
    ruled_ms, ruled = run()
    svc.rules = None
    return {"feeds": len(plain), "p50_ms_without": round(float(np.median(plain_ms)), 1),
            "p50_ms_with_6_rules": round(float(np.median(ruled_ms)), 1),
            "p99_ms_without": round(float(np.percentile(plain_ms, 99)), 1),
            "p99_ms_with_6_rules": round(float(np.percentile(ruled_ms, 99)), 1),
            "lists_changed": sum(a != b for a, b in zip(plain, ruled))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.lists", description=__doc__.split("\n")[0])
    p.add_argument("--out", help="write lists.json here")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as tmp:
        svc = services(Path(tmp))
        report = {"load_before": loadavg(), "reasons": reasons(svc), "stock": stock(svc),
                  "also_bought": purity(svc), "rules": rules(svc), "load_after": loadavg()}
        svc.events.close()
    print(json.dumps(report, indent=1))
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "lists.json").write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
