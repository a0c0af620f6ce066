"""Personalised search, measured: does a shopper's history lift the item they were looking for?

    python -m evaluation.search_personal --dataset instruments --data-dir ../shared/data

Protocol: the review-as-query cases of ``evaluation.search_eval`` (a review's headline is a query
for the reviewed product, that review held out of the item), kept where the reviewer has earlier
reviews: those, strictly before the query's review in time, are the shopper's history, written
to a real event log (one ``purchase`` event per reviewed item) that the served pipeline reads
(``ranker.pipeline.search(..., user_id=)``). Nothing from the query's time on is known.

Systems are pipeline configs that differ only in ``search`` (the A/B variant setting): the
interest boost's ``personal_weight`` (0 = not personalised). MRR@10 with a 95% paired bootstrap
interval against weight 0, on the same queries.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from indexer.embed import load_embedder
from indexer.loaders import DATASETS, load_dataset, shared_data_dir
from ranker import pipeline
from ranker.services import Services
from retriever.eventstore import Event, SQLiteEventStore
from retriever.search import SearchBox
from retriever.search.engine import SearchConfig, SearchEngine
from retriever.search.lexical import LexicalIndex
from retriever.search.suggest import QueryLog, Suggester
from retriever.state import InteractionState

from .search_cases import Case, sample_cases
from .search_eval import DEFAULT_CACHE, Corpus, K, metrics, table

WEIGHTS = (0.0, 0.05, 0.1, 0.2, 0.4)


def with_history(cases: list[Case], reviews: pd.DataFrame, min_history: int) -> list[tuple[Case, str, list]]:
    """``(case, user, [(item, ts) earlier reviews])`` for cases whose reviewer has ``min_history``+."""
    r = reviews.set_index("review_id")
    by_user = {u: g.sort_values("timestamp") for u, g in reviews.groupby("user_id")}
    out = []
    for c in cases:
        user, ts = r.at[c.review_id, "user_id"], r.at[c.review_id, "timestamp"]
        g = by_user[user]
        past = g[(g["timestamp"] < ts) & (g["item_id"] != c.item_id)]
        if len(past) >= min_history:
            out.append((c, str(user), list(zip(past["item_id"], past["timestamp"].astype(float)))))
    return out


def run(corpus: Corpus, rows: list[tuple[Case, str, list]], weights=WEIGHTS) -> dict[str, np.ndarray]:
    """1-based rank of each case's item per weight (0 = not in the top K)."""
    ranks = {f"personal_weight {w:g}": np.zeros(len(rows), dtype=np.int64) for w in weights}
    qvecs = corpus.embedder.encode([c.query for c, _, _ in rows])
    work = Path(tempfile.mkdtemp(prefix="semrec-search-personal-"))
    for fold in sorted({c.fold for c, _, _ in rows}):
        picked = [n for n, (c, _, _) in enumerate(rows) if c.fold == fold]
        index, extra = corpus.fold({rows[n][0].review_id for n in picked})
        lexical = LexicalIndex(index, extra_text=extra)
        engine = SearchEngine(index, corpus.embedder, lexical=lexical, vocabulary=corpus.vocabulary(index, lexical),
                              config=SearchConfig())
        store = SQLiteEventStore(work / f"events-{fold}.db", pseudonym_key="search-personal-eval")
        svc = Services(index, corpus.embedder, store, InteractionState(),
                       search=SearchBox(engine, Suggester(index, QueryLog(1)), QueryLog(1)))
        for n in picked:
            case, user, past = rows[n]
            # each case its own shopper id: a user's later queries must not see their earlier targets
            uid = f"{user}#{case.review_id}"
            store.add_events([Event(f"{case.review_id}:{j}", uid, item, "purchase", ts)
                              for j, (item, ts) in enumerate(past) if item in index.table.label_of])
            for w in weights:
                cfg = pipeline.PipelineConfig(search=(("personal_weight", float(w)),))
                res, _ = pipeline.search(svc, cfg, case.query, K, user_id=uid, query_vec=qvecs[n], explain=False)
                hit = np.flatnonzero(res.labels == index.table.label_of[case.item_id])
                ranks[f"personal_weight {w:g}"][n] = hit[0] + 1 if len(hit) else 0
        store.close()
    return ranks


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m evaluation.search_personal", description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="instruments", choices=["instruments", "subscription-boxes"])
    p.add_argument("--data-dir")
    p.add_argument("--queries", type=int, default=1000, help="cases drawn before keeping those with history")
    p.add_argument("--min-history", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", default=str(DEFAULT_CACHE))
    a = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    root = Path(a.data_dir) if a.data_dir else shared_data_dir()
    folder = root if (root / "SOURCE.md").exists() else root / DATASETS[a.dataset]
    catalog = load_dataset(a.dataset, folder)
    corpus = Corpus(catalog, load_embedder("minilm"), Path(a.cache_dir) / a.dataset)
    rows = with_history(sample_cases(catalog.reviews, a.queries, a.seed), catalog.reviews, a.min_history)
    started = time.perf_counter()
    ranks = run(corpus, rows)
    title = (f"{a.dataset}: personalised search ({len(rows)} queries whose shopper has >= {a.min_history} earlier "
             f"reviews; {time.perf_counter() - started:.0f} s)")
    print(table(title, ranks, base="personal_weight 0"), flush=True)
    return {name: metrics(r) for name, r in ranks.items()}


if __name__ == "__main__":
    main()
