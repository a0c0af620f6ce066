"""Catalog routes: read, upsert and delete items, and similar items."""

from __future__ import annotations

import time

from fastapi import APIRouter, HTTPException, Response

from indexer.build import EmbedConfig, upsert_items
from indexer.documents import review_text
from indexer.schema import make_items
from ranker import pipeline

from ..deps import ComponentsDep, FiltersDep, ItemId, KDep, scored
from ..models import AspectOut, HealthOut, ItemIn, ItemOut, SimilarOut, UpsertOut
from ..security import require

router = APIRouter()


@router.get("/health", response_model=HealthOut)
def health(c: ComponentsDep) -> HealthOut:
    return HealthOut(status="ok", items=len(c.svc.index), model=c.svc.index.model, dim=c.svc.index.dim,
                     index_kind=c.svc.index.kind)


@router.get("/items/{item_id:item}", response_model=ItemOut)
def get_item(item_id: ItemId, c: ComponentsDep) -> ItemOut:
    rec = c.svc.index.table.get(item_id)
    if rec is None:
        raise HTTPException(404, detail=f"item {item_id!r} not found")
    out = ItemOut.from_record(rec, stock_known=c.svc.index.build_info.get("stock_known", True))
    pros, cons, out.shopper_queries = pipeline.item_aspects(c.svc, item_id)
    out.pros = [AspectOut(**vars(a)) for a in pros]
    out.cons = [AspectOut(**vars(a)) for a in cons]
    return out


@router.get("/items/{item_id:item}/similar", response_model=SimilarOut)
def similar(item_id: ItemId, c: ComponentsDep, filters: FiltersDep, k: KDep) -> SimilarOut:
    try:
        ranked = pipeline.similar(c.svc, c.config(), item_id, k, filters)
    except KeyError:  # unknown, or deleted while we looked
        raise HTTPException(404, detail=f"item {item_id!r} not found") from None
    return SimilarOut(item_id=item_id, results=scored(c.svc.index, ranked.labels, ranked.scores, ranked.rules))


@router.put("/items/{item_id:item}", response_model=UpsertOut, dependencies=[require("admin")])
def put_item(item_id: ItemId, body: ItemIn, c: ComponentsDep) -> UpsertOut:
    record = body.model_dump(exclude={"reviews"})
    if record["created_at"] is None:
        record["created_at"] = time.time()  # the catalog learns of it now: it counts as new from now
    items = make_items([{"item_id": item_id, **record}])
    reviews = [[review_text(r.title, r.text) for r in body.reviews]]
    cfg = EmbedConfig(**c.svc.index.build_info.get("embed", {}))  # embed as the catalog was embedded
    created = c.svc.index.table.get(item_id) is None
    upsert_items(c.svc.index, items, reviews, c.svc.embedder, cfg)  # new reviews join the item's pooled ones
    return UpsertOut(item_id=item_id, created=created)


@router.delete("/items/{item_id:item}", status_code=204, dependencies=[require("admin")])
def delete_item(item_id: ItemId, c: ComponentsDep) -> Response:
    if not c.svc.index.delete(item_id):
        raise HTTPException(404, detail=f"item {item_id!r} not found")
    return Response(status_code=204)
