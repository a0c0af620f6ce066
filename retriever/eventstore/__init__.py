"""The event log: shopper events, onboarding answers and A/B impressions, behind one contract
(:class:`EventStore`). SQLite is the embedded default; :func:`open_event_store` picks the backend
from a path or URL."""

from __future__ import annotations

from pathlib import Path

from .base import EVENT_TYPES, Event, EventStore, StoredEvent, pseudonymize
from .sqlite import IMPRESSION_FLUSH_S, SQLiteEventStore


def open_event_store(where: str | Path, *, pseudonym_key: str) -> EventStore:
    """The event store at ``where``: a file path (or ``sqlite:///path``) opens SQLite."""
    text = str(where)
    if text.startswith("sqlite:///"):
        text = text[len("sqlite:///"):]
    elif "://" in text:
        raise ValueError(f"unsupported event store URL {text!r}; use a file path or sqlite:///path")
    return SQLiteEventStore(Path(text), pseudonym_key=pseudonym_key)


__all__ = ["EVENT_TYPES", "IMPRESSION_FLUSH_S", "Event", "EventStore", "SQLiteEventStore", "StoredEvent",
           "open_event_store", "pseudonymize"]
