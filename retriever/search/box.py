"""Everything behind the search box, built once per index: the search engine, completions and the
log of past queries. Personalisation and reranking are wired by ``ranker`` (the engine's hooks)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from indexer.embed import Embedder
from indexer.store import ItemIndex

from .engine import SearchConfig, SearchEngine
from .enrich import BackgroundEnricher, EnrichConfig, EnrichedText, EnrichmentStore
from .expand import QueryExpander
from .llm import DEFAULT_CACHE, LLMExpander, TextGenerator, load_generator
from .parse import QueryParser
from .suggest import QueryLog, Suggester

log = logging.getLogger(__name__)


@dataclass
class SearchBox:
    """The engine, its suggester and query log, the query parser (and, while it loads, the LLM
    loader thread)."""

    engine: SearchEngine
    suggester: Suggester
    queries: QueryLog
    llm_loading: threading.Thread | None = field(default=None, repr=False)
    parser: QueryParser | None = None
    expander: QueryExpander | None = None
    enrichment: EnrichmentStore | None = None
    enricher: BackgroundEnricher | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._sync_lock = threading.Lock()
        self._synced_at = -float("inf")
        self._syncing: threading.Thread | None = None
        if self.parser is None:
            self.parser = QueryParser(self.engine.index)
        if self.expander is None:
            self.expander = QueryExpander(self.engine, self.parser)

    @classmethod
    def build(cls, index: ItemIndex, embedder: Embedder, *, config: SearchConfig | None = None,
              llm: str | None = None, llm_cache_dir: str | Path | None = DEFAULT_CACHE,
              vocab_cache_dir: str | Path | None = None, max_logged_queries: int = 10_000,
              min_query_users: int = 3, index_dir: str | Path | None = None,
              enrich: EnrichConfig | None = None, generator: Callable[[], TextGenerator] | None = None) -> SearchBox:
        """Build the search box for ``index``. ``llm``: generator name (e.g. "smollm2") or None.

        ``min_query_users``: distinct shoppers (or clients) a past query needs before it is suggested.
        The LLM loads in a background thread (seconds from its cache, ~40 s the first time): until
        it is ready, searches run without it and report ``llm_status`` "unavailable".
        ``index_dir`` holding an ``enrichment.json`` (``semrec enrich``): its synthetic queries join
        the lexical documents, and with ``enrich`` upserted items are enriched in the background
        (their lexical text refreshed and the file saved when done) by ``generator()`` (default: the
        ``enrich.model`` generator, loaded at the first upsert).
        """
        store = EnrichmentStore.load(index_dir, cache_dir=llm_cache_dir) if index_dir is not None else None
        enriched = store is not None and store.items
        engine = SearchEngine.build(index, embedder, config=config, cache_dir=vocab_cache_dir,
                                    extra_text=EnrichedText(store) if enriched else None)
        queries = QueryLog(max_logged_queries)
        box = cls(engine, Suggester(index, queries, min_query_users=min_query_users), queries, enrichment=store)
        if enriched and enrich is not None:
            def done(ids: list[str]) -> None:
                engine.lexical.refresh(ids)
                store.save(index_dir)

            load = generator or (lambda: load_generator(enrich.model, cache_dir=llm_cache_dir))
            box.enricher = BackgroundEnricher(index, store, load, enrich, on_done=done)
        if llm:
            box.llm_loading = threading.Thread(target=box._load_llm, args=(llm, llm_cache_dir),
                                               name="llm-load", daemon=True)
            box.llm_loading.start()
        return box

    def sync_queries(self, store, every_s: float = 30.0, *, wait: bool = False) -> None:
        """Reload the popular-query counts and the co-click table from the search log of ``store`` (an
        ``EventStore``): in a
        background thread, at most once per ``every_s`` seconds; ``wait``: now, in this thread (after
        an erasure, so the erased shopper's queries stop counting before the call returns)."""
        def load() -> None:
            self.queries.replace(store.popular_queries(self.suggester.min_query_users))
            self.expander.coclicks.load(store.search_interactions(), self.engine.embedder)

        if wait:
            running = self._syncing
            if running is not None:
                running.join()
            self._synced_at = time.monotonic()
            load()
            return
        with self._sync_lock:
            now = time.monotonic()
            if now - self._synced_at < every_s or (self._syncing is not None and self._syncing.is_alive()):
                return
            self._synced_at = now
            self._syncing = threading.Thread(target=load, name="query-log-sync", daemon=True)
            self._syncing.start()

    def clicked(self, query: str, query_vec: np.ndarray, cfg: SearchConfig) -> dict[int, float]:
        """Label -> click weight of the items shoppers acted on after ``query`` or the logged
        queries nearest it (``cfg.click_queries`` / ``click_min_cos``); items no longer in the
        index are left out."""
        items = self.expander.coclicks.neighbours(query, query_vec, cfg.click_queries, cfg.click_min_cos)
        index = self.engine.index
        with index.lock:
            labels = [(index.table.label_of.get(i), w) for i, w in items.items()]
        return {int(lb): float(w) for lb, w in labels if lb is not None}

    def forget(self, source: str) -> None:
        """An erased shopper (``source``: their event-log key) leaves the query log at once; the
        store's counts, which may hold them, are reloaded at the next search."""
        self.queries.forget(source)
        self._synced_at = -float("inf")

    def _load_llm(self, name: str, cache_dir: str | Path | None) -> None:
        try:
            generator = load_generator(name, cache_dir=cache_dir)
        except (OSError, ImportError, ValueError) as e:
            # A missing or broken model must not take search down: it runs without LLM terms.
            log.error("LLM %r could not be loaded; search continues without LLM expansion: %s", name, e)
            return
        vocab = self.engine.vocabulary
        if vocab is not None:
            self.engine.llm = LLMExpander(generator, vocab.ground, budget_s=self.engine.config.llm_budget_s)
