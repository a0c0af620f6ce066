"""Query expansion as a product (``GET /expand``): for a shop that keeps its own lexical engine
(Elasticsearch, Algolia, ...), the words to add to a query, each with its provenance and a weight.

For one query (typed text; its understood constraints come from ``retriever.search.parse``)::

    spelling   typo fixes toward catalog words ("ionik" -> "ionic")              source "typo"     weight 1
    related    words of the catalog items nearest the query in embedding space,
               tf-idf weighted (semantic pseudo-relevance feedback)               source "catalog"
    synonyms   catalog vocabulary terms nearest the query embedding              source "catalog"
    co-click   distinctive words of the items shoppers clicked or carted after the same
               query or the logged queries nearest it (the search log)            source "co-click"
    llm        terms the generator proposes, grounded in the catalog              source "llm"
    hints      brands / categories the query names or its nearest items share    source "catalog"

Weights are BM25 / ``should``-clause boosts relative to the query's own words (1.0). Every term is
a word, brand or category the catalog uses (the grounding filter), so an expansion can only steer
toward what the shop sells. Answers are cached per normalised query until the catalog or the
co-click table changes (``version``).
"""

from __future__ import annotations

import threading
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, field

import numpy as np

from .engine import SearchEngine
from .expansion import Expansion, catalog_expansion, embed_cached, feedback_terms
from .llm import normalise_query
from .parse import ParsedQuery, QueryParser
from .tokens import tokenize
from .typo import respell


@dataclass(frozen=True)
class ExpandConfig:
    """Defaults picked on the dev draws of ``evaluation.search_eval`` (``test_and_dev``, 500 queries
    each, disjoint from test): BM25 + expansion vs BM25 MRR@10. Instruments / Subscription Boxes
    dev, BM25 0.1391 / 0.1129: the earlier defaults (3 items, 10 words, weight 0.5; co-click
    weight 0.2) 1.008x / 0.880x; these 1.133x / 0.999x; related weight 0.1 1.144x / 0.972x;
    10 items 1.06x on Instruments; co-clicks off 0.974x on Instruments."""

    related_items: int = 3        # nearest catalog items read for "related" words
    related_terms: int = 20       # related words returned
    related_weight: float = 0.05  # weight of the best related word (others proportionally less)
    synonyms: int = 0             # vocabulary terms nearest the query
    synonym_min_cos: float = 0.5
    synonym_weight: float = 0.3
    # co-clicks on the simulated log (other reviews' headlines): nearest logged queries at cosine >= 0.9
    # (0.8: 1.075x instead of 1.093x on Instruments dev at related weight 0.2)
    coclick_items: int = 3        # items (most clicked after the nearest logged queries) whose words are added
    coclick_terms: int = 3        # distinctive words per such item
    coclick_weight: float = 0.6   # weight of the best item's words
    coclick_queries: int = 10     # nearest logged queries read
    coclick_min_cos: float = 0.9
    llm_weight: float = 0.3
    hints: int = 3                # brand / category hints returned
    cache_size: int = 20_000


@dataclass(frozen=True)
class Hint:
    kind: str      # "brand" or "category"
    name: str
    weight: float  # share of the nearest items' score mass (or 1.0 when the query names it)


@dataclass
class ExpandResult:
    query: str
    terms: list[Expansion]
    hints: list[Hint]
    corrections: dict[str, list[str]]
    parsed: ParsedQuery | None
    llm_status: str = "off"
    cached: bool = False
    timings_ms: dict[str, float] = field(default_factory=dict)


class CoClicks:
    """What shoppers acted on after each logged query (the search log), and the logged queries'
    embeddings, so a new query borrows the clicks of the past queries nearest to it.

    The table is one tuple swapped whole by :meth:`load` (the sync thread) while requests read it:
    a reader sees the old table or the new one, never a mix of the two."""

    def __init__(self) -> None:
        # normalised logged queries; per query item id -> click weight; float32 (n, dim) unit rows; row of a query
        self._table: tuple[list[str], list[Counter], np.ndarray | None, dict[str, int]] = ([], [], None, {})
        self.version = 0

    def load(self, rows, embedder=None, cache_dir=None) -> None:
        """``rows``: ``(query, item_id, event type, user_key)`` (``EventStore.search_interactions``);
        carts and purchases weigh 2, clicks 1. With ``embedder`` the logged queries are embedded
        (cached in ``cache_dir``) for nearest-query lookups."""
        by_query: dict[str, Counter] = {}
        for query, item, kind, _ in rows:
            w = 2.0 if kind in ("add_to_cart", "purchase") else 1.0
            by_query.setdefault(normalise_query(query), Counter())[item] += w
        queries = sorted(by_query)
        vectors = None
        _, _, old_vectors, old_row = self._table
        if embedder is not None and queries:
            # a reload (every 30 s in the service) embeds only the queries it has not seen
            old = old_row if old_vectors is not None else {}
            new = [q for q in queries if q not in old]
            fresh = dict(zip(new, embed_cached(embedder, new, cache_dir))) if new else {}
            vectors = np.stack([fresh[q] if q in fresh else old_vectors[old[q]] for q in queries])
        self._table = (queries, [by_query[q] for q in queries], vectors, {q: i for i, q in enumerate(queries)})
        self.version += 1

    def neighbours(self, query: str, query_vec: np.ndarray, n: int, min_cos: float) -> Counter:
        """Item weights from the ``n`` logged queries nearest ``query`` (cosine >= ``min_cos``; the
        same query counts fully), each query's clicks scaled by its cosine."""
        queries, items, vectors, rows = self._table
        out: Counter = Counter()
        row = rows.get(normalise_query(query))
        if row is not None:
            out.update(items[row])
        if vectors is not None and n > 0 and len(queries):
            sims = vectors @ np.asarray(query_vec, dtype=np.float32)
            top = np.argpartition(-sims, min(n, len(sims) - 1))[:n]
            for i in top:
                if sims[i] >= min_cos and i != row:
                    for item, w in items[i].items():
                        out[item] += float(sims[i]) * w / sum(items[i].values())
        return out


class QueryExpander:
    """The ``/expand`` answer for a search box's engine (state: the cache, the co-click table)."""

    def __init__(self, engine: SearchEngine, parser: QueryParser, config: ExpandConfig = ExpandConfig()):
        self.engine, self.parser, self.config = engine, parser, config
        self.coclicks = CoClicks()
        self._cache: OrderedDict[tuple, ExpandResult] = OrderedDict()
        self._lock = threading.Lock()
        self._catalog_version = 0
        engine.index.subscribe(self._on_update)

    def _on_update(self, op: str, labels: np.ndarray) -> None:
        self._catalog_version += 1

    @property
    def version(self) -> tuple[int, int]:
        return self._catalog_version, self.coclicks.version

    def expand(self, query: str, *, llm: bool = False, budget_s: float | None = None,
               query_vec: np.ndarray | None = None) -> ExpandResult:
        """Weighted, grounded terms for ``query`` (see module docstring); cached."""
        key = (normalise_query(query), llm, self.version)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and (not llm or hit.llm_status in ("cached", "generated")):
                self._cache.move_to_end(key)
                return ExpandResult(**{**vars(hit), "cached": True, "timings_ms": {}})
        started = time.perf_counter()
        out = self._expand(query, llm, budget_s, query_vec)
        out.timings_ms["total"] = round((time.perf_counter() - started) * 1000, 3)
        with self._lock:
            self._cache[key] = out
            while len(self._cache) > self.config.cache_size:
                self._cache.popitem(last=False)
        return out

    def _expand(self, query: str, llm: bool, budget_s: float | None, query_vec: np.ndarray | None) -> ExpandResult:
        cfg, eng = self.config, self.engine
        parsed = self.parser.parse(query)
        text = parsed.text or query
        tokens = tokenize(text)
        fixes = respell(tokens, lambda t: eng.lexical.doc_freq(t) > 0, eng.typo)
        terms = [Expansion(t, "typo", 1.0) for t in dict.fromkeys(t for alts in fixes.values() for t in alts)]
        have = set(tokens) | {t for e in terms for t in tokenize(e.term)}
        if query_vec is None or text != query or fixes:
            query_vec = eng.embedder.encode([" ".join([text, *(e.term for e in terms)])])[0]
        labels, scores = eng.index.search(query_vec[None, :], max(cfg.related_items, 20), parsed.filters())
        labels, scores = labels[0][labels[0] >= 0], scores[0][labels[0] >= 0]
        top = labels[: cfg.related_items]
        if len(top) and cfg.related_terms:
            w = np.maximum(scores[: len(top)], 0)
            fb = feedback_terms([eng.lexical.tokens_of(int(lb)) for lb in top], w / max(w.max(), 1e-9),
                                eng.lexical, list(have), n=cfg.related_terms, weight=cfg.related_weight)
            terms += [Expansion(t, "catalog", wt) for t, wt in fb]
            have |= {t for t, _ in fb}
        if eng.vocabulary is not None and cfg.synonyms:
            for e in catalog_expansion(eng.vocabulary, query_vec, list(have), n=cfg.synonyms,
                                       min_cos=cfg.synonym_min_cos, weight=cfg.synonym_weight):
                terms.append(e)
                have |= set(tokenize(e.term))
        terms += self._coclick_terms(query, query_vec, have)
        status = "off"
        if llm and eng.llm is not None:
            words, status = eng.llm.expand(text, budget_s)
            terms += [Expansion(t, "llm", cfg.llm_weight) for t in words if not set(tokenize(t)) <= have]
        elif llm:
            status = "unavailable"
        return ExpandResult(query, terms, self._hints(parsed, labels, scores), fixes, parsed, status)

    def _coclick_terms(self, query: str, query_vec: np.ndarray, have: set[str]) -> list[Expansion]:
        """The distinctive words (tf-idf within the item) of the items shoppers acted on after this
        query or the logged queries nearest it, weighted by those items' share of the clicks."""
        cfg, eng = self.config, self.engine
        items = self.coclicks.neighbours(query, query_vec, cfg.coclick_queries, cfg.coclick_min_cos)
        if not items:
            return []
        out: dict[str, float] = {}
        best = None
        with eng.index.lock:
            labels = [(eng.index.table.label_of.get(i), w) for i, w in items.most_common(4 * cfg.coclick_items)]
        for label, w in [(lb, w) for lb, w in labels if lb is not None][: cfg.coclick_items]:
            best = best or w
            for term in distinctive_terms(eng.lexical, label, cfg.coclick_terms, have):
                out[term] = max(out.get(term, 0.0), round(cfg.coclick_weight * w / best, 4))
        return [Expansion(t, "co-click", w) for t, w in out.items()]

    def _hints(self, parsed: ParsedQuery, labels: np.ndarray, scores: np.ndarray) -> list[Hint]:
        named = [Hint("brand", b, 1.0) for b in (*([parsed.brand] if parsed.brand else []), *parsed.boost_brands)]
        named += [Hint("category", c, 1.0) for c in (*([parsed.category] if parsed.category else []),
                                                       *parsed.boost_categories)]
        if not len(labels):
            return named[: self.config.hints * 2]
        brands, cats = Counter(), Counter()
        w = np.maximum(scores, 0)
        with self.engine.index.lock:
            records = [self.engine.index.table.records[int(lb)] for lb in labels]
        for rec, s in zip(records, w):
            if rec["brand"].strip():
                brands[rec["brand"].strip()] += float(s)
            if rec["categories"]:
                cats[rec["categories"][-1].strip()] += float(s)
        total = max(float(w.sum()), 1e-9)
        seen = {(h.kind, h.name.casefold()) for h in named}
        for kind, counts in (("brand", brands), ("category", cats)):
            for name, s in counts.most_common(self.config.hints):
                if (kind, name.casefold()) not in seen and s / total >= 0.2:
                    named.append(Hint(kind, name, round(s / total, 4)))
        return named


def distinctive_terms(lexical, label: int, n: int, exclude: set[str]) -> list[str]:
    """The ``n`` words that best tell item ``label`` apart (tf x idf in its BM25 document; words in
    at least 2 items, so a typo or an id is never one)."""
    tf = Counter(lexical.tokens_of(label))
    scored = [(c * lexical.idf(t), t) for t, c in tf.items()
              if t not in exclude and len(t) >= 3 and lexical.doc_freq(t) >= 2]
    return [t for _, t in sorted(scored, key=lambda x: (-x[0], x[1]))[:n]]


def elasticsearch_query(result: ExpandResult, fields: list[str]) -> dict:
    """A plain Elasticsearch ``bool`` query for ``result``: the query's own words must match (any
    of them, ``multi_match`` over ``fields``), each expansion term is a ``should`` clause boosted
    by its weight, parsed hard constraints become ``filter`` / ``must_not`` clauses (fields
    ``price``, ``brand``, ``category``: rename them to your mapping's)."""
    p = result.parsed
    text = (p.text if p is not None else "") or result.query
    out: dict = {"must": [{"multi_match": {"query": text, "fields": fields}}],
                 "should": [{"multi_match": {"query": e.term, "fields": fields, "boost": e.weight}}
                            for e in result.terms]}
    if p is not None:
        price = {k: v for k, v in (("gte", p.min_price), ("lte", p.max_price)) if v is not None}
        filters = ([{"range": {"price": price}}] if price else []) + \
            [{"term": {"brand": p.brand}}] * (p.brand is not None) + [{"term": {"category": p.category}}] * (
                p.category is not None)
        must_not = [{"term": {"brand": b}} for b in p.exclude_brands] + \
            [{"match": {fields[0]: w}} for w in p.exclude_words]
        if filters:
            out["filter"] = filters
        if must_not:
            out["must_not"] = must_not
    return {"query": {"bool": out}}
