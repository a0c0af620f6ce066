"""Search-box quality on real reviews, and /search + /suggest latency on real shopper queries.

Quality::

    python -m evaluation.search_eval --dataset subscription-boxes --data-dir ../shared/data
    python -m evaluation.search_eval --dataset instruments --data-dir ../shared/data [--llm-queries 100]

Protocol: a review's title (summary) is a query whose one relevant item is the reviewed product.
That review, and any twin (the same headline and text posted twice on the item), is held out of
the item for the run: the item's BM25 text is its metadata document plus its *other* reviews, its
vector the indexer's blend of document and other reviews (Instruments has no metadata: other
reviews only). Auto-generated summaries ("Five Stars") and titles under 3
characters are not queries. Queries are drawn deterministically (``--seed``) round-robin over
items, so each item gives at most ceil(n / items) queries and popular items do not dominate; the
j-th query of every item is in fold j, and each fold is one index with its queries held out.
A disjoint dev sample from the same draw (``--sweep``) is where settings are compared; the test
sample reports.
Metrics: MRR@10 and Recall@10 (one relevant item, so Recall@10 = hit rate in the top 10).
The search log the co-click table reads (``/expand``'s co-click terms, ``/search``'s click boost) is
simulated: every queryable review headline outside the sample evaluated (the test sample; for
``--sweep``, the dev and test samples) is a past search whose shopper clicked the reviewed item.

Every query goes through the search pipeline the service runs (``ranker.pipeline.search``), one
services object per fold; a system is a ``SearchConfig`` of that pipeline. Latency over HTTP is a
benchmark: ``semrec bench search`` (``bench/search.py``).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from indexer.build import EmbedConfig, combine, review_weights
from indexer.documents import documents, review_text
from indexer.embed import Embedder, load_embedder
from indexer.loaders import DATASETS, load_dataset, shared_data_dir
from indexer.pools import ReviewPool, text_key
from indexer.schema import Catalog
from indexer.store import ItemIndex
from ranker import pipeline
from ranker.model import Reranker
from ranker.rerank import query_rerank_hook
from ranker.services import Services
from retriever.search import SearchBox
from retriever.search.engine import SearchConfig, SearchEngine
from retriever.search.expand import ExpandConfig
from retriever.search.expansion import CatalogVocabulary, catalog_terms, embed_cached
from retriever.search.lexical import LexicalIndex
from retriever.search.llm import LLMExpander, TextGenerator, load_generator
from retriever.search.suggest import QueryLog, Suggester

from .search_cases import Case, query_pool, test_and_dev, twins, with_twins

DEFAULT_CACHE = Path.home() / ".cache" / "semrec" / "search_eval"
ROOT = Path(__file__).resolve().parent.parent
K = 10
CONFIG = pipeline.PipelineConfig()  # the service's default: personalisation needs a shopper, none here

# name -> (SearchConfig changes, search() keyword arguments)
_BM25 = {"retrievers": ("lexical",), "typo": False, "click_weight": 0.0}  # plain BM25, as a shop's own engine
EXPAND_SOURCES = ("typo", "catalog", "co-click", "llm")
SYSTEMS: dict[str, tuple[dict, dict]] = {
    "bm25": (_BM25, {"expand": False}),
    # BM25 with the /expand answer's terms as weighted should-clauses: what a shop's own engine gets
    "bm25 + /expand": (_BM25, {"expand": False, "expand_terms": EXPAND_SOURCES}),
    "dense": ({"retrievers": ("dense",), "review_weight": 0.0, "click_weight": 0.0}, {"expand": False}),
    "hybrid + review match": ({"review_weight": 0.5}, {"expand": False}),
    "hybrid": ({}, {"expand": False}),  # the served default
    "hybrid + /expand": ({}, {"expand": False, "expand_terms": EXPAND_SOURCES}),
    "hybrid, no search-log clicks": ({"click_weight": 0.0}, {"expand": False}),
    "hybrid + catalog": ({"feedback_terms": 0}, {"expand": True}),
    "hybrid + feedback": ({"catalog_terms": 0}, {"expand": True}),
    "hybrid + catalog + feedback": ({}, {"expand": True}),
}
LLM_SYSTEMS: dict[str, tuple[dict, dict]] = {
    "hybrid": ({}, {"expand": False}),
    "hybrid + catalog": ({"feedback_terms": 0}, {"expand": True}),
    # no time budget here: the evaluation measures what the terms are worth, not how fast they come
    "hybrid + llm": ({"catalog_terms": 0, "feedback_terms": 0, "llm_budget_s": 3600.0},
                     {"expand": True, "use_llm": True}),
}
_RRF = {"fusion": "rrf", "lexical_weight": 1.0, "dense_weight": 1.0}
# Changes to SearchConfig() (the default: weighted .5:.5 over complete scores); "_expand" is the request flag.
SWEEP: dict[str, dict] = {
    "bm25": _BM25,
    "dense": {"retrievers": ("dense",), "review_weight": 0.0, "click_weight": 0.0},
    "rrf 1:1": {**_RRF, "complete_scores": False},
    "rrf 1:1 c=20": {**_RRF, "rrf_k": 20.0, "complete_scores": False},
    "rrf 1:0.5": {**_RRF, "dense_weight": 0.5, "complete_scores": False},
    "weighted .5:.5": {"complete_scores": False},
    "weighted .7:.3": {"lexical_weight": 0.7, "dense_weight": 0.3, "complete_scores": False},
    "rrf 1:1 complete": {**_RRF},
    "weighted .3:.7 complete": {"lexical_weight": 0.3, "dense_weight": 0.7},
    "weighted .5:.5 complete (default)": {},
    "weighted .7:.3 complete": {"lexical_weight": 0.7, "dense_weight": 0.3},
    "default, no typo": {"typo": False},
    "default, no relevance cut": {"min_relevance": 0.0},
    "default + review match .3": {"review_weight": 0.3},
    "default + review match .5": {"review_weight": 0.5},
    "default + review match .5 over the top 100": {"review_weight": 0.5, "rerank_depth": 100},
    "default + catalog w.1": {"feedback_terms": 0, "catalog_weight": 0.1, "_expand": True},
    "default + catalog w.3": {"feedback_terms": 0, "catalog_weight": 0.3, "_expand": True},
    "default + feedback w.1": {"catalog_terms": 0, "feedback_weight": 0.1, "_expand": True},
    "default + feedback w.3 + rocchio .3": {"catalog_terms": 0, "dense_feedback": 0.3, "_expand": True},
    "default + clicks .1": {"click_weight": 0.1},
    "default + clicks .2": {"click_weight": 0.2},
    "default + clicks .4": {"click_weight": 0.4},
    "default + clicks .8": {"click_weight": 0.8},
    "default + clicks .4, cos .8": {"click_weight": 0.4, "click_min_cos": 0.8},
    "default + clicks .4, 30 queries": {"click_weight": 0.4, "click_queries": 30},
}


class Corpus:
    """A catalog's embeddings, computed once and cached, and per-fold indexes built from them."""

    def __init__(self, catalog: Catalog, embedder: Embedder, cache_dir: Path, cfg: EmbedConfig = EmbedConfig()):
        self.items, self.embedder, self.cfg, self.cache_dir = catalog.items, embedder, cfg, cache_dir
        docs = documents(self.items)
        self.has_doc = np.array([bool(d.strip()) for d in docs])
        self.doc_vecs = np.zeros((len(docs), embedder.dim), dtype=np.float32)
        with_doc = [d for d in docs if d.strip()]
        self.doc_vecs[self.has_doc] = embed_cached(embedder, with_doc, cache_dir)
        r = catalog.reviews.assign(_text=[review_text(t, x) for t, x in
                                          zip(catalog.reviews["title"], catalog.reviews["text"])])
        r = r.assign(_ts=r["timestamp"].fillna(-np.inf))
        r = r.sort_values(["item_id", "helpful_votes", "_ts"], ascending=[True, False, False], kind="stable")
        self.texts = {i: list(zip(g["review_id"], g["_text"])) for i, g in r.groupby("item_id", sort=False)}
        # The indexer pools every review with body text (or the max_reviews most helpful; then one
        # more per item covers any fold: a fold holds out at most one review per item).
        body = r[r["text"].str.strip().str.len() > 0]
        self.ranked = {i: list(g["review_id"]) for i, g in body.groupby("item_id", sort=False)}
        top = body.groupby("item_id", sort=False).head(cfg.max_reviews + 1) if cfg.max_reviews else body
        vecs = embed_cached(embedder, list(top["_text"]), cache_dir)
        self.review_vec = dict(zip(top["review_id"], vecs))
        self.review_key = dict(zip(top["review_id"], map(text_key, top["_text"])))
        self.term_vec: dict[str, np.ndarray] = {}
        self.twins = twins(catalog.reviews)

    def fold(self, held_out: set[str]) -> tuple[ItemIndex, dict[str, str]]:
        """The item index and BM25 extra text with the ``held_out`` reviews (and their twins) removed."""
        held_out = with_twins(held_out, self.twins)
        ids = list(self.items["item_id"])
        review_mean = np.zeros_like(self.doc_vecs)
        counts = np.zeros(len(ids), dtype=np.int64)
        pools: list[ReviewPool | None] = [None] * len(ids)
        for n, item in enumerate(ids):
            chosen = [r for r in self.ranked.get(item, []) if r not in held_out][: self.cfg.max_reviews or None]
            if chosen:
                pool = ReviewPool(np.zeros(self.embedder.dim, dtype=np.float32))
                for r in chosen:  # as the indexer pools them: the same rows for the per-review match
                    pool.seen.add(self.review_key[r])
                    pool.sum += self.review_vec[r]
                    pool.rows.append(self.review_vec[r].astype(np.float16))
                review_mean[n], counts[n], pools[n] = pool.sum / len(chosen), len(chosen), pool
        vectors = combine(self.doc_vecs, review_mean, review_weights(counts, self.has_doc, self.cfg))
        index = ItemIndex(model=self.embedder.name, dim=self.embedder.dim, kind="flat")
        index.add(self.items, vectors, pools=pools)
        extra = {i: " ".join(t for r, t in pairs if r not in held_out) for i, pairs in self.texts.items()}
        return index, extra

    def search_log(self, reviews: pd.DataFrame, exclude: set[str]) -> list[tuple[str, str, str, str]]:
        """A simulated search log: every queryable review headline not in ``exclude`` (the cases
        evaluated, and their twins) as a past search whose shopper clicked the reviewed item, shaped
        like ``EventStore.search_interactions``. Its co-clicks feed ``/expand`` (source "co-click")."""
        pool = query_pool(reviews)
        pool = pool[~pool["review_id"].isin(with_twins(exclude, self.twins))]
        return [(q.strip(), i, "click", u) for q, i, u in zip(pool["title"], pool["item_id"], pool["user_id"])]

    def vocabulary(self, index: ItemIndex, lexical: LexicalIndex) -> CatalogVocabulary:
        terms, kinds, df = catalog_terms(index, lexical)
        missing = [t for t in terms if t not in self.term_vec]
        if missing:
            self.term_vec.update(zip(missing, embed_cached(self.embedder, missing, self.cache_dir)))
        vectors = np.stack([self.term_vec[t] for t in terms]) if terms else np.zeros((0, self.embedder.dim))
        return CatalogVocabulary(terms, kinds, df, vectors.astype(np.float32))


class CachedReplies(TextGenerator):
    """A generator whose replies are kept in a JSON file, so an evaluation re-run costs no generation."""

    def __init__(self, inner: TextGenerator, path: Path):
        self.inner, self.path, self.name = inner, path, inner.name
        self.replies: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}

    def generate(self, system: str, shots: list[tuple[str, str]], user: str, max_new_tokens: int = 32) -> str:
        key = json.dumps([self.name, system, shots, user, max_new_tokens], ensure_ascii=False)
        if key not in self.replies:
            self.replies[key] = self.inner.generate(system, shots, user, max_new_tokens)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(self.replies, ensure_ascii=False, indent=0))
        return self.replies[key]


def run_cases(corpus: Corpus, cases: list[Case], systems: dict[str, tuple[dict, dict]],
              base: SearchConfig, *, generator: TextGenerator | None = None,
              reranker: Reranker | None = None, lexical_kw: dict | None = None,
              expand_config: ExpandConfig = ExpandConfig(),
              search_log: list | None = None, ranking=None) -> dict[str, np.ndarray]:
    """1-based rank of each case's item per system (0 = not in the top K).

    ``reranker``: reorders each system's fused top ``base.rerank_depth`` by its (query, item) score
    (``ranker.rerank.query_rerank_hook``); ``lexical_kw``: :class:`LexicalIndex` settings. A system
    with ``expand_terms`` (sources) adds the ``pipeline.expand`` terms of those sources to its query;
    ``search_log``: the co-click rows ``/expand`` and the click boost learn from (none: no clicks);
    ``ranking``: the learned search ranking (``retriever.search.learned.SearchRanking``) the engine holds."""
    qvecs = corpus.embedder.encode([c.query for c in cases])
    ranks = {name: np.zeros(len(cases), dtype=np.int64) for name in systems}
    for fold in sorted({c.fold for c in cases}):
        rows = [n for n, c in enumerate(cases) if c.fold == fold]
        index, extra = corpus.fold({cases[n].review_id for n in rows})
        lexical = LexicalIndex(index, extra_text=extra, **(lexical_kw or {}))
        vocab = corpus.vocabulary(index, lexical)
        llm = None if generator is None else LLMExpander(generator, vocab.ground, budget_s=3600)
        engine = SearchEngine(index, corpus.embedder, lexical=lexical, vocabulary=vocab, llm=llm, config=base,
                              rerank=None if reranker is None else query_rerank_hook(reranker, index),
                              ranking=ranking)
        box = SearchBox(engine, Suggester(index, QueryLog(1)), QueryLog(1))
        box.expander.config = expand_config
        if search_log:
            box.expander.coclicks.load(search_log, corpus.embedder, corpus.cache_dir)
        full = Services(index, corpus.embedder, search=box)
        for name, (changes, kwargs) in systems.items():
            svc = Services(index, corpus.embedder, search=replace(box, engine=engine.with_config(**changes)))
            sources = kwargs.get("expand_terms")
            for n in rows:
                terms = None if sources is None else [
                    e for e in pipeline.expand(full, CONFIG, cases[n].query, query_vec=qvecs[n],
                                               llm=generator is not None and "llm" in sources).terms
                    if e.source in sources]
                res, _ = pipeline.search(svc, CONFIG, cases[n].query, K, query_vec=qvecs[n], explain=False,
                                         expand=kwargs.get("expand"), llm=kwargs.get("use_llm"), terms=terms)
                hit = np.flatnonzero(res.labels == index.table.label_of[cases[n].item_id])
                ranks[name][n] = hit[0] + 1 if len(hit) else 0
        if llm is not None:
            llm.close()
    return ranks


def metrics(ranks: np.ndarray) -> dict[str, float]:
    """MRR@10 and Recall@10 of 1-based ranks (0 = missed)."""
    rr = np.where(ranks > 0, 1.0 / np.maximum(ranks, 1), 0.0)
    return {"MRR@10": round(float(rr.mean()), 4), "Recall@10": round(float((ranks > 0).mean()), 4)}


def paired_ci(ranks: np.ndarray, base: np.ndarray, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """MRR@10 difference ``ranks - base`` over the same queries, with a 95% paired-bootstrap interval."""
    diff = np.where(ranks > 0, 1.0 / np.maximum(ranks, 1), 0.0) - np.where(base > 0, 1.0 / np.maximum(base, 1), 0.0)
    rng = np.random.default_rng(seed)
    boots = diff[rng.integers(0, len(diff), size=(n_boot, len(diff)))].mean(axis=1)
    return float(diff.mean()), float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))


def table(title: str, ranks: dict[str, np.ndarray], extra_rows: dict[str, str] | None = None,
          base: str | None = None) -> str:
    """Markdown table of MRR@10 / Recall@10, with the paired MRR difference to the ``base`` system."""
    head = "| system | MRR@10 | Recall@10 |" + (f" ΔMRR@10 vs {base} [95% CI] |" if base else "")
    lines = [f"### {title}", "", head, "|---|---|---|" + ("---|" if base else "")]
    for name, r in ranks.items():
        m = metrics(r)
        row = f"| {name} | {m['MRR@10']:.4f} | {m['Recall@10']:.4f} |"
        if base and name != base:
            d, lo, hi = paired_ci(r, ranks[base])
            row += f" {d:+.4f} [{lo:+.4f}, {hi:+.4f}] |"
        elif base:
            row += " |"
        lines.append(row)
    for name, note in (extra_rows or {}).items():
        lines.append(f"| {name} | {note} | {note} |" + (" |" if base else ""))
    return "\n".join(lines)


def evaluate(args: argparse.Namespace) -> dict:
    root = Path(args.data_dir) if args.data_dir else shared_data_dir()
    folder = root if (root / "SOURCE.md").exists() else root / DATASETS[args.dataset]
    catalog = load_dataset(args.dataset, folder)
    embedder = load_embedder(args.model)
    started = time.perf_counter()
    corpus = Corpus(catalog, embedder, Path(args.cache_dir) / args.dataset)
    print(f"{args.dataset}: {len(catalog.items)} items, {len(catalog.reviews)} reviews; embeddings "
          f"{time.perf_counter() - started:.0f}s", flush=True)
    test, dev = test_and_dev(catalog.reviews, args.queries, args.dev_queries, args.seed)
    report: dict = {"dataset": args.dataset, "queries": len(test), "folds": len({c.fold for c in test})}
    base = SearchConfig()
    out = []
    if args.sweep:
        sweep = {name: ({k: v for k, v in ch.items() if k != "_expand"}, {"expand": ch.get("_expand", False)})
                 for name, ch in SWEEP.items()}
        # the dev queries' past: every headline but theirs and the test sample's
        log = corpus.search_log(catalog.reviews, {c.review_id for c in dev} | {c.review_id for c in test})
        ranks = run_cases(corpus, dev, sweep, base, search_log=log)
        report["dev"] = {name: metrics(r) for name, r in ranks.items()}
        out.append(table(f"{args.dataset}: settings on the dev sample ({len(dev)} queries)", ranks, base="bm25"))
        print(out[-1], flush=True)
    if not (args.sweep_only or args.llm_only):
        started = time.perf_counter()
        # the past the co-clicks learn from: every other review's headline, none of the test queries
        log = corpus.search_log(catalog.reviews, {c.review_id for c in test})
        ranks = run_cases(corpus, test, SYSTEMS, base, search_log=log)
        report["test"] = {name: metrics(r) for name, r in ranks.items()}
        report["test_ranks"] = {name: r.tolist() for name, r in ranks.items()}  # for paired comparisons
        report["seconds"] = round(time.perf_counter() - started, 1)
        if args.ranker:
            sub = test[: args.rerank_queries]
            started = time.perf_counter()
            reranked = run_cases(corpus, sub, {"hybrid + reranker": SYSTEMS["hybrid"]}, base,
                                 reranker=Reranker(args.ranker))
            report["rerank_seconds"] = round(time.perf_counter() - started, 1)
            report["reranker"] = {name: metrics(r) for name, r in reranked.items()} | {"queries": len(sub)}
            report["test_ranks"].update({name: r.tolist() for name, r in reranked.items()})
            if len(sub) == len(test):
                ranks.update(reranked)
        out.append(table(f"{args.dataset}: test sample ({len(test)} queries, {report['folds']} folds)", ranks,
                         base="bm25"))
        if args.ranker and len(sub) < len(test):
            n = len(sub)
            out.append(table(f"{args.dataset}: reranker on the first {n} test queries",
                             {"bm25": ranks["bm25"][:n], "hybrid": ranks["hybrid"][:n], **reranked}, base="bm25"))
        print("\n\n".join(out), flush=True)
    if args.llm_queries > 0 and not args.sweep_only:
        generator = CachedReplies(load_generator(args.llm), Path(args.cache_dir) / "llm-replies.json")
        sub = test[: args.llm_queries]
        started = time.perf_counter()
        ranks = run_cases(corpus, sub, LLM_SYSTEMS, base, generator=generator)
        report["llm"] = {name: metrics(r) for name, r in ranks.items()}
        report["llm_ranks"] = {name: r.tolist() for name, r in ranks.items()}
        report["llm_seconds"] = round(time.perf_counter() - started, 1)
        out.append(table(f"{args.dataset}: LLM subsample (first {len(sub)} test queries, {args.llm})", ranks,
                         base="hybrid"))
        print(out[-1], flush=True)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        tag = "-llm" if args.llm_only else "-sweep" if args.sweep_only else ""
        (Path(args.out) / f"search-{args.dataset}{tag}.json").write_text(json.dumps(report, indent=2))
        (Path(args.out) / f"search-{args.dataset}{tag}.md").write_text("\n\n".join(out) + "\n")
    return report


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m evaluation.search_eval", description=__doc__.split("\n")[0])
    p.add_argument("--dataset", choices=["subscription-boxes", "instruments"])
    p.add_argument("--data-dir", help="shared data root (holding the dataset folders) or one dataset's folder")
    p.add_argument("--queries", type=int, default=1000, help="test queries (default 1000)")
    p.add_argument("--dev-queries", type=int, default=500, help="dev queries for --sweep and for tuning (default 500)")
    p.add_argument("--sweep", action="store_true", help="compare fusion / expansion settings on a dev sample")
    p.add_argument("--sweep-only", action="store_true", help="stop after the sweep")
    p.add_argument("--llm-only", action="store_true", help="only the LLM subsample (with --llm-queries)")
    p.add_argument("--llm-queries", type=int, default=0, help="test queries also run with LLM expansion")
    p.add_argument("--llm", default="smollm2", help="generator for LLM expansion (name, hub id or folder)")
    p.add_argument("--model", default="minilm", help="embedder")
    p.add_argument("--ranker", help="reranker version dir (or root): adds 'hybrid + reranker'")
    p.add_argument("--rerank-queries", type=int, default=1000, help="test queries also run with the reranker")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy 2-core box)")
    p.add_argument("--cache-dir", default=str(DEFAULT_CACHE), help="embedding / LLM reply cache")
    p.add_argument("--out", help="folder for search-<dataset>.json / .md")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    if not args.dataset:
        p.error("give --dataset")
    evaluate(args)


if __name__ == "__main__":
    main()
