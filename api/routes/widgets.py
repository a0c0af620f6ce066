"""The storefront's widgets (``ranker.widgets``): customers also bought and frequently bought
together (from baskets: carts and purchases of one order or session), trending per category, and
a shopper's recently viewed items. Each handler validates, calls the pipeline and shapes the answer."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, Field

from ranker import widgets
from ranker.rules import Ranked

from ..deps import Components, ComponentsDep, FiltersDep, ItemId, KDep, scored, unprocessable
from ..models import ScoredItem
from ..security import require_shopper
from .users import UserId

router = APIRouter()


class BasketItem(ScoredItem):
    score: float = Field(description="share of this item's baskets that also held the result, in (0, 1]")


class AlsoBoughtOut(BaseModel):
    item_id: str
    results: list[BasketItem]


class BundleItem(BasketItem):
    baskets: int = Field(description="baskets that held both")


class BoughtTogetherOut(BaseModel):
    item_id: str
    results: list[BundleItem] = Field(description="what to buy with it: in stock, one per category, none of the "
                                                  "item's own category, each bought with it in 2+ baskets")
    total_price: float | None = Field(description="the item and every result together; null when a price is unknown")


class TrendingOut(BaseModel):
    category: str | None
    results: list[ScoredItem]


class ViewedItem(ScoredItem):
    viewed_at: float = Field(description="unix seconds of the shopper's latest view")
    score: float = Field(0.0, description="not a score: 0 (the list is newest first)")


class RecentlyViewedOut(BaseModel):
    user_id: str
    results: list[ViewedItem] = Field(description="newest first, one per item, items still in the catalog")


def _known(c: Components, item_id: str) -> None:
    if c.svc.index.table.get(item_id) is None:
        raise HTTPException(404, detail=f"item {item_id!r} not found")


def _items(c: Components, ranked: Ranked, cls=BasketItem, **extra) -> list:
    rows = scored(c.svc.index, ranked.labels, ranked.scores, ranked.rules)
    return [cls(**row.model_dump(), **{k: v[n] for k, v in extra.items()}) for n, row in enumerate(rows)]


@router.get("/items/{item_id:item}/also-bought", response_model=AlsoBoughtOut)
def also_bought(item_id: ItemId, c: ComponentsDep, filters: FiltersDep, k: KDep) -> AlsoBoughtOut:
    """Items bought in the same order or session as this one, the most frequent first. Empty until
    someone bought it with something."""
    _known(c, item_id)
    try:
        ranked = widgets.also_bought(c.svc, c.config(), item_id, k, filters)
    except KeyError:  # deleted while we looked
        raise HTTPException(404, detail=f"item {item_id!r} not found") from None
    return AlsoBoughtOut(item_id=item_id, results=_items(c, ranked))


@router.get("/items/{item_id:item}/bought-together", response_model=BoughtTogetherOut)
def bought_together(item_id: ItemId, c: ComponentsDep,
                    k: Annotated[int, Query(ge=1, le=5, description="companions at most")] = 2) -> BoughtTogetherOut:
    """Frequently bought together: a bundle of this item and up to ``k`` others to buy at once."""
    _known(c, item_id)
    try:
        bundle = widgets.bought_together(c.svc, c.config(), item_id, k)
    except KeyError:
        raise HTTPException(404, detail=f"item {item_id!r} not found") from None
    return BoughtTogetherOut(item_id=item_id, results=_items(c, bundle.companions, BundleItem, baskets=bundle.baskets),
                             total_price=bundle.total_price)


@router.get("/trending", response_model=TrendingOut)
def trending(c: ComponentsDep, filters: FiltersDep, k: KDep) -> TrendingOut:
    """What shoppers turn to now (decayed popularity over about a day, best = 1), in the
    ``category`` filter when given (any level)."""
    if filters.category is not None and not c.svc.index.table.mask(filters).any():
        raise unprocessable("query", "category", f"no items in category {filters.category!r}")
    ranked = widgets.trending(c.svc, c.config(), k, filters.category, filters)
    return TrendingOut(category=filters.category, results=scored(c.svc.index, ranked.labels, ranked.scores,
                                                                 ranked.rules))


@router.get("/users/{user_id}/recently-viewed", response_model=RecentlyViewedOut, dependencies=[require_shopper()])
def recently_viewed(user_id: UserId, c: ComponentsDep, k: KDep) -> RecentlyViewedOut:
    """The shopper's latest viewed or clicked items, newest first. An id with no views answers an
    empty list."""
    if c.svc.events is None:
        raise HTTPException(503, detail="this server runs without an event log")
    seen = widgets.recently_viewed(c.svc, user_id, k)
    labels = [c.svc.index.table.label_of.get(i) for i, _ in seen]
    kept = [(lab, ts) for lab, ts in zip(labels, (t for _, t in seen)) if lab is not None]
    rows = scored(c.svc.index, np.array([lab for lab, _ in kept], dtype=np.int64), np.zeros(len(kept), np.float32))
    return RecentlyViewedOut(user_id=user_id, results=[ViewedItem(**r.model_dump(), viewed_at=ts)
                                                       for r, (_, ts) in zip(rows, kept)])
