"""Orders as events: a shop's order history (one JSON object per line: ``order_id``, ``user_id``,
``timestamp`` in unix seconds, ``items``: item ids) becomes one ``purchase`` event per item, the
items of one order ``ITEM_GAP_S`` apart, so each order is one basket (``retriever.baskets``).

Event ids are ``import:{source}:{order_id}:{item_id}``: importing twice stores nothing twice.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from .eventstore import Event, EventStore

ITEM_GAP_S = 20.0


class OrdersFormatError(ValueError):
    """A line of an orders file that is not an order; the message names the file, line and field."""


def read_orders(path: str | Path, source: str) -> Iterator[Event]:
    """The purchase events of every order in ``path`` (JSON lines), in file order."""
    path = Path(path)
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                order = json.loads(line)
                oid, user, ts, items = order["order_id"], order["user_id"], float(order["timestamp"]), order["items"]
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                raise OrdersFormatError(f"{path}:{n}: not an order with order_id, user_id, timestamp and items "
                                        f"({type(e).__name__}: {e})") from None
            if not isinstance(items, list) or not all(isinstance(i, str) and i for i in items):
                raise OrdersFormatError(f"{path}:{n}: items must be a list of item ids")
            for j, item in enumerate(dict.fromkeys(items)):
                yield Event(f"import:{source}:{oid}:{item}", str(user), item, "purchase", ts + j * ITEM_GAP_S)


def import_orders(store: EventStore, path: str | Path, source: str) -> tuple[int, int]:
    """Store the purchases of every order in ``path``. Returns ``(events read, newly stored)``."""
    events = sorted(read_orders(path, source), key=lambda e: e.timestamp)  # the log replays in arrival order
    return len(events), sum(store.add_events(events))
