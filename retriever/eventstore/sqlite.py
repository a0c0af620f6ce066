"""The event log on SQLite: WAL mode, durable on acknowledgement, idempotent by ``event_id``.

Erasure erases: the writer runs with ``secure_delete`` (SQLite overwrites deleted content with
zeros instead of leaving it in free space), and after deleting a user the write-ahead log is
checkpointed and truncated, so neither ``events.db`` nor its ``-wal`` keeps a byte of them.

Schema changes are numbered migrations (``MIGRATIONS``); opening a database applies the ones it
has not seen, inside a transaction, and records the version in ``meta``.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from .base import (
    ERASURE_RETENTION_S,
    Changes,
    Erasure,
    Event,
    EventStore,
    ImpressionBuffer,
    SearchRecord,
    StoredEvent,
    erased_from_json,
    erased_json,
    star_counts,
)

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
    # 2: rating lookups by item (the storefront's stars)
    """
    CREATE INDEX events_by_item ON events (item_id, type);
    """,
    # 3: the erasure log, read by every process that counts events (see EventStore.changes_after)
    """
    CREATE TABLE erasures (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        user_key TEXT NOT NULL,
        events TEXT NOT NULL,
        erased_at REAL NOT NULL
    );
    INSERT OR IGNORE INTO meta VALUES ('erasures_pruned_through', '0');
    """,
    # 4: the search log (suggestions, co-click expansion, the query reranker's pairs, search A/B)
    """
    CREATE TABLE searches (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        request_id TEXT NOT NULL UNIQUE,
        user_key TEXT,
        query TEXT NOT NULL,
        query_key TEXT NOT NULL,
        item_ids TEXT NOT NULL,
        variant TEXT,
        ts REAL NOT NULL
    );
    CREATE INDEX searches_by_user ON searches (user_key);
    CREATE INDEX searches_by_key ON searches (query_key);
    """,
]



def _wal_mode(db: sqlite3.Connection, seconds: float = 10.0) -> None:
    """Switch ``db`` to WAL. On a new file opened by several workers at once the switch can fail
    with "database is locked" at once, without waiting for the busy timeout: retry it."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


class SQLiteEventStore(EventStore):
    """SQLite event log. Thread-safe: one writer connection under a lock, each write one durable
    commit; reads go through one read-only connection per thread, which in WAL mode neither waits
    for the writer's fsync nor blocks it. Impressions (A/B bookkeeping, never acknowledged to a
    client) are buffered for up to ``IMPRESSION_FLUSH_S`` and written together: one fsync per
    batch instead of one per recommendation."""

    def __init__(self, path: str | Path, *, pseudonym_key: str, erasure_retention_s: float = ERASURE_RETENTION_S):
        super().__init__(pseudonym_key)
        self.erasure_retention_s = erasure_retention_s
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        _wal_mode(self._db)
        self._db.execute("PRAGMA synchronous=FULL")  # a commit is on disk before we acknowledge
        self._db.execute("PRAGMA secure_delete=ON")  # deleted rows are zeroed, not left in free pages
        self._lock = threading.Lock()
        self._migrate()
        with self._lock:  # erasures past retention go at the next erasure, and at every open
            self._db.execute("BEGIN IMMEDIATE")
            pruned = self._prune_erasures(time.time())
            self._db.execute("COMMIT")
            if pruned:  # their bytes leave the -wal file too (see _truncate_wal)
                self._truncate_wal()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._impressions = ImpressionBuffer(self._write_impressions)
        self._searches = ImpressionBuffer(self._write_searches)

    def _read(self) -> sqlite3.Connection:
        """This thread's read-only connection (opened on first use)."""
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA query_only=1")
            self._local.db = db
            with self._readers_lock:
                self._readers.append(db)
        return db

    @property
    def schema_version(self) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        return int(row[0])

    def _migrate(self) -> None:
        with self._lock:
            self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            while True:
                # The version is read under the write lock: server workers opening a new file at once
                # each saw version 0 and the second failed on "table events already exists".
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    row = self._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
                    version = int(row[0]) if row else 0
                    if version > len(MIGRATIONS):
                        raise RuntimeError(f"{self.path} has schema version {version}, newer than this semrec "
                                           f"({len(MIGRATIONS)}); upgrade semrec")
                    if version == len(MIGRATIONS):
                        self._db.execute("COMMIT")
                        return
                    for statement in MIGRATIONS[version].split(";"):
                        if statement.strip():
                            self._db.execute(statement)
                    self._db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(version + 1),))
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise

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
        rows = self._read().execute(
            "SELECT user_key, item_id, type, value, ts, request_id FROM events WHERE user_key = ? "
            "ORDER BY ts DESC, seq DESC LIMIT ?", (self.user_key(user_id), limit)).fetchall()
        return [StoredEvent(*r) for r in reversed(rows)]

    def events_after(self, seq: int, limit: int = 50_000) -> list[tuple[int, StoredEvent]]:
        """Up to ``limit`` events with sequence number above ``seq``, in arrival order, with their seq."""
        rows = self._read().execute("SELECT seq, user_key, item_id, type, value, ts, request_id FROM events "
                                    "WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit)).fetchall()
        return [(r[0], StoredEvent(*r[1:])) for r in rows]

    def changes_after(self, event_seq: int, erasure_seq: int, limit: int = 50_000) -> Changes:
        """See :meth:`EventStore.changes_after`: one read transaction, so one WAL snapshot."""
        db = self._read()
        db.execute("BEGIN")
        try:
            pruned = int(db.execute("SELECT value FROM meta WHERE key = 'erasures_pruned_through'").fetchone()[0])
            erasures = [Erasure(seq, key, erased_from_json(key, text)) for seq, key, text in db.execute(
                "SELECT seq, user_key, events FROM erasures WHERE seq > ? ORDER BY seq", (erasure_seq,))]
            rows = db.execute("SELECT seq, user_key, item_id, type, value, ts, request_id FROM events "
                              "WHERE seq > ? ORDER BY seq LIMIT ?", (event_seq, limit)).fetchall()
        finally:
            db.execute("COMMIT")
        return Changes(erasures, [(r[0], StoredEvent(*r[1:])) for r in rows], pruned)

    def count_events(self) -> int:
        return self._read().execute("SELECT COUNT(*) FROM events").fetchone()[0]

    def rating_counts(self, item_ids: Iterable[str]) -> dict[str, tuple[list[int], float]]:
        out: dict[str, tuple[list[int], float]] = {}
        db = self._read()
        for item in dict.fromkeys(item_ids):
            rows = db.execute("SELECT value FROM events WHERE item_id = ? AND type = 'rating' AND value IS NOT NULL",
                              (item,)).fetchall()
            if rows:
                out[item] = star_counts(v for (v,) in rows)
        return out

    # ---- onboarding, impressions -----------------------------------------------------------------
    def set_onboarding(self, user_id: str, interests: str, categories: list[str], liked_items: list[str]) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO onboarding VALUES (?, ?, ?, ?, ?)",
                             (self.user_key(user_id), interests, json.dumps(categories), json.dumps(liked_items),
                              time.time()))

    def onboarding(self, user_id: str) -> tuple[str, list[str], list[str]] | None:
        row = self._read().execute("SELECT interests, categories, liked_items FROM onboarding WHERE user_key = ?",
                                   (self.user_key(user_id),)).fetchone()
        return None if row is None else (row[0], json.loads(row[1]), json.loads(row[2]))

    def log_impression(self, request_id: str, user_id: str, variant: str, item_ids: list[str]) -> None:
        """Buffer an impression; it is written within ``IMPRESSION_FLUSH_S`` (see the class docstring)."""
        self._impressions.add((request_id, self.user_key(user_id), variant, json.dumps(item_ids), time.time()))

    def flush_impressions(self) -> int:
        """Write buffered impressions in one transaction. Returns how many were written."""
        return self._impressions.flush()

    def _write_impressions(self, rows: list[tuple]) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            # a user erased meanwhile by another process: their buffered impressions are dropped
            self._db.executemany("INSERT OR IGNORE INTO impressions SELECT ?, ?, ?, ?, ? WHERE NOT EXISTS "
                                 "(SELECT 1 FROM erasures WHERE user_key = ? AND erased_at >= ?)",
                                 [(*r, r[1], r[4]) for r in rows])
            self._db.execute("COMMIT")

    def variant_outcomes(self) -> list[tuple[str, str, int, int, int]]:
        """Per impression: (variant, request_id, clicked, added to cart, purchased) as 0/1."""
        self.flush_impressions()
        with self._lock:
            return self._db.execute("""
                SELECT i.variant, i.request_id,
                       MAX(e.type = 'click') IS 1, MAX(e.type = 'add_to_cart') IS 1, MAX(e.type = 'purchase') IS 1
                FROM impressions i LEFT JOIN events e ON e.request_id = i.request_id
                GROUP BY i.request_id ORDER BY i.variant""").fetchall()

    # ---- the search log ---------------------------------------------------------------------------
    def _write_searches(self, rows: list[tuple]) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            # a shopper erased meanwhile (by any process): their buffered searches are dropped
            self._db.executemany("INSERT OR IGNORE INTO searches (request_id, user_key, query, query_key, item_ids, "
                                 "variant, ts) SELECT ?, ?, ?, ?, ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM erasures "
                                 "WHERE user_key = ? AND erased_at >= ?)", [(*r, r[1], r[6]) for r in rows])
            self._db.execute("COMMIT")

    def searches_after(self, seq: int, limit: int = 50_000) -> list[tuple[int, SearchRecord]]:
        self.flush_searches()
        rows = self._read().execute("SELECT seq, request_id, user_key, query, query_key, item_ids, ts, variant "
                                    "FROM searches WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit)).fetchall()
        return [(r[0], SearchRecord(r[1], r[2], r[3], r[4], json.loads(r[5]), r[6], r[7])) for r in rows]

    def popular_queries(self, min_users: int, limit: int = 10_000) -> list[tuple[str, str, int]]:
        self.flush_searches()
        return [tuple(r) for r in self._read().execute(
            "SELECT query_key, (SELECT query FROM searches t WHERE t.query_key = s.query_key ORDER BY seq LIMIT 1), "
            "COUNT(DISTINCT user_key) AS n FROM searches s WHERE user_key IS NOT NULL GROUP BY query_key "
            "HAVING n >= ? ORDER BY n DESC, query_key LIMIT ?", (min_users, limit))]

    def search_interactions(self, limit: int = 100_000) -> list[tuple[str, str, str, str]]:
        self.flush_searches()
        rows = self._read().execute(
            "SELECT s.query, e.item_id, e.type, e.user_key, s.item_ids FROM events e JOIN searches s "
            "ON s.request_id = e.request_id ORDER BY e.seq DESC LIMIT ?", (limit,)).fetchall()
        return [(q, item, kind, user) for q, item, kind, user, shown in rows if item in json.loads(shown)]

    def search_outcomes(self) -> list[tuple[str, str, int, int, int]]:
        self.flush_searches()
        return self._read().execute("""
            SELECT s.variant, s.request_id,
                   MAX(e.type = 'click') IS 1, MAX(e.type = 'add_to_cart') IS 1, MAX(e.type = 'purchase') IS 1
            FROM searches s LEFT JOIN events e ON e.request_id = s.request_id
            WHERE s.user_key IS NOT NULL AND s.variant IS NOT NULL
            GROUP BY s.request_id ORDER BY s.variant, s.seq""").fetchall()

    # ---- privacy -------------------------------------------------------------------------------
    def delete_user(self, user_id: str) -> list[StoredEvent]:
        """Erase the user's events, onboarding answers, impressions and searches. Returns the erased
        events."""
        key = self.user_key(user_id)
        self.flush_impressions()  # buffered impressions and searches of this user are erased with the rest
        self.flush_searches()
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")  # read and delete in one write transaction: nothing slips between
            rows = self._db.execute("SELECT seq, user_key, item_id, type, value, ts, request_id FROM events "
                                    "WHERE user_key = ? ORDER BY seq", (key,)).fetchall()
            erased = [(r[0], StoredEvent(*r[1:])) for r in rows]
            for table in ("events", "onboarding", "impressions", "searches"):
                self._db.execute(f"DELETE FROM {table} WHERE user_key = ?", (key,))
            self._db.execute("INSERT INTO erasures (user_key, events, erased_at) VALUES (?, ?, ?)",
                             (key, erased_json(erased), now))
            self._prune_erasures(now)
            self._db.execute("COMMIT")
            self._truncate_wal()
        return [e for _, e in erased]

    def _prune_erasures(self, now: float) -> bool:
        """Drop erasure log entries past retention (inside the caller's write transaction); whether any went."""
        old = self._db.execute("SELECT MAX(seq) FROM erasures WHERE erased_at < ?",
                               (now - self.erasure_retention_s,)).fetchone()[0]
        if old is not None:
            self._db.execute("DELETE FROM erasures WHERE seq <= ?", (old,))
            self._db.execute("UPDATE meta SET value = ? WHERE key = 'erasures_pruned_through'", (str(old),))
        return old is not None

    def _truncate_wal(self, attempts: int = 50) -> None:
        """Copy the write-ahead log into the database and truncate it to zero bytes (call under the
        writer lock): the -wal file still holds the erased rows' old pages until then. A reader in
        the middle of a query blocks the truncation; it is retried for up to ~1 s, then reported."""
        for _ in range(attempts):
            busy, _, _ = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if not busy:
                return
            time.sleep(0.02)
        raise RuntimeError(f"{self.path}: could not truncate the write-ahead log after erasure (readers kept it busy)")

    def close(self) -> None:
        self.flush_impressions()
        self.flush_searches()
        with self._lock:
            self._db.close()
        with self._readers_lock:
            for db in self._readers:
                db.close()
            self._readers.clear()
