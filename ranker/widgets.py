"""The storefront's widgets, each one pipeline function (called by the routes and by tests), each
ending with its placement's merchandising rules (``ranker.rules``):

    also_bought(svc, cfg, item_id, k)        "customers also bought": items in baskets with it
    bought_together(svc, cfg, item_id, k)    "frequently bought together": a bundle to buy at once
    trending(svc, cfg, k, category)          what shoppers turn to now, in one category
    recently_viewed(svc, user_id, k)         the shopper's own latest views

Baskets are a shopper's carts and purchases of one order or session (``retriever.baskets``), not
any few consecutive events: a hair dryer's "also bought" is what was bought with it. "Also bought"
lists every item that shared a basket, by the share of the item's baskets it was in; "bought
together" keeps the items bought with it in at least ``MIN_BUNDLE_BASKETS`` baskets, one per leaf
category and none of the item's own (a dryer's bundle is a brush and a spray, not another dryer),
in stock: a bundle the shopper can put in the cart now.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np

from indexer.table import Filters
from retriever.candidates import allowed_mask

from .pipeline import PipelineConfig, stock_filter
from .rules import Ranked, apply_to, depths, enough, live_rules
from .services import Services

MIN_BUNDLE_BASKETS = 2
RECENT_TYPES = ("view", "click")


def _basket_run(svc: Services, item_id: str, depth: int, allowed: np.ndarray, min_baskets: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Co-purchased items of ``item_id`` passing ``allowed`` -> (labels, confidence, baskets), best first."""
    index = svc.index

    def ok(other: str) -> bool:
        label = index.table.label_of.get(other)
        return label is not None and bool(allowed[label])

    with svc.state.lock:
        ids, conf, baskets = svc.state.baskets.neighbours(item_id, depth, min_baskets, ok)
    labels = np.array([index.table.label_of[i] for i in ids], dtype=np.int64)
    return labels, conf, baskets


def _without_item(svc: Services, item_id: str, filters: Filters | None) -> np.ndarray:
    """Live items passing ``filters``, without ``item_id`` and its other listings. KeyError: unknown id."""
    with svc.index.lock:
        label = svc.index.table.label_of[item_id]
        allowed = allowed_mask(svc.index, filters, frozenset({item_id}))
        allowed[svc.index.table.duplicates_of(label)] = False
    return allowed


def also_bought(svc: Services, cfg: PipelineConfig, item_id: str, k: int, filters: Filters | None = None,
                now: float | None = None) -> Ranked:
    """Items in baskets with ``item_id``, by the share of its baskets they were in (float32
    scores in (0, 1]); in stock when ``cfg.in_stock_only``. Empty until someone bought it with
    something. KeyError for an unknown id."""
    rules = live_rules(svc.rules, "also_bought", cfg.variant, cfg.merchandising, time.time() if now is None else now)
    allowed = _without_item(svc, item_id, stock_filter(cfg, filters))
    for depth in depths(rules, k):
        labels, conf, _ = _basket_run(svc, item_id, depth, allowed, 1)
        out = apply_to(svc.index, labels, conf, rules, k, allowed)
        if enough(out.labels, k, labels, depth):
            break
    return out


@dataclass
class Bundle:
    """``item_id`` and what to buy with it: ``companions`` (a :class:`Ranked`, scores = share of its
    baskets), ``baskets`` per companion, ``total_price`` of all of them (None: a price unknown)."""

    item_id: str
    companions: Ranked
    baskets: list[int]
    total_price: float | None


def bought_together(svc: Services, cfg: PipelineConfig, item_id: str, k: int = 2, now: float | None = None
                    ) -> Bundle:
    """Up to ``k`` companions for ``item_id`` (see the module docstring). KeyError for an unknown id."""
    rules = live_rules(svc.rules, "bought_together", cfg.variant, cfg.merchandising,
                       time.time() if now is None else now)
    allowed = _without_item(svc, item_id, Filters(in_stock=True))
    labels, conf, baskets = _basket_run(svc, item_id, 50, allowed, MIN_BUNDLE_BASKETS)
    table = svc.index.table
    with svc.index.lock:
        own = tuple(table.get(item_id)["categories"])
        pick = [j for j, lab in enumerate(labels.tolist()) if not own or tuple(table.records[lab]["categories"]) != own]
    ranked = apply_to(svc.index, labels[pick], conf[pick], rules, k, allowed)
    count = dict(zip(labels.tolist(), baskets.tolist()))
    with svc.index.lock:
        prices = [table.get(item_id)["price"], *(table.records[lab]["price"] for lab in ranked.labels if lab >= 0)]
    total = None if any(p is None or p != p for p in prices) else round(float(sum(prices)), 2)
    return Bundle(item_id, ranked, [count.get(int(lab), 0) for lab in ranked.labels if lab >= 0], total)


def trending(svc: Services, cfg: PipelineConfig, k: int, category: str | None = None, filters: Filters | None = None,
             now: float | None = None) -> Ranked:
    """The most trending items (decayed popularity over ``cfg.candidates.trending_days``; best = 1)
    in ``category`` (any level; None: the whole shop), in stock when ``cfg.in_stock_only``."""
    rules = live_rules(svc.rules, "trending", cfg.variant, cfg.merchandising, time.time() if now is None else now)
    base = stock_filter(cfg, filters) or Filters()
    if category is not None:
        base = replace(base, category=category)
    index = svc.index
    with index.lock:
        allowed = index.table.mask(base)

    def ok(item: str) -> bool:
        label = index.table.label_of.get(item)
        return label is not None and bool(allowed[label])

    for depth in depths(rules, k):
        with svc.state.lock:
            ids, scores = svc.state.counter(cfg.candidates.trending_days).top(depth, ok)
        labels = np.array([index.table.label_of[i] for i in ids], dtype=np.int64)
        out = apply_to(index, labels, scores, rules, k, allowed)
        if enough(out.labels, k, labels, depth):
            break
    return out


def recently_viewed(svc: Services, user_id: str, k: int) -> list[tuple[str, float]]:
    """The shopper's latest ``k`` distinct viewed or clicked items still in the catalog, newest
    first, each with the time of its latest view (unix seconds). No rules: it is their own history."""
    if svc.events is None:
        raise ValueError("recently viewed items need an event store")
    out: dict[str, float] = {}
    for e in reversed(svc.events.user_events(user_id, 200)):
        if e.type in RECENT_TYPES and e.item_id not in out and svc.index.table.get(e.item_id) is not None:
            out[e.item_id] = e.ts
            if len(out) == k:
                break
    return list(out.items())
