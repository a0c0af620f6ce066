"""Train the cross-encoder (``ranker.model.CrossEncoderNet``) on (query, item) pairs for search.

    python -m evaluation.query_reranker --dataset subscription-boxes --data-dir ../shared/data \\
        --minutes 10 --out runs/query-ranker
    python -m evaluation.search_eval --dataset subscription-boxes --ranker runs/query-ranker

Pairs: review headlines as queries for the reviewed item (the reviews of ``search_eval``'s test
sample are never used), the search log's clicked / carted results (``EventStore.
search_interactions``) and enrichment's synthetic queries when given. Each pair becomes a group: the
positive item and ``negatives`` hard negatives, the hybrid search's best other results for the
query. Context ``search: <query>``, item text title | brand | category (``Reranker.texts_for``), as
``ranker.rerank.query_rerank_hook`` reads them. Loss, optimiser and early stopping:
``ranker.train.fit``; validation: MRR-like NDCG@10 within held-out groups. The model directory has
the reranker's format (``ranker.json``, ``model/``), so ``SEMREC_RANKER_DIR`` + ``SEMREC_RERANK=
'{"search": true}'`` serves it; it stays off by default until it beats hybrid (search_eval).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from indexer.embed import load_embedder
from indexer.loaders import DATASETS, load_dataset, shared_data_dir
from ranker import pipeline
from ranker.model import Reranker, write_manifest
from ranker.network import EncoderConfig, PairEncoder, build_network, save_network
from ranker.pairs import Groups
from ranker.services import Services
from ranker.train import TrainConfig, fit
from ranker.versions import next_version
from retriever.search import SearchBox
from retriever.search.engine import SearchConfig, SearchEngine
from retriever.search.lexical import LexicalIndex
from retriever.search.suggest import QueryLog, Suggester

from .search_cases import query_pool, test_and_dev, twins, with_twins
from .search_eval import DEFAULT_CACHE, Corpus
from .training import machine, validate

CONFIG = TrainConfig(encoder=EncoderConfig(context_tokens=24, item_tokens=32), num_layers=2, lr=5e-5, head_lr=1e-3,
                     batch_groups=8, eval_every=40, patience=4, max_minutes=10.0, threads=2)


def pair_groups(svc: Services, pairs: list[tuple[str, str]], negatives: int, seed: int = 0) -> tuple[Groups, list[str]]:
    """Groups ``(contexts, items (n, 1 + negatives), positive 0)`` and the item texts they index."""
    index = svc.index
    texts = Reranker.texts_for(index.table.records)
    contexts, rows = [], []
    rng = np.random.default_rng(seed)
    for query, item in pairs:
        target = index.table.label_of.get(item)
        if target is None:
            continue
        res, _ = pipeline.search(svc, pipeline.PipelineConfig(), query, negatives + 5, explain=False)
        neg = [int(lb) for lb in res.labels if lb >= 0 and lb != target][:negatives]
        while len(neg) < negatives:  # a query with few results: random items fill the group
            lb = int(rng.integers(len(texts)))
            if lb != target and lb not in neg:
                neg.append(lb)
        contexts.append(f"search: {query.strip()}")
        rows.append([target, *neg])
    items = np.asarray(rows, dtype=np.int64).reshape(len(rows), 1 + negatives)
    return Groups(contexts, items, np.zeros(len(rows), np.int64), np.arange(len(rows))), texts


def train(corpus: Corpus, pairs: list[tuple[str, str]], out: Path, cfg: TrainConfig = CONFIG, negatives: int = 7,
          val: int = 200, progress: bool = True) -> Path:
    """Train on ``pairs`` ((query, item id)), the last ``val`` held out for validation; publish ``out/vNNNN``."""
    torch.set_num_threads(cfg.threads)
    started = time.perf_counter()
    index, extra = corpus.fold(set())
    lexical = LexicalIndex(index, extra_text=extra)
    engine = SearchEngine(index, corpus.embedder, lexical=lexical, vocabulary=corpus.vocabulary(index, lexical),
                          config=SearchConfig())
    svc = Services(index, corpus.embedder, search=SearchBox(engine, Suggester(index, QueryLog(1)), QueryLog(1)))
    groups, texts = pair_groups(svc, pairs, negatives, cfg.seed)
    n_val = min(val, len(groups) // 5)
    train_g, val_g = groups.subset(np.arange(n_val, len(groups))), groups.subset(np.arange(n_val))
    net, tok = build_network(_minilm(), cfg.num_layers)
    encoder = PairEncoder(tok, cfg.encoder)
    record = fit(net, encoder, train_g, lambda m: validate(m, encoder, val_g, texts), texts, cfg, progress)
    final = next_version(out)
    tmp = out / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_network(net.cpu(), tok, tmp / "model")
    card = {"kind": "query reranker", "pairs": len(pairs), "train_groups": len(train_g), "val_groups": len(val_g),
            "group_size": 1 + negatives, "validation": record["curve"][-1], "best_val_ndcg": record["best_val_ndcg"],
            "training": {k: record[k] for k in ("steps", "best_step", "stopped", "train_seconds", "train_pairs_per_s")},
            "total_seconds": round(time.perf_counter() - started, 1), "machine": machine()}
    write_manifest(tmp, encoder=cfg.encoder, num_layers=cfg.num_layers, base_model="all-MiniLM-L6-v2", inference="fp32",
                   text={"history_items": 0, "words_per_item": 8}, extra={"query_reranker": card})
    (tmp / "model_card.json").write_text(json.dumps(card, indent=2))
    os.replace(tmp, final)
    return final


def _minilm() -> str:
    from indexer.embed import minilm_path

    return minilm_path()


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(prog="python -m evaluation.query_reranker", description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="subscription-boxes", choices=["instruments", "subscription-boxes"])
    p.add_argument("--data-dir")
    p.add_argument("--out", default="runs/query-ranker")
    p.add_argument("--pairs", type=int, default=3000, help="training pairs (review headlines) drawn")
    p.add_argument("--minutes", type=float, default=CONFIG.max_minutes)
    p.add_argument("--layers", type=int, default=CONFIG.num_layers)
    p.add_argument("--test-queries", type=int, default=1000, help="search_eval's test sample, kept out")
    p.add_argument("--dev-queries", type=int, default=500, help="search_eval's dev sample, kept out")
    p.add_argument("--cache-dir", default=str(DEFAULT_CACHE))
    a = p.parse_args(argv)
    root = Path(a.data_dir) if a.data_dir else shared_data_dir()
    folder = root if (root / "SOURCE.md").exists() else root / DATASETS[a.dataset]
    catalog = load_dataset(a.dataset, folder)
    corpus = Corpus(catalog, load_embedder("minilm"), Path(a.cache_dir) / a.dataset)
    test, dev = test_and_dev(catalog.reviews, a.test_queries, a.dev_queries, 0)
    # search_eval's samples, and their twins (the same headline posted twice): never training pairs
    held = with_twins({c.review_id for c in test + dev}, twins(catalog.reviews))
    pool = query_pool(catalog.reviews)
    pool = pool[~pool["review_id"].isin(held)].sample(frac=1.0, random_state=7)
    pairs = list(zip(pool["title"].str.strip(), pool["item_id"]))[: a.pairs]
    out = train(corpus, pairs, Path(a.out), replace(CONFIG, max_minutes=a.minutes, num_layers=a.layers))
    print(out, json.dumps(json.loads((out / "model_card.json").read_text()), indent=1))
    return out


if __name__ == "__main__":
    main()
