"""What routes share: the loaded components, injected with Depends, and common parameters."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

import faiss
import numpy as np
import torch
from fastapi import Depends, HTTPException, Path, Query, Request
from starlette.convertors import Convertor, register_url_convertor

from indexer.embed import Embedder, load_embedder
from indexer.store import ItemIndex
from indexer.table import Filters
from ranker.fusion import FusionWeights
from ranker.model import Reranker
from ranker.serve import RerankConfig
from retriever.eventstore import EventStore, open_event_store
from retriever.recommend import InteractionState
from retriever.search.box import SearchBox

from .models import ItemOut, ScoredItem
from .settings import Settings


@dataclass
class Components:
    """Everything a request may need, loaded once at start-up."""

    settings: Settings
    index: ItemIndex
    embedder: Embedder
    events: EventStore | None = None
    state: InteractionState = field(default_factory=InteractionState)
    search: SearchBox | None = None  # built at start-up; routes/search.py builds it on first use otherwise
    reranker: Reranker | None = None

    @property
    def rerank_config(self) -> RerankConfig:
        r = self.settings.rerank
        return RerankConfig(top_n=r.top_n, weights=FusionWeights(r.reranker, r.retrieval, r.popularity),
                            mmr_lambda=r.mmr_lambda)


def load_components(settings: Settings) -> Components:
    """Open the index, its embedder and the event log; a missing index or a model mismatch fails
    here, at start-up, not per request."""
    # A server answers one small query per request, many at once: one FAISS thread per search is
    # ~30x faster than two threads fighting for the cores (measured: 0.8 vs 24 ms on 12k items).
    faiss.omp_set_num_threads(settings.search_threads)
    torch.set_num_threads(settings.torch_threads)  # query embedding: ~20 ms on 1 thread vs ~1 s contended
    index = ItemIndex.load(settings.index_dir, expect_model=settings.model)
    embedder = load_embedder(settings.model or index.model)
    if embedder.dim != index.dim:
        raise ValueError(f"embedder {embedder.name!r} gives {embedder.dim}-d vectors, the index in "
                         f"{settings.index_dir} holds {index.dim}-d; rebuild the index")
    # A missing or incompatible reranker is a RerankerLoadError here, before the server takes requests.
    reranker = Reranker(settings.ranker_dir, variant=settings.ranker_variant) if settings.ranker_dir else None
    index.open_log()
    from .routes.search import build_search  # here, not at the top: the routes import this module

    comps = Components(settings, index, embedder, *open_events(settings), reranker=reranker)
    comps.search = build_search(index, embedder, cache_dir=settings.index_dir / "search-cache",
                                reranker=reranker if settings.rerank.search else None,
                                weights=comps.rerank_config.weights)
    return comps


def open_events(settings: Settings) -> tuple[EventStore, InteractionState]:
    """The event log and the collaborative state replayed from it."""
    store = open_event_store(settings.db_path, pseudonym_key=settings.pseudonym_key)
    state = InteractionState()
    state.catch_up(store)
    return store, state


def candidate_counts(c: Components, labels: np.ndarray) -> np.ndarray:
    """float64 ``(len(labels),)`` interaction counts of ``labels`` (the fusion's popularity prior)."""
    with c.index.lock, c.state.lock:
        ids = [c.index.table.records[lab]["item_id"] if lab >= 0 else "" for lab in labels]
        return np.array([c.state.popular.interactions(i) for i in ids], dtype=np.float64)


def get_components(request: Request) -> Components:
    return request.app.state.components


ComponentsDep = Annotated[Components, Depends(get_components)]
ItemId = Annotated[str, Path(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$",
                             description="the shop's item id (may contain '/')")]


class ItemIdConvertor(Convertor):
    """``{item_id:item}`` in a route path: any text, slashes included, except that it does not end
    in ``/similar`` or ``/also-bought`` (those paths belong to the item's sub-routes)."""

    regex = r".+?(?<!/similar)(?<!/also-bought)"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("item", ItemIdConvertor())


def unprocessable(location: str, field: str, msg: str) -> HTTPException:
    """A 422 shaped like FastAPI's own validation errors, naming the field."""
    return HTTPException(422, detail=[{"loc": [location, field], "type": "value_error", "msg": msg}])


def get_filters(
    category: Annotated[str | None, Query(max_length=200, description="any level of the category path")] = None,
    brand: Annotated[str | None, Query(max_length=200)] = None,
    min_price: Annotated[float | None, Query(ge=0, le=1e9)] = None,
    max_price: Annotated[float | None, Query(ge=0, le=1e9)] = None,
    in_stock: Annotated[bool | None, Query()] = None,
) -> Filters:
    if min_price is not None and max_price is not None and min_price > max_price:
        raise unprocessable("query", "max_price", f"max_price ({max_price}) is below min_price ({min_price})")
    return Filters(category=category, brand=brand, min_price=min_price, max_price=max_price,
                   in_stock=in_stock)


FiltersDep = Annotated[Filters, Depends(get_filters)]


MAX_K = 100  # part of the API contract (in the OpenAPI schema), not a per-deployment setting


def get_k(k: Annotated[int, Query(ge=1, le=MAX_K, description="number of results")] = 10) -> int:
    return k


KDep = Annotated[int, Depends(get_k)]


def scored(index: ItemIndex, labels: np.ndarray, scores: np.ndarray) -> list[ScoredItem]:
    """One result row (labels, scores) as response items; -1 padding is dropped."""
    out = []
    for label, score in zip(labels, scores):
        if label < 0:
            continue
        rec = ItemOut.from_record(index.table.records[label])
        out.append(ScoredItem(item_id=rec.item_id, title=rec.title, brand=rec.brand,
                              categories=rec.categories, price=rec.price, in_stock=rec.in_stock,
                              score=round(float(score), 6)))
    return out
