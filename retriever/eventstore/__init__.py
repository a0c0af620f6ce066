"""The event log: shopper events, onboarding answers and A/B impressions, behind one contract
(:class:`EventStore`). SQLite is the embedded default; :func:`open_event_store` picks the backend
from a path or URL."""

from __future__ import annotations

from pathlib import Path

from .base import (
    EVENT_TYPES,
    IMPRESSION_FLUSH_S,
    Changes,
    Erasure,
    Event,
    EventStore,
    SearchRecord,
    StoredEvent,
    pseudonymize,
)
from .sqlite import SQLiteEventStore


def open_event_store(where: str | Path, *, pseudonym_key: str) -> EventStore:
    """The event store at ``where``: a file path (or ``sqlite:///path``) opens SQLite,
    ``postgresql://...`` (or ``postgres://``) a PostgreSQL database (psycopg 3, a connection pool)."""
    text = str(where)
    if text.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresEventStore  # psycopg is only needed when PostgreSQL is used

        return PostgresEventStore(text, pseudonym_key=pseudonym_key)
    if text.startswith("sqlite:///"):
        text = text[len("sqlite:///"):]
    elif "://" in text:
        raise ValueError(f"unsupported event store URL {text!r}; use a file path, sqlite:///path or "
                         "postgresql://user@host/db")
    return SQLiteEventStore(Path(text), pseudonym_key=pseudonym_key)


__all__ = ["EVENT_TYPES", "IMPRESSION_FLUSH_S", "Changes", "Erasure", "Event", "EventStore", "SQLiteEventStore",
           "SearchRecord", "StoredEvent", "open_event_store", "pseudonymize"]
