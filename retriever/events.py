"""The event log: SQLite in WAL mode, durable on acknowledgement, idempotent by ``event_id``.

User ids never reach the database in clear: every table keys users by ``user_key``, a keyed hash
(HMAC-SHA256 with a secret from the settings) of the shop's user id. Without the key, the log
cannot be joined back to people; deleting a user removes every row under their key.

Schema changes are numbered migrations (``MIGRATIONS``); opening a database applies the ones it
has not seen, inside a transaction, and records the version in ``meta``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

EVENT_TYPES = ("view", "click", "add_to_cart", "purchase", "rating")

MIGRATIONS: list[str] = [
    # 1: events, onboarding answers, recommendation impressions (for A/B reports)
    """
    CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id TEXT NOT NULL UNIQUE,
        user_key TEXT NOT NULL,
        item_id TEXT NOT NULL,
        type TEXT NOT NULL,
        value REAL,
        ts REAL NOT NULL,
        request_id TEXT,
        received_at REAL NOT NULL
    );
    CREATE INDEX events_by_user ON events (user_key, ts);
    CREATE INDEX events_by_request ON events (request_id) WHERE request_id IS NOT NULL;
    CREATE TABLE onboarding (
        user_key TEXT PRIMARY KEY,
        interests TEXT NOT NULL,
        categories TEXT NOT NULL,
        liked_items TEXT NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE impressions (
        request_id TEXT PRIMARY KEY,
        user_key TEXT NOT NULL,
        variant TEXT NOT NULL,
        item_ids TEXT NOT NULL,
        ts REAL NOT NULL
    );
    CREATE INDEX impressions_by_user ON impressions (user_key);
    """,
]


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


class EventStore:
    """SQLite event log. Thread-safe (one connection, one lock); each write is one durable commit."""

    def __init__(self, path: str | Path, *, pseudonym_key: str):
        if not pseudonym_key:
            raise ValueError("pseudonym_key must be a non-empty secret")
        self.path, self._key = Path(path), pseudonym_key
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a commit is on disk before we acknowledge
        self._lock = threading.Lock()
        self._migrate()

    def user_key(self, user_id: str) -> str:
        return pseudonymize(user_id, self._key)

    @property
    def schema_version(self) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        return int(row[0])

    def _migrate(self) -> None:
        with self._lock:
            self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            row = self._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            version = int(row[0]) if row else 0
            if version > len(MIGRATIONS):
                raise RuntimeError(f"{self.path} has schema version {version}, newer than this semrec "
                                   f"({len(MIGRATIONS)}); upgrade semrec")
            for number in range(version + 1, len(MIGRATIONS) + 1):
                self._db.execute("BEGIN IMMEDIATE")
                for statement in MIGRATIONS[number - 1].split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(number),))
                self._db.execute("COMMIT")

    # ---- events --------------------------------------------------------------------------------
    def add_events(self, events: Iterable[Event]) -> list[bool]:
        """Store events in one transaction. Returns per event: True if new, False if a duplicate id."""
        now = time.time()
        rows = [(e.event_id, self.user_key(e.user_id), e.item_id, e.type, e.value, e.timestamp,
                 e.request_id, now) for e in events]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            fresh = []
            for row in rows:
                cur = self._db.execute("INSERT OR IGNORE INTO events (event_id, user_key, item_id, type, value, "
                                       "ts, request_id, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", row)
                fresh.append(cur.rowcount == 1)
            self._db.execute("COMMIT")
        return fresh

    def user_events(self, user_id: str, limit: int = 200) -> list[StoredEvent]:
        """The user's most recent ``limit`` events, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT user_key, item_id, type, value, ts, request_id FROM events WHERE user_key = ? "
                "ORDER BY ts DESC, seq DESC LIMIT ?", (self.user_key(user_id), limit)).fetchall()
        return [StoredEvent(*r) for r in reversed(rows)]

    def events_after(self, seq: int, limit: int = 50_000) -> list[tuple[int, StoredEvent]]:
        """Up to ``limit`` events with sequence number above ``seq``, in arrival order, with their seq."""
        with self._lock:
            rows = self._db.execute("SELECT seq, user_key, item_id, type, value, ts, request_id FROM events "
                                    "WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit)).fetchall()
        return [(r[0], StoredEvent(*r[1:])) for r in rows]

    def count_events(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0]

    # ---- onboarding, impressions -----------------------------------------------------------------
    def set_onboarding(self, user_id: str, interests: str, categories: list[str], liked_items: list[str]) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO onboarding VALUES (?, ?, ?, ?, ?)",
                             (self.user_key(user_id), interests, json.dumps(categories), json.dumps(liked_items),
                              time.time()))

    def onboarding(self, user_id: str) -> tuple[str, list[str], list[str]] | None:
        with self._lock:
            row = self._db.execute("SELECT interests, categories, liked_items FROM onboarding WHERE user_key = ?",
                                   (self.user_key(user_id),)).fetchone()
        return None if row is None else (row[0], json.loads(row[1]), json.loads(row[2]))

    def log_impression(self, request_id: str, user_id: str, variant: str, item_ids: list[str]) -> None:
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO impressions VALUES (?, ?, ?, ?, ?)",
                             (request_id, self.user_key(user_id), variant, json.dumps(item_ids), time.time()))

    def variant_outcomes(self) -> list[tuple[str, str, int, int, int]]:
        """Per impression: (variant, request_id, clicked, added to cart, purchased) as 0/1."""
        with self._lock:
            return self._db.execute("""
                SELECT i.variant, i.request_id,
                       MAX(e.type = 'click') IS 1, MAX(e.type = 'add_to_cart') IS 1, MAX(e.type = 'purchase') IS 1
                FROM impressions i LEFT JOIN events e ON e.request_id = i.request_id
                GROUP BY i.request_id ORDER BY i.variant""").fetchall()

    # ---- privacy -------------------------------------------------------------------------------
    def delete_user(self, user_id: str) -> list[StoredEvent]:
        """Erase the user's events, onboarding answers and impressions. Returns the erased events."""
        key = self.user_key(user_id)
        with self._lock:
            rows = self._db.execute("SELECT user_key, item_id, type, value, ts, request_id FROM events "
                                    "WHERE user_key = ? ORDER BY ts, seq", (key,)).fetchall()
            self._db.execute("BEGIN IMMEDIATE")
            for table in ("events", "onboarding", "impressions"):
                self._db.execute(f"DELETE FROM {table} WHERE user_key = ?", (key,))
            self._db.execute("COMMIT")
        return [StoredEvent(*r) for r in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()
