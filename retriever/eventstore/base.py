"""The event store's contract: what every backend (SQLite, PostgreSQL) keeps and answers.

User ids never reach a backend in clear: every table keys users by ``user_key``, a keyed hash
(HMAC-SHA256 with a secret from the settings) of the shop's user id. Without the key, the log
cannot be joined back to people; deleting a user removes every row under their key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass

EVENT_TYPES = ("view", "click", "add_to_cart", "purchase", "rating")


@dataclass(frozen=True)
class Event:
    event_id: str
    user_id: str
    item_id: str
    type: str
    timestamp: float
    value: float | None = None
    request_id: str | None = None


@dataclass(frozen=True)
class StoredEvent:
    """An event as stored: the user is known only by ``user_key``."""

    user_key: str
    item_id: str
    type: str
    value: float | None
    ts: float
    request_id: str | None = None


@dataclass(frozen=True)
class SearchRecord:
    """One logged search: the list shown for ``query`` (``item_ids`` in rank order) under
    ``request_id``; ``user_key`` None for an anonymous shopper. ``key``: the normalised query the
    suggestions count (see ``retriever.search.suggest.key``)."""

    request_id: str
    user_key: str | None
    query: str
    key: str
    item_ids: list[str]
    ts: float
    variant: str | None = None


@dataclass(frozen=True)
class Erasure:
    """One entry of the erasure log: a user's events as they were when erased, so every process
    that counted them can take them back out. ``events``: ``(event seq, event)`` in seq order."""

    seq: int
    user_key: str
    events: list[tuple[int, StoredEvent]]


@dataclass(frozen=True)
class Changes:
    """What the log gained after a pair of cursors, read in ONE snapshot (see ``changes_after``)."""

    erasures: list[Erasure]
    events: list[tuple[int, StoredEvent]]
    erasures_pruned_through: int  # erasure log entries up to this seq are gone (past retention)


ERASURE_RETENTION_S = 3600.0  # erasure log entries (item ids, a user key, no user id) are kept this long
IMPRESSION_FLUSH_S = 0.5  # impressions are buffered this long, then written in one commit


def star_counts(values: Iterable[float]) -> tuple[list[int], float]:
    """Rating values -> (count of 1..5 stars after rounding, sum of the raw values)."""
    stars, total = [0] * 5, 0.0
    for v in values:
        stars[min(5, max(1, int(round(v)))) - 1] += 1
        total += v
    return stars, float(total)


def erased_json(events: list[tuple[int, StoredEvent]]) -> str:
    """The erasure log's text for erased events: what the counts need, no request ids."""
    return json.dumps([[seq, e.item_id, e.type, e.value, e.ts] for seq, e in events])


def erased_from_json(user_key: str, text: str) -> list[tuple[int, StoredEvent]]:
    return [(seq, StoredEvent(user_key, item, kind, value, ts)) for seq, item, kind, value, ts in json.loads(text)]


class ImpressionBuffer:
    """Rows buffered for up to ``IMPRESSION_FLUSH_S``, then handed to ``write`` together: one commit
    per batch instead of one per recommendation (impressions are never acknowledged to a client)."""

    def __init__(self, write: Callable[[list[tuple]], None]):
        self._write = write
        self._rows: list[tuple] = []
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None

    def add(self, row: tuple) -> None:
        with self._lock:
            self._rows.append(row)
            if self._timer is None:
                self._timer = threading.Timer(IMPRESSION_FLUSH_S, self.flush)
                self._timer.daemon = True
                self._timer.start()

    def flush(self) -> int:
        """Write what is buffered now. Returns how many rows."""
        with self._lock:
            rows, self._rows = self._rows, []
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        if rows:
            self._write(rows)
        return len(rows)


def pseudonymize(user_id: str, key: str) -> str:
    """Keyed hash of a user id: 32 hex chars, stable for one key, meaningless without it."""
    return hmac.new(key.encode(), user_id.encode(), hashlib.sha256).hexdigest()[:32]


class EventStore(ABC):
    """Durable, idempotent (by ``event_id``) event log with onboarding answers and A/B impressions.

    Every write is durable when the call returns; reads see every acknowledged write.
    """

    def __init__(self, pseudonym_key: str):
        if not pseudonym_key:
            raise ValueError("pseudonym_key must be a non-empty secret")
        self._key = pseudonym_key

    def user_key(self, user_id: str) -> str:
        return pseudonymize(user_id, self._key)

    @property
    @abstractmethod
    def schema_version(self) -> int: ...

    # ---- events ----------------------------------------------------------------------------------
    @abstractmethod
    def add_events(self, events: Iterable[Event]) -> list[bool]:
        """Store events in one transaction. Returns per event: True if new, False if a duplicate id."""

    @abstractmethod
    def user_events(self, user_id: str, limit: int = 200) -> list[StoredEvent]:
        """The user's most recent ``limit`` events, oldest first."""

    @abstractmethod
    def events_after(self, seq: int, limit: int = 50_000) -> list[tuple[int, StoredEvent]]:
        """Up to ``limit`` events with sequence number above ``seq``, in arrival order, with their seq."""

    @abstractmethod
    def changes_after(self, event_seq: int, erasure_seq: int, limit: int = 50_000) -> Changes:
        """Every erasure after ``erasure_seq`` and up to ``limit`` events after ``event_seq``, from one
        consistent snapshot of the log. Writers are serialised, so sequence numbers become visible
        in order: a reader that has seen seq ``n`` has seen every seq below it. With both reads in
        one snapshot, an erased event is either in ``events`` or deleted, never both or neither
        (see ``InteractionState.catch_up``)."""

    @abstractmethod
    def count_events(self) -> int: ...

    @abstractmethod
    def rating_counts(self, item_ids: Iterable[str]) -> dict[str, tuple[list[int], float]]:
        """Per item with ratings: (count of 1..5 stars after rounding, sum of the raw values)."""

    # ---- onboarding, impressions -------------------------------------------------------------------
    @abstractmethod
    def set_onboarding(self, user_id: str, interests: str, categories: list[str], liked_items: list[str]) -> None: ...

    @abstractmethod
    def onboarding(self, user_id: str) -> tuple[str, list[str], list[str]] | None: ...

    @abstractmethod
    def log_impression(self, request_id: str, user_id: str, variant: str, item_ids: list[str]) -> None:
        """Record that ``item_ids`` were shown (A/B bookkeeping; may be buffered briefly)."""

    @abstractmethod
    def flush_impressions(self) -> int: ...

    @abstractmethod
    def variant_outcomes(self) -> list[tuple[str, str, int, int, int]]:
        """Per impression: (variant, request_id, clicked, added to cart, purchased) as 0/1."""

    # ---- the search log ------------------------------------------------------------------------------
    @abstractmethod
    def log_search(self, request_id: str, user_id: str | None, query: str, key: str, item_ids: list[str],
                   variant: str | None = None) -> None:
        """Record a search and the list it showed (buffered like impressions; a request id once)."""

    @abstractmethod
    def flush_searches(self) -> int:
        """Write buffered searches now. Returns how many were buffered."""

    @abstractmethod
    def searches_after(self, seq: int, limit: int = 50_000) -> list[tuple[int, SearchRecord]]:
        """Up to ``limit`` logged searches with seq above ``seq``, oldest first, with their seq."""

    @abstractmethod
    def popular_queries(self, min_users: int, limit: int = 10_000) -> list[tuple[str, str, int]]:
        """``(key, query as first typed, distinct users)`` of the queries searched by at least
        ``min_users`` distinct identified shoppers, most users first (anonymous searches not counted)."""

    @abstractmethod
    def search_interactions(self, limit: int = 100_000) -> list[tuple[str, str, str, str]]:
        """``(query, item_id, event type, user_key)`` of the events that came from a search result
        list (the event's ``request_id`` is a logged search's and its item was in that list),
        newest first: the (query, item) pairs co-click expansion and the reranker learn from."""

    @abstractmethod
    def search_outcomes(self) -> list[tuple[str, str, int, int, int]]:
        """Per search of an identified shopper with a variant: (variant, request_id, clicked, added to
        cart, purchased) as 0/1 (the A/B report of search, shaped like ``variant_outcomes``)."""

    # ---- privacy -----------------------------------------------------------------------------------
    @abstractmethod
    def delete_user(self, user_id: str) -> list[StoredEvent]:
        """Erase the user's events, onboarding answers, impressions and searches, and append the erased
        events to the erasure log (in the same transaction; pruned after ``ERASURE_RETENTION_S``).
        Returns the erased events, in seq order."""

    @abstractmethod
    def close(self) -> None: ...
