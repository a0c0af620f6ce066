"""Calibrating the search box's relevance (``retriever.search.engine.Relevance``) and its cut-off.

    python -m evaluation.search_calibration --data-dir ../shared/data [--queries 600]
    python -m evaluation.search_calibration --data-dir ../shared/data --model FOLDER --write

``--model``: the embedder whose cosines are calibrated (default MiniLM, whose calibration is built
into ``retriever.search.relevance``); ``--write`` stores the fit in that model's folder
(``relevance.json``), where the search engine finds it: a fine-tuned model's hits then carry a
relevance and the cut-off applies to them (without one: no relevance, no cut).

On the review-as-query sets of ``evaluation.search_eval`` (a review's title is a query, the reviewed
product its one relevant item; its review held out), every hit of the default hybrid search in the
top ``--depth`` (24: a storefront page) is one example: features (cosine to the query, IDF-weighted
share of the query's terms in its text, how far its cosine is below the catalog's best for the
query: ``SearchEngine.relevance_features``), label 1 for the reviewed product. A logistic regression
over both datasets' dev queries gives P(this is the product the query was about). A query's other
hits may be relevant too, unlabelled, so this probability is a lower bound: it reads "how sure are
we this is the product", comparable across queries, unlike the fused score (min-max over one
query's hits, 1.0 at its best however poor).

Measured (600 dev + 600 test queries per dataset, seed 0; 2 cores shared, load 8-11)::

    relevance = sigmoid(3.06 cosine + 0.30 coverage - 7.728 gap - 4.827), cut-off 0.0059
    test queries           targets kept  other hits removed  MRR@10 before -> after
    Subscription Boxes           92.6%               16.4%        0.1463 -> 0.1395
    Musical Instruments          94.1%               16.5%        0.1451 -> 0.1451
    calibration (test, hits with predicted 0-0.02 / 0.02-0.05): observed 0.0082 / 0.0335
    (Subscription Boxes), 0.0094 / 0.0277 (Instruments) against predicted 0.010 / 0.029-0.032

The cut-off is the highest relevance that keeps ``--keep`` (95%) of the dev targets the search
found; the test queries report what it keeps and removes, the MRR@10 it costs, and how well the
probabilities are calibrated (predicted vs observed rate per bin).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from indexer.embed import load_embedder
from indexer.loaders import DATASETS, load_dataset, shared_data_dir
from retriever.search.engine import SearchConfig, SearchEngine
from retriever.search.lexical import LexicalIndex
from retriever.search.relevance import Relevance, relevance, save_calibration

from .search_cases import Case, test_and_dev
from .search_eval import DEFAULT_CACHE, Corpus


def collect(corpus: Corpus, cases: list[Case], depth: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per hit of each case's top ``depth`` (no cut-off): features (n, 2), label (n,), case index (n,)."""
    qvecs = corpus.embedder.encode([c.query for c in cases])
    feats, labels, owner = [], [], []
    for fold in sorted({c.fold for c in cases}):
        rows = [n for n, c in enumerate(cases) if c.fold == fold]
        index, extra = corpus.fold({cases[n].review_id for n in rows})
        lexical = LexicalIndex(index, extra_text=extra)
        engine = SearchEngine(index, corpus.embedder, lexical=lexical, vocabulary=corpus.vocabulary(index, lexical),
                              config=replace(SearchConfig(), min_relevance=0.0))
        for n in rows:
            res = engine.search(cases[n].query, depth, query_vec=qvecs[n], explain=False)
            live = res.labels[res.labels >= 0]
            feats.append(engine.relevance_features(cases[n].query, live, qvecs[n]))
            labels.append(live == index.table.label_of[cases[n].item_id])
            owner.append(np.full(len(live), n))
    return np.concatenate(feats), np.concatenate(labels).astype(np.float64), np.concatenate(owner)


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-3, steps: int = 50) -> np.ndarray:
    """Weights ``(d + 1,)`` (last: bias) of an L2-regularised logistic regression, by Newton's method."""
    a = np.hstack([x.astype(np.float64), np.ones((len(x), 1))])
    w = np.zeros(a.shape[1])
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-(a @ w)))
        grad = a.T @ (p - y) + l2 * w
        hess = (a * (p * (1 - p))[:, None]).T @ a + l2 * np.eye(len(w))
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


def cutoff_keeping(rel: np.ndarray, y: np.ndarray, keep: float) -> float:
    """The highest threshold under which at most ``1 - keep`` of the positives fall."""
    pos = np.sort(rel[y > 0])
    return float(pos[int(np.floor((1 - keep) * len(pos)))]) if len(pos) else 0.0


def report(rel: np.ndarray, y: np.ndarray, owner: np.ndarray, n_cases: int, cut: float) -> dict:
    """What the cut keeps and costs on one sample, and the calibration per predicted-probability bin."""
    kept = rel >= cut
    rank = np.zeros(len(rel), dtype=np.int64)  # 1-based rank of each hit in its query's list, before the cut
    for n in np.unique(owner):
        at = np.flatnonzero(owner == n)
        rank[at] = np.arange(1, len(at) + 1)
    def mrr(mask):
        hit = (y > 0) & mask & (rank <= 10)
        return float((1.0 / rank[hit]).sum() / n_cases)
    kept_rank = np.zeros(len(rel), dtype=np.int64)  # rank after the cut: only kept hits count
    for n in np.unique(owner):
        at = np.flatnonzero(owner == n)
        kept_rank[at[kept[at]]] = np.arange(1, int(kept[at].sum()) + 1)
    hit_after = (y > 0) & kept & (kept_rank <= 10)
    bins = np.array([0, 0.02, 0.05, 0.1, 0.2, 0.4, 1.0001])
    which = np.digitize(rel, bins) - 1
    calib = [{"predicted": f"{bins[b]:.2f}-{min(bins[b + 1], 1):.2f}", "hits": int((which == b).sum()),
              "mean_predicted": round(float(rel[which == b].mean()), 4),
              "observed": round(float(y[which == b].mean()), 4)} for b in range(len(bins) - 1) if (which == b).any()]
    eps = 1e-7
    return {"hits": len(rel), "targets_found": int(y.sum()), "targets_kept": round(float(kept[y > 0].mean()), 4),
            "other_hits_removed": round(float(1 - kept[y == 0].mean()), 4),
            "queries_left_empty": int(sum(not kept[owner == n].any() for n in np.unique(owner))),
            "MRR@10 before": round(mrr(np.ones(len(rel), bool)), 4),
            "MRR@10 after": round(float((1.0 / kept_rank[hit_after]).sum() / n_cases), 4),
            "log_loss": round(float(-np.mean(y * np.log(rel + eps) + (1 - y) * np.log(1 - rel + eps))), 4),
            "calibration": calib}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m evaluation.search_calibration", description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", help="shared data root")
    p.add_argument("--queries", type=int, default=600, help="dev and test queries per dataset (default 600)")
    p.add_argument("--depth", type=int, default=24, help="hits per query (default 24)")
    p.add_argument("--keep", type=float, default=0.95, help="share of found dev targets the cut-off keeps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", default=str(DEFAULT_CACHE))
    p.add_argument("--out", help="write search-calibration.json here")
    p.add_argument("--model", default="minilm", help="the embedder to calibrate: minilm or a model folder")
    p.add_argument("--write", action="store_true", help="store the calibration in the --model folder")
    args = p.parse_args(argv)
    if args.write and not Path(args.model).is_dir():
        p.error(f"--write stores the calibration in a model folder; {args.model!r} is not one")
    import torch

    torch.set_num_threads(1)
    root = Path(args.data_dir) if args.data_dir else shared_data_dir()
    embedder = load_embedder(args.model)
    samples = {}
    for name in ("subscription-boxes", "instruments"):
        started = time.perf_counter()
        catalog = load_dataset(name, root / DATASETS[name])
        corpus = Corpus(catalog, embedder, Path(args.cache_dir) / name)
        test, dev = test_and_dev(catalog.reviews, args.queries, args.queries, args.seed)
        samples[name] = {"dev": (collect(corpus, dev, args.depth), len(dev)),
                         "test": (collect(corpus, test, args.depth), len(test))}
        print(f"{name}: {len(dev)} dev + {len(test)} test queries, {time.perf_counter() - started:.0f} s", flush=True)
    x = np.concatenate([s["dev"][0][0] for s in samples.values()])
    y = np.concatenate([s["dev"][0][1] for s in samples.values()])
    w = fit_logistic(x, y)
    cal = Relevance(*(round(float(x), 3) for x in w), model=args.model)
    cut = round(cutoff_keeping(relevance(x, cal), y, args.keep), 4)
    out = {"relevance": vars(cal), "min_relevance": cut, "keep": args.keep, "depth": args.depth,
           "queries_per_dataset": args.queries, "seed": args.seed}
    for name, s in samples.items():
        for split in ("dev", "test"):
            (feats, labels, owner), n = s[split]
            out[f"{name} {split}"] = report(relevance(feats, cal), labels, owner, n, cut)
    print(json.dumps(out, indent=1))
    if args.write:
        print(f"wrote {save_calibration(args.model, cal, **{k: v for k, v in out.items() if k != 'relevance'})}")
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "search-calibration.json").write_text(json.dumps(out, indent=1))
        np.savez(Path(args.out) / "search-calibration-hits.npz",
                 **{f"{name} {split} {part}": arr for name, sm in samples.items() for split in ("dev", "test")
                    for part, arr in zip(("features", "labels", "owner"), sm[split][0])})


if __name__ == "__main__":
    main()
