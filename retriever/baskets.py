"""Baskets: what shoppers put in one order or one shopping session, from the event log.

A basket is one shopper's ``add_to_cart`` and ``purchase`` events, each within ``gap_s`` of the one
before (an order's items arrive together; a session's carts minutes apart). Views, clicks and
ratings are not baskets: co-visitation over any few consecutive events (``retriever.covisit``)
joins a hair dryer to whatever the shopper looked at next, a basket only to what they bought with it.

``CoPurchase`` counts, per item, the baskets holding it and, per pair, the baskets holding both,
updated one event at a time; ``sign=-1`` replays events back out (erasures), as for co-visitation.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable

import numpy as np

from .eventstore import StoredEvent

BASKET_TYPES = frozenset({"add_to_cart", "purchase"})
BASKET_GAP_S = 3600.0  # an hour without a cart or purchase ends the basket


class CoPurchase:
    def __init__(self, gap_s: float = BASKET_GAP_S):
        self.gap_s = gap_s
        self.pairs: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.baskets: dict[str, float] = defaultdict(float)  # item -> baskets holding it
        self._open: dict[str, tuple[float, set[str]]] = {}  # user key -> (latest ts, items of the open basket)

    def add(self, events: Iterable[StoredEvent], sign: float = 1.0) -> None:
        """Count events (each user's in time order); ``sign=-1`` takes them back out."""
        for e in events:
            if e.type not in BASKET_TYPES:
                continue
            last = self._open.get(e.user_key)
            basket = last[1] if last is not None and abs(e.ts - last[0]) <= self.gap_s else set()
            if e.item_id not in basket:
                for other in basket:
                    self._bump(e.item_id, other, sign)
                    self._bump(other, e.item_id, sign)
                self.baskets[e.item_id] += sign
                if self.baskets[e.item_id] <= 1e-9:
                    del self.baskets[e.item_id]
                basket.add(e.item_id)
            self._open[e.user_key] = (e.ts, basket)

    def _bump(self, a: str, b: str, w: float) -> None:
        row = self.pairs[a]
        row[b] += w
        if row[b] <= 1e-9:
            del row[b]
            if not row:
                del self.pairs[a]

    def forget_user(self, user_key: str) -> None:
        self._open.pop(user_key, None)

    def neighbours(self, item_id: str, n: int, min_baskets: int = 1, keep: Callable[[str], bool] | None = None
                   ) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Items bought with ``item_id`` -> ``(item_ids, confidence float32, baskets int64)``, best
        first: confidence = baskets with both / baskets with ``item_id`` (the share of its baskets
        that held the other), ties by more baskets, then id. Pairs in fewer than ``min_baskets``
        baskets, and items ``keep`` rejects, are left out."""
        total = self.baskets.get(item_id, 0.0)
        row = self.pairs.get(item_id, {})
        found = [(other, c) for other, c in row.items() if c >= min_baskets and (keep is None or keep(other))]
        found.sort(key=lambda kv: (-kv[1], kv[0]))
        found = found[:n]
        conf = np.array([c / total for _, c in found], dtype=np.float32) if total > 0 else np.zeros(0, np.float32)
        return [o for o, _ in found], conf, np.array([round(c) for _, c in found], dtype=np.int64)
