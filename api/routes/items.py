"""Catalog routes: read, upsert and delete items, and similar items."""

from __future__ import annotations

import time
from dataclasses import replace

from fastapi import APIRouter, HTTPException, Response

from indexer.build import EmbedConfig, embed_chunks
from indexer.documents import review_text
from indexer.schema import make_items
from ranker.serve import Evidence, context_text, rerank_list
from retriever.similar import similar_items

from ..deps import ComponentsDep, FiltersDep, ItemId, KDep, candidate_counts, scored
from ..models import HealthOut, ItemIn, ItemOut, SimilarOut, UpsertOut
from ..security import require

router = APIRouter()


@router.get("/health", response_model=HealthOut)
def health(c: ComponentsDep) -> HealthOut:
    return HealthOut(status="ok", items=len(c.index), model=c.index.model, dim=c.index.dim,
                     index_kind=c.index.kind)


@router.get("/items/{item_id:item}", response_model=ItemOut)
def get_item(item_id: ItemId, c: ComponentsDep) -> ItemOut:
    rec = c.index.table.get(item_id)
    if rec is None:
        raise HTTPException(404, detail=f"item {item_id!r} not found")
    return ItemOut.from_record(rec)


@router.get("/items/{item_id:item}/similar", response_model=SimilarOut)
def similar(item_id: ItemId, c: ComponentsDep, filters: FiltersDep, k: KDep) -> SimilarOut:
    if c.index.table.get(item_id) is None:
        raise HTTPException(404, detail=f"item {item_id!r} not found")
    staged = c.reranker is not None and c.settings.rerank.similar
    cfg = c.rerank_config
    try:
        labels, scores = similar_items(c.index, [item_id], max(k, cfg.top_n) if staged else k, filters)
    except KeyError:  # deleted by a request racing this one
        raise HTTPException(404, detail=f"item {item_id!r} not found") from None
    labels, scores = labels[0], scores[0]
    if staged:  # the product page's item is the context: "shoppers looking at this pick ..."
        context = context_text(c.reranker, c.index, Evidence(history=[item_id]))
        labels, scores = rerank_list(c.index, labels, scores, k, reranker=c.reranker, context=context,
                                     counts=candidate_counts(c, labels),
                                     cfg=replace(cfg, mmr_lambda=1.0))  # similar should stay similar
    return SimilarOut(item_id=item_id, results=scored(c.index, labels, scores))


@router.put("/items/{item_id:item}", response_model=UpsertOut, dependencies=[require("admin")])
def put_item(item_id: ItemId, body: ItemIn, c: ComponentsDep) -> UpsertOut:
    record = body.model_dump(exclude={"reviews"})
    if record["created_at"] is None:
        record["created_at"] = time.time()  # the catalog learns of it now: it counts as new from now
    items = make_items([{"item_id": item_id, **record}])
    reviews = [[review_text(r.title, r.text) for r in body.reviews]]
    cfg = EmbedConfig(**c.index.build_info.get("embed", {}))  # embed as the catalog was embedded
    [(_, vectors)] = list(embed_chunks([(items, reviews)], c.embedder, cfg))
    created = c.index.table.get(item_id) is None
    c.index.add(items, vectors, reviews)
    return UpsertOut(item_id=item_id, created=created)


@router.delete("/items/{item_id:item}", status_code=204, dependencies=[require("admin")])
def delete_item(item_id: ItemId, c: ComponentsDep) -> Response:
    if not c.index.delete(item_id):
        raise HTTPException(404, detail=f"item {item_id!r} not found")
    return Response(status_code=204)
