"""Query understanding on a constructed set with known answers, and the hard constraints checked
on served results.

    python -m evaluation.parse_eval [--results]

The set (``evaluation/data/parse_queries.jsonl``, 110 queries written for the demo catalog's brands
and categories): price forms (under / over / ranges / around / bare amounts), numbers that are not
prices (sizes, quantities, model numbers), brands (distinctive, explicit "by X"), negations of
brands and words, categories ("in X"), and plain queries that must come out unchanged. A query is
correct when every field equals the expectation: the searched text (as BM25 tokens), the price
bounds, brand, category, excluded brands and words, and sizes.

``--results`` also runs every query through the served search pipeline (``ranker.pipeline.search``)
on the demo catalog's index and counts results that violate a parsed hard constraint (price,
brand, category, excluded brand or title word); the goal is 0.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from indexer.loaders import load_catalog
from indexer.store import ItemIndex
from retriever.search.parse import ParsedQuery, QueryParser, title_violates
from retriever.search.tokens import tokenize

ROOT = Path(__file__).resolve().parent.parent
SET = Path(__file__).resolve().parent / "data" / "parse_queries.jsonl"
FIELDS = ("min_price", "max_price", "brand", "category", "exclude_brands", "exclude_words", "sizes")


def load_set(path: Path = SET) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def as_fields(p: ParsedQuery) -> dict:
    return {"text": tokenize(p.text), "min_price": p.min_price, "max_price": p.max_price, "brand": p.brand,
            "category": p.category, "exclude_brands": sorted(p.exclude_brands),
            "exclude_words": sorted(p.exclude_words),
            "sizes": sorted(f"{q.value:g} {q.unit}" if not q.unit.startswith("size:") else q.unit for q in p.sizes)}


def expected(e: dict) -> dict:
    return {"text": tokenize(e["text"]), **{f: e.get(f, [] if f.startswith(("exclude", "sizes")) else None)
                                           for f in FIELDS}} | {
        "exclude_brands": sorted(e.get("exclude_brands", [])), "exclude_words": sorted(e.get("exclude_words", [])),
        "sizes": sorted(e.get("sizes", []))}


def accuracy(parser: QueryParser, cases: list[dict]) -> tuple[float, list[tuple[str, dict, dict]]]:
    """Share of ``cases`` parsed exactly right, and the misses ``(query, got, want)``."""
    misses = []
    for c in cases:
        got, want = as_fields(parser.parse(c["query"])), expected(c["expect"])
        if got != want:
            misses.append((c["query"], {k: v for k, v in got.items() if v != want[k]},
                           {k: v for k, v in want.items() if v != got[k]}))
    return 1 - len(misses) / len(cases), misses


def violations(index: ItemIndex, parsed: ParsedQuery, labels: np.ndarray) -> list[str]:
    """Item ids among ``labels`` that break a hard constraint of ``parsed``."""
    bad = []
    for lb in labels[labels >= 0]:
        r = index.table.records[int(lb)]
        price = r["price"]
        wrong = (parsed.min_price is not None and not (price >= parsed.min_price)) or \
            (parsed.max_price is not None and not (price <= parsed.max_price)) or \
            (parsed.brand is not None and r["brand"].casefold() != parsed.brand.casefold()) or \
            (parsed.category is not None and
             parsed.category.casefold() not in {c.casefold() for c in r["categories"]}) or \
            r["brand"].casefold() in {b.casefold() for b in parsed.exclude_brands} or \
            title_violates(r["title"], parsed.exclude_words)
        if wrong or (isinstance(price, float) and math.isnan(price) and (parsed.min_price or parsed.max_price)):
            bad.append(r["item_id"])
    return bad


def bare_demo_index() -> ItemIndex:
    """The demo catalog with placeholder vectors: enough to parse against its brands and categories."""
    catalog = load_catalog(ROOT / "data" / "demo")
    index = ItemIndex(model="none", dim=4)
    index.add(catalog.items, np.eye(4, dtype=np.float32)[np.arange(len(catalog.items)) % 4])
    return index


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m evaluation.parse_eval", description=__doc__.split("\n")[0])
    p.add_argument("--results", action="store_true", help="also check served results against hard constraints")
    a = p.parse_args(argv)
    cases = load_set()
    acc, misses = accuracy(QueryParser(bare_demo_index()), cases)
    print(f"parse accuracy {acc:.3f} on {len(cases)} constructed queries ({len(misses)} wrong)")
    for q, got, want in misses:
        print(f"  {q!r}: got {got}, want {want}")
    out = {"accuracy": acc, "queries": len(cases), "wrong": len(misses)}
    if a.results:
        from indexer.build import build_index
        from indexer.clean import clean_catalog
        from indexer.embed import load_embedder
        from ranker import pipeline
        from ranker.services import Services, build_search
        from retriever.search import SearchConfig

        embedder = load_embedder("minilm")
        catalog, _ = clean_catalog(load_catalog(ROOT / "data" / "demo"))
        index = build_index(catalog, embedder, progress=False)
        svc = Services(index, embedder, search=build_search(index, embedder, SearchConfig()))
        n_results = n_bad = constrained = 0
        for c in cases:
            res, _ = pipeline.search(svc, pipeline.PipelineConfig(), c["query"], 24)
            bad = violations(index, res.parsed, res.labels)
            n_results += int((res.labels >= 0).sum())
            n_bad += len(bad)
            constrained += res.parsed.has_constraints
        print(f"served results: {n_results} for {len(cases)} queries ({constrained} with a parsed constraint), "
              f"{n_bad} violate a parsed hard constraint")
        out |= {"results": n_results, "violations": n_bad}
    return out


if __name__ == "__main__":
    main()
