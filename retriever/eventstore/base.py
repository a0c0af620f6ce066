"""The event store's contract: what every backend (SQLite, PostgreSQL) keeps and answers.

User ids never reach a backend in clear: every table keys users by ``user_key``, a keyed hash
(HMAC-SHA256 with a secret from the settings) of the shop's user id. Without the key, the log
cannot be joined back to people; deleting a user removes every row under their key.
"""

from __future__ import annotations

import hashlib
import hmac
from abc import ABC, abstractmethod
from collections.abc import Iterable
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

    # ---- privacy -----------------------------------------------------------------------------------
    @abstractmethod
    def delete_user(self, user_id: str) -> list[StoredEvent]:
        """Erase the user's events, onboarding answers and impressions. Returns the erased events."""

    @abstractmethod
    def close(self) -> None: ...
