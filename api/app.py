"""The HTTP API. Routes validate, call the library, and shape the response; nothing else."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request, Response
from fastapi.responses import JSONResponse

from indexer.build import EmbedConfig, embed_chunks
from indexer.documents import review_text
from indexer.embed import Embedder, load_embedder
from indexer.schema import make_items
from indexer.store import ItemIndex
from indexer.table import Filters
from retriever.search import dense_search
from retriever.similar import similar_items

from .models import HealthOut, ItemIn, ItemOut, ScoredItem, SearchOut, SimilarOut, UpsertOut
from .settings import Settings


@dataclass
class Components:
    settings: Settings
    index: ItemIndex
    embedder: Embedder


def load_components(settings: Settings) -> Components:
    """Open the index and its embedder; a missing index or a model mismatch fails here, at start-up."""
    index = ItemIndex.load(settings.index_dir, expect_model=settings.model)
    embedder = load_embedder(settings.model or index.model)
    if embedder.dim != index.dim:
        raise ValueError(f"embedder {embedder.name!r} gives {embedder.dim}-d vectors, the index in "
                         f"{settings.index_dir} holds {index.dim}-d; rebuild the index")
    index.open_log()
    return Components(settings, index, embedder)


def get_components(request: Request) -> Components:
    return request.app.state.components


ComponentsDep = Annotated[Components, Depends(get_components)]
ItemId = Annotated[str, Path(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$",
                             description="the shop's item id")]


def get_filters(
    category: Annotated[str | None, Query(max_length=200, description="any level of the category path")] = None,
    brand: Annotated[str | None, Query(max_length=200)] = None,
    min_price: Annotated[float | None, Query(ge=0, le=1e9)] = None,
    max_price: Annotated[float | None, Query(ge=0, le=1e9)] = None,
    in_stock: Annotated[bool | None, Query()] = None,
) -> Filters:
    if min_price is not None and max_price is not None and min_price > max_price:
        raise HTTPException(422, detail=[{"loc": ["query", "max_price"], "type": "value_error",
                                          "msg": f"max_price ({max_price}) is below min_price ({min_price})"}])
    return Filters(category=category, brand=brand, min_price=min_price, max_price=max_price,
                   in_stock=in_stock)


FiltersDep = Annotated[Filters, Depends(get_filters)]


def check_k(c: Components, k: int) -> int:
    if k > c.settings.max_k:
        raise HTTPException(422, detail=[{"loc": ["query", "k"], "type": "less_than_equal",
                                          "msg": f"k must be at most {c.settings.max_k}"}])
    return k


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


def create_app(settings: Settings | None = None, components: Components | None = None) -> FastAPI:
    """The app. Pass ``components`` to serve an index already in memory (tests, the demo)."""
    settings = settings or (components.settings if components else Settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.components = components or load_components(settings)
        yield

    app = FastAPI(title="semrec", version="0.1.0", lifespan=lifespan,
                  description="Semantic recommendations for e-commerce: similar items, search, catalog updates.")

    @app.middleware("http")
    async def limit_body(request: Request, call_next):
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > settings.max_body_bytes):
            return JSONResponse(status_code=413, content={
                "detail": f"request body must be at most {settings.max_body_bytes} bytes"})
        return await call_next(request)

    @app.get("/health", response_model=HealthOut)
    def health(c: ComponentsDep) -> HealthOut:
        return HealthOut(status="ok", items=len(c.index), model=c.index.model, dim=c.index.dim,
                         index_kind=c.index.kind)

    @app.get("/items/{item_id}", response_model=ItemOut)
    def get_item(item_id: ItemId, c: ComponentsDep) -> ItemOut:
        rec = c.index.table.get(item_id)
        if rec is None:
            raise HTTPException(404, detail=f"item {item_id!r} not found")
        return ItemOut.from_record(rec)

    @app.get("/items/{item_id}/similar", response_model=SimilarOut)
    def similar(item_id: ItemId, c: ComponentsDep, filters: FiltersDep,
                k: Annotated[int, Query(ge=1, description="number of results")] = 10) -> SimilarOut:
        k = check_k(c, k)
        if c.index.table.get(item_id) is None:
            raise HTTPException(404, detail=f"item {item_id!r} not found")
        labels, scores = similar_items(c.index, [item_id], k, filters)
        return SimilarOut(item_id=item_id, results=scored(c.index, labels[0], scores[0]))

    @app.get("/search", response_model=SearchOut)
    def search(c: ComponentsDep, filters: FiltersDep,
               q: Annotated[str, Query(min_length=1, max_length=500, description="what the shopper typed")],
               k: Annotated[int, Query(ge=1)] = 10) -> SearchOut:
        k = check_k(c, k)
        if not q.strip() or any(ord(ch) < 32 and ch not in "\t\n\r" for ch in q):
            raise HTTPException(422, detail=[{"loc": ["query", "q"], "type": "value_error",
                                              "msg": "q must be printable text with at least one non-blank character"}])
        labels, scores = dense_search(c.index, c.embedder, [q], k, filters)
        return SearchOut(query=q, results=scored(c.index, labels[0], scores[0]))

    @app.put("/items/{item_id}", response_model=UpsertOut)
    def put_item(item_id: ItemId, body: ItemIn, c: ComponentsDep) -> UpsertOut:
        record = body.model_dump(exclude={"reviews"})
        items = make_items([{"item_id": item_id, **record}])
        reviews = [[review_text(r.title, r.text) for r in body.reviews]]
        cfg = EmbedConfig(**c.index.build_info.get("embed", {}))  # embed as the catalog was embedded
        [(_, vectors)] = list(embed_chunks([(items, reviews)], c.embedder, cfg))
        created = c.index.table.get(item_id) is None
        c.index.add(items, vectors)
        return UpsertOut(item_id=item_id, created=created)

    @app.delete("/items/{item_id}", status_code=204)
    def delete_item(item_id: ItemId, c: ComponentsDep) -> Response:
        if not c.index.delete(item_id):
            raise HTTPException(404, detail=f"item {item_id!r} not found")
        return Response(status_code=204)

    return app
