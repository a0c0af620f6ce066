"""Fit the learned search ranking (``retriever.search.learned``) on review-headline pairs, pick its
settings on dev, and measure it on test against the fixed fusion.

    python -m evaluation.search_ltr --dataset instruments --data-dir ../shared/data --out runs/search-ltr
    python -m evaluation.search_ltr --dataset subscription-boxes --ranking runs/search-ltr/v0001  # transfer

Cases: ``search_eval``'s test and dev samples (same seed, same draw) and ``--train-queries`` other
headlines, drawn the same way (round-robin over items) from the reviews the two samples leave; each
case's review, and its twins, are held out of the item in the case's fold, as for the test queries.
The simulated search log the clicks feature reads (``search_eval``): every headline except, for the
training features, the dev and test samples' and those of the training query's part (the training
queries are split in :data:`LOG_PARTS` parts, so each sees a log about as full as dev's); for dev,
the dev and test samples'; for test, the test sample's. Training rows: every fused candidate of a
training query whose item is among them (its relevance 1, the rest 0), features computed by the
served engine itself (a stand-in ranking records them). The LambdaRank fit is
``evaluation.learned.fit_ranking_on`` (rounds picked on held-out training queries); its settings
(:data:`GRID`) on the dev sample's MRR@10; test is run once, for the pick.
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
from ranker.versions import next_version
from retriever.search.engine import SearchConfig
from retriever.search.learned import FUSED, NAMES, SearchRanking

from .learned import RankingConfig, fit_ranking_on
from .search_cases import Case, sample_cases, test_and_dev, with_twins
from .search_eval import DEFAULT_CACHE, Corpus, metrics, run_cases, table

LOG_PARTS = 4  # training queries in parts; a part's log holds the other parts' headlines (cross-fitted clicks)
HYBRID = {"hybrid": ({"learned": False}, {"expand": False})}
LEARNED = {"hybrid + learned ranking": ({}, {"expand": False})}
BM25 = {"bm25": ({"retrievers": ("lexical",), "typo": False, "click_weight": 0.0}, {"expand": False})}
BASE = RankingConfig(rounds=600, check_every=50, learning_rate=0.05)
GRID: dict[str, RankingConfig] = {
    "7 leaves, 300 rows/leaf": replace(BASE, num_leaves=7, min_data_in_leaf=300),
    "15 leaves, 100 rows/leaf": replace(BASE, num_leaves=15, min_data_in_leaf=100),
    "31 leaves, 50 rows/leaf": replace(BASE, num_leaves=31, min_data_in_leaf=50),
}


class _Recorder:
    """A stand-in ranking: keeps each query's candidate labels and features, ranks by the fusion."""

    def __init__(self) -> None:
        self.rows: list[tuple[np.ndarray, np.ndarray]] = []

    def order(self, labels: np.ndarray, features: np.ndarray) -> np.ndarray:
        self.rows.append((labels.copy(), features.copy()))
        return features[:, FUSED]


def training_rows(corpus: Corpus, cases: list[Case], log: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features ``(n, len(NAMES))`` float32, relevance ``(n,)`` int32 and group sizes of the cases
    whose item is among their fused candidates, computed by the served engine."""
    rec = _Recorder()
    run_cases(corpus, cases, LEARNED, SearchConfig(), search_log=log, ranking=rec)
    order = [n for fold in sorted({c.fold for c in cases}) for n, c in enumerate(cases) if c.fold == fold]
    if len(rec.rows) != len(order):
        raise RuntimeError(f"{len(rec.rows)} searches recorded for {len(order)} cases")
    label_of = {item: n for n, item in enumerate(corpus.items["item_id"])}  # a fold's index adds items in order
    xs, ys = [], []
    for n, (labels, x) in zip(order, rec.rows):
        y = (labels == label_of[cases[n].item_id]).astype(np.int32)
        if y.any():
            xs.append(x)
            ys.append(y)
    return np.concatenate(xs), np.concatenate(ys), np.array([len(y) for y in ys])


def fit_on_dev(corpus: Corpus, reviews, train: list[Case], evaluated: set[str], dev: list[Case], dev_log: list,
               report: dict) -> tuple[SearchRanking, dict[str, np.ndarray]]:
    """Training rows from ``train`` (cross-fitted logs), one fit per :data:`GRID` entry, the pick by
    dev MRR@10; returns it and the dev ranks of every fit (``report`` gains the figures)."""
    started = time.perf_counter()
    parts = [train[k::LOG_PARTS] for k in range(LOG_PARTS)]
    rows = [training_rows(corpus, part, corpus.search_log(reviews, evaluated | {c.review_id for c in part}))
            for part in parts]
    x, y, groups = (np.concatenate(a) for a in zip(*rows))
    report |= {"train_queries": len(train), "train_groups": len(groups), "rows": len(y),
               "collect_s": round(time.perf_counter() - started, 1), "grid": {}}
    print(f"{len(groups)} of {len(train)} training queries have their item among the candidates; "
          f"{len(y)} rows in {report['collect_s']}s", flush=True)
    models, dev_ranks = {}, {}
    for name, cfg in GRID.items():
        started = time.perf_counter()
        models[name], info = fit_ranking_on(x, y, groups, replace(cfg, require_gain=False), NAMES, SearchRanking)
        dev_ranks[name] = run_cases(corpus, dev, LEARNED, SearchConfig(), search_log=dev_log,
                                    ranking=models[name])["hybrid + learned ranking"]
        report["grid"][name] = {"dev": metrics(dev_ranks[name]), "fit_s": round(time.perf_counter() - started, 1),
                                **{k: info[k] for k in ("rounds", "holdout_ndcg10_fused", "importance_gain")}}
        print(name, report["grid"][name], flush=True)
    report["picked"] = max(GRID, key=lambda n: metrics(dev_ranks[n])["MRR@10"])
    return models[report["picked"]], dev_ranks


def evaluate(args: argparse.Namespace) -> dict:
    root = Path(args.data_dir) if args.data_dir else shared_data_dir()
    folder = root if (root / "SOURCE.md").exists() else root / DATASETS[args.dataset]
    catalog = load_dataset(args.dataset, folder)
    corpus = Corpus(catalog, load_embedder(args.model), Path(args.cache_dir) / args.dataset)
    test, dev = test_and_dev(catalog.reviews, args.queries, args.dev_queries, args.seed)
    evaluated = with_twins({c.review_id for c in test} | {c.review_id for c in dev}, corpus.twins)
    report: dict = {"dataset": args.dataset, "features": list(NAMES)}
    dev_log = corpus.search_log(catalog.reviews, {c.review_id for c in dev} | {c.review_id for c in test})
    dev_ranks = run_cases(corpus, dev, BM25 | HYBRID, SearchConfig(), search_log=dev_log)
    if args.ranking:  # a ranking fitted elsewhere (another catalog): measured here, not fitted
        model = SearchRanking.load(args.ranking)
        dev_ranks |= run_cases(corpus, dev, LEARNED, SearchConfig(), search_log=dev_log, ranking=model)
        report["ranking"] = str(args.ranking)
    else:
        train = sample_cases(catalog.reviews, args.train_queries, args.seed + 1, exclude=frozenset(evaluated))
        model, fits = fit_on_dev(corpus, catalog.reviews, train, evaluated, dev, dev_log, report)
        dev_ranks |= fits
    report["dev"] = {n: metrics(r) for n, r in dev_ranks.items()}
    out = [table(f"{args.dataset}: dev sample ({len(dev)} queries)", dev_ranks, base="hybrid")]
    test_log = corpus.search_log(catalog.reviews, {c.review_id for c in test})
    ranks = run_cases(corpus, test, BM25 | HYBRID, SearchConfig(), search_log=test_log)
    ranks |= run_cases(corpus, test, LEARNED, SearchConfig(), search_log=test_log, ranking=model)
    report["test"] = {n: metrics(r) for n, r in ranks.items()}
    report["test_ranks"] = {n: r.tolist() for n, r in ranks.items()}
    out.append(table(f"{args.dataset}: test sample ({len(test)} queries), learned ranking "
                     f"{report.get('picked') or args.ranking}", ranks, base="bm25"))
    print("\n\n".join(out), flush=True)
    if args.out:
        version = next_version(Path(args.out))
        if not args.ranking:
            model.info.update(dataset=args.dataset, picked=report["picked"], test=report["test"],
                              dev=report["dev"][report["picked"]])
            model.save(version)
        version.mkdir(parents=True, exist_ok=True)
        (version / "report.json").write_text(json.dumps(report, indent=1))
        (version / "report.md").write_text("\n\n".join(out) + "\n")
        print(f"wrote {version}")
    return report


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m evaluation.search_ltr", description=__doc__.split("\n")[0])
    p.add_argument("--dataset", required=True, choices=["subscription-boxes", "instruments"])
    p.add_argument("--data-dir", help="shared data root (holding the dataset folders) or one dataset's folder")
    p.add_argument("--queries", type=int, default=1000, help="test queries (search_eval's draw)")
    p.add_argument("--dev-queries", type=int, default=500, help="dev queries (search_eval's draw)")
    p.add_argument("--train-queries", type=int, default=6000, help="training headlines")
    p.add_argument("--model", default="minilm", help="embedder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", default=str(DEFAULT_CACHE), help="embedding cache")
    p.add_argument("--ranking", help="measure this fitted ranking (a version dir) instead of fitting one")
    p.add_argument("--out", help="folder for the model version (vNNNN) with its report")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    evaluate(args)


if __name__ == "__main__":
    main()
