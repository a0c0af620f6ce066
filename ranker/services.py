"""The stores and models one pipeline call needs, opened once: the item index and its embedder,
the event log and what it taught (``InteractionState``), the reranker and the search box.

The service opens them from its settings (``api.deps``), the CLI from its options, the evaluation
harness from a dataset replayed through a temporary event log: the same objects, so the same code
runs behind every caller.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import faiss

from indexer.embed import Embedder, load_embedder
from indexer.store import ItemIndex
from retriever.ease import EASEModel
from retriever.encoder import HistoryEncoder
from retriever.eventstore import EventStore, open_event_store
from retriever.mf import MFModel
from retriever.search import SearchBox, SearchConfig
from retriever.search import learned as search_learned
from retriever.search.enrich import EnrichConfig
from retriever.search.learned import SearchRanking
from retriever.state import InteractionState

from .ltr import RankingModel
from .model import Reranker
from .rerank import FusionWeights, query_rerank_hook
from .rules import RuleBook
from .versions import version_dirs

log = logging.getLogger(__name__)


@dataclass
class Services:
    """``embedder`` may be None where nothing is embedded (similar items alone). The learned parts
    (``mf``, ``encoder``, ``ease``, ``ranking``, ``reranker``) are optional: without them the pipeline runs
    on the untrained sources and their fusion. ``rules``: the merchandising rules in force (None:
    none; ``ranker.rules``)."""

    index: ItemIndex
    embedder: Embedder | None
    events: EventStore | None = None
    state: InteractionState | None = None
    reranker: Reranker | None = None
    search: SearchBox | None = None
    mf: MFModel | None = None
    encoder: HistoryEncoder | None = None
    ranking: RankingModel | None = None
    ease: EASEModel | None = None
    rules: RuleBook | None = None
    models_path: Path | None = None  # the model version the learned parts came from

    def __post_init__(self) -> None:
        if self.state is None:
            self.state = InteractionState()


def open_index(index_dir: str | Path, model: str | None = None) -> tuple[ItemIndex, Embedder]:
    """The index in ``index_dir`` and the embedder it was built with (or ``model``, which must give
    vectors of the index's dimension). FileNotFoundError / IndexMismatchError say what is wrong."""
    index = ItemIndex.load(index_dir, expect_model=model)
    embedder = load_embedder(model or index.model)
    if embedder.dim != index.dim:
        raise ValueError(f"embedder {embedder.name!r} gives {embedder.dim}-d vectors, the index in "
                         f"{index_dir} holds {index.dim}-d; rebuild the index")
    return index, embedder


def open_events(where: str | Path, pseudonym_key: str, half_lives_days=(30.0, 1.0)
                ) -> tuple[EventStore, InteractionState]:
    """The event log and the collaborative state replayed from it."""
    store = open_event_store(where, pseudonym_key=pseudonym_key)
    state = InteractionState(half_lives_days)
    state.catch_up(store)
    return store, state


def build_search(index: ItemIndex, embedder: Embedder, config: SearchConfig, *, llm: str | None = None,
                 vocab_cache_dir: str | Path | None = None, reranker: Reranker | None = None,
                 weights: FusionWeights = FusionWeights(), min_query_users: int = 3,
                 index_dir: str | Path | None = None, enrich: EnrichConfig | None = None,
                 ranking_dir: str | Path | None = None) -> SearchBox:
    """The search box for ``index``; ``reranker`` reorders the fused top ``config.rerank_depth``;
    ``min_query_users``: distinct sources a past query needs before it is suggested; ``index_dir``'s
    enrichment (if any) joins the lexical documents, kept up to date on upserts with ``enrich``;
    ``ranking_dir``: a learned search ranking (:func:`load_search_ranking`) in place of the fusion."""
    box = SearchBox.build(index, embedder, config=config, llm=llm or None, vocab_cache_dir=vocab_cache_dir,
                          min_query_users=min_query_users, index_dir=index_dir, enrich=enrich)
    if reranker is not None:
        box.engine.rerank = query_rerank_hook(reranker, index, weights)
    if ranking_dir is not None:
        box.engine.ranking = load_search_ranking(ranking_dir)
    return box


def load_search_ranking(path: str | Path) -> SearchRanking:
    """The learned search ranking in ``path`` (``python -m evaluation.search_ltr --out``), or in its
    newest ``vNNNN`` version; a ValueError names the path and what is wrong."""
    p = Path(path)
    if not (p / search_learned.META_FILE).is_file():
        versions = version_dirs(p) if p.is_dir() else []
        if not versions:
            raise ValueError(f"search ranking at {p}: no {search_learned.META_FILE} and no vNNNN versions inside; "
                             "fit one with python -m evaluation.search_ltr --out DIR")
        p = versions[-1]
    return SearchRanking.load(p)


def set_threads(search_threads: int, torch_threads: int) -> None:
    """A server answers one small query per request, many at once: one FAISS thread per search is
    ~30x faster than two threads fighting for the cores (measured: 0.8 vs 24 ms on 12k items), one
    torch thread per query embedding (~20 ms vs ~1 s contended), and one BLAS thread for the small
    solves and products of MF fold-in (a batch of 64 solves 128x128: 4.3 s on OpenBLAS's two
    threads on a loaded box, 0.04 s on one)."""
    import torch
    from threadpoolctl import threadpool_limits

    faiss.omp_set_num_threads(search_threads)
    torch.set_num_threads(torch_threads)
    threadpool_limits(1, "blas")  # process-wide from here on (not used as a context manager)
