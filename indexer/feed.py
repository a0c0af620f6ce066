"""Catalog feeds: how the upserts and deletes one server process acknowledges reach the others.

By default each process appends to the index's own write-ahead log (``wal.jsonl``, in
``ItemIndex``) and follows the others' entries from that file, which needs a shared disk. With a
shared store, a :class:`CatalogFeed` carries them instead: ``PostgresCatalogFeed`` keeps an ordered
change log in the same database as the events (``SEMREC_DB_URL``), so workers on several machines
see each other's catalog writes.

Every process applies the entries in feed order, its own included (``append`` hands back the
others' entries that precede it, to apply first), so all processes that started from one snapshot
give every item the same label: a vector store shared by those processes (a Milvus server) can be
keyed by label.

A snapshot is tied to a position: entries up to it are in the snapshot. The first process that
opens a snapshot records the feed's head for it (``start``); ``ItemIndex.save`` records its own.
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod

from .postgres import connect_pool, migrate

CATALOG_LOCK = 7_301_002  # pg_advisory_xact_lock key: appends commit in position order

MIGRATIONS: list[str] = [
    # 1: the change log and the position of each snapshot in it
    """
    CREATE TABLE catalog_log (
        seq BIGSERIAL PRIMARY KEY,
        entry TEXT NOT NULL,
        at DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE catalog_snapshots (
        snapshot_id TEXT PRIMARY KEY,
        position BIGINT NOT NULL,
        at DOUBLE PRECISION NOT NULL
    );
    """,
]


class CatalogFeed(ABC):
    """An ordered, durable log of catalog changes (ItemIndex's log entries: JSON-able dicts)."""

    @abstractmethod
    def start(self, snapshot_id: str) -> int:
        """The position that snapshot ``snapshot_id`` holds everything up to (the feed's head, the
        first time a snapshot is seen)."""

    @abstractmethod
    def append(self, entry: dict, after: int) -> tuple[int, list[tuple[int, dict]]]:
        """Durably append ``entry``. Returns its position and the entries between ``after`` and it,
        which the caller applies before its own."""

    @abstractmethod
    def read_after(self, position: int, limit: int = 1000) -> list[tuple[int, dict]]:
        """Up to ``limit`` entries after ``position``, in order, with their positions."""

    @abstractmethod
    def mark_snapshot(self, snapshot_id: str, position: int) -> None:
        """Record that snapshot ``snapshot_id`` holds every entry up to ``position``."""

    @abstractmethod
    def close(self) -> None:
        """Release connections."""


class PostgresCatalogFeed(CatalogFeed):
    """The catalog feed as a PostgreSQL table. Appends take an advisory lock, so positions commit
    in order and a reader that sees position ``n`` has seen all below it."""

    def __init__(self, url: str, pool_size: int = 2, timeout_s: float = 10.0):
        self._pool = connect_pool(url, pool_size, "semrec-catalog", timeout_s)
        migrate(self._pool, MIGRATIONS, "catalog_schema_version", "catalog feed")

    def start(self, snapshot_id: str) -> int:
        with self._pool.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (CATALOG_LOCK,))
            conn.execute("INSERT INTO catalog_snapshots SELECT %s, COALESCE(MAX(seq), 0), %s FROM catalog_log "
                         "ON CONFLICT (snapshot_id) DO NOTHING", (snapshot_id, time.time()))
            return conn.execute("SELECT position FROM catalog_snapshots WHERE snapshot_id = %s",
                                (snapshot_id,)).fetchone()[0]

    def append(self, entry: dict, after: int) -> tuple[int, list[tuple[int, dict]]]:
        text = json.dumps(entry, ensure_ascii=False)
        with self._pool.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (CATALOG_LOCK,))
            before = _entries_after(conn, after, None)
            position = conn.execute("INSERT INTO catalog_log (entry, at) VALUES (%s, %s) RETURNING seq",
                                    (text, time.time())).fetchone()[0]
        return position, before

    def read_after(self, position: int, limit: int = 1000) -> list[tuple[int, dict]]:
        with self._pool.connection() as conn:
            return _entries_after(conn, position, limit)

    def mark_snapshot(self, snapshot_id: str, position: int) -> None:
        with self._pool.connection() as conn:
            conn.execute("INSERT INTO catalog_snapshots VALUES (%s, %s, %s) ON CONFLICT (snapshot_id) DO UPDATE "
                         "SET position = EXCLUDED.position, at = EXCLUDED.at", (snapshot_id, position, time.time()))

    def close(self) -> None:
        self._pool.close()


def _entries_after(conn, position: int, limit: int | None) -> list[tuple[int, dict]]:
    rows = conn.execute("SELECT seq, entry FROM catalog_log WHERE seq > %s ORDER BY seq LIMIT %s",
                        (position, limit)).fetchall()
    return [(seq, json.loads(text)) for seq, text in rows]


def open_feed(url: str) -> CatalogFeed:
    """The shared feed at ``url`` (``postgresql://...``)."""
    if not url.startswith(("postgresql://", "postgres://")):
        raise ValueError(f"unsupported catalog feed URL {url!r}; use postgresql://user@host/db")
    return PostgresCatalogFeed(url)
