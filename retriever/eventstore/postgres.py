"""The event log on PostgreSQL (psycopg 3, a connection pool): the SQLite contract, for several
machines. Durable on acknowledgement (a committed transaction with the server's default
``synchronous_commit = on``), idempotent by ``event_id``.

Writers of the log (events, erasures) take one transaction-level advisory lock, so sequence
numbers commit in order: a reader that sees seq ``n`` has seen every seq below it, which is what
lets every worker follow the log with one cursor (``changes_after``). A sequence alone would not
do: two transactions may commit in the opposite order of their ``nextval``.

Tables go in the URL's database, search path as usual (``?options=-csearch_path%3Dsemrec`` puts them
in a schema). Numbered migrations (``MIGRATIONS``) run under an advisory lock, so workers that
start together migrate once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable

from indexer.postgres import connect_pool, migrate

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

LOG_LOCK = 7_301_001  # pg_advisory_xact_lock key of the event and erasure log

MIGRATIONS: list[str] = [
    # 1: the SQLite schema of version 3: events, onboarding, impressions, the erasure log
    """
    CREATE TABLE events (
        seq BIGSERIAL PRIMARY KEY,
        event_id TEXT NOT NULL UNIQUE,
        user_key TEXT NOT NULL,
        item_id TEXT NOT NULL,
        type TEXT NOT NULL,
        value DOUBLE PRECISION,
        ts DOUBLE PRECISION NOT NULL,
        request_id TEXT,
        received_at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX events_by_user ON events (user_key, ts);
    CREATE INDEX events_by_request ON events (request_id) WHERE request_id IS NOT NULL;
    CREATE INDEX events_by_item ON events (item_id, type);
    CREATE TABLE onboarding (
        user_key TEXT PRIMARY KEY,
        interests TEXT NOT NULL,
        categories TEXT NOT NULL,
        liked_items TEXT NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE impressions (
        request_id TEXT PRIMARY KEY,
        user_key TEXT NOT NULL,
        variant TEXT NOT NULL,
        item_ids TEXT NOT NULL,
        ts DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX impressions_by_user ON impressions (user_key);
    CREATE TABLE erasures (
        seq BIGSERIAL PRIMARY KEY,
        user_key TEXT NOT NULL,
        events TEXT NOT NULL,
        erased_at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX erasures_by_user ON erasures (user_key);
    INSERT INTO meta VALUES ('erasures_pruned_through', '0');
    """,
    # 2: the search log (SQLite's version 4)
    """
    CREATE TABLE searches (
        seq BIGSERIAL PRIMARY KEY,
        request_id TEXT NOT NULL UNIQUE,
        user_key TEXT,
        query TEXT NOT NULL,
        query_key TEXT NOT NULL,
        item_ids TEXT NOT NULL,
        variant TEXT,
        ts DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX searches_by_user ON searches (user_key);
    CREATE INDEX searches_by_key ON searches (query_key);
    """,
]


class PostgresEventStore(EventStore):
    """PostgreSQL event log. Thread-safe: each call borrows a pooled connection. Impressions are
    buffered for up to ``IMPRESSION_FLUSH_S`` as on SQLite; a buffered impression of a user erased
    meanwhile (by any process) is dropped at the flush."""

    def __init__(self, url: str, *, pseudonym_key: str, pool_size: int = 8,
                 erasure_retention_s: float = ERASURE_RETENTION_S, timeout_s: float = 10.0):
        super().__init__(pseudonym_key)
        self.erasure_retention_s = erasure_retention_s
        self.url = url
        self._pool = connect_pool(url, pool_size, "semrec-events", timeout_s)
        migrate(self._pool, MIGRATIONS, "schema_version", "event log")
        self._impressions = ImpressionBuffer(self._write_impressions)
        self._searches = ImpressionBuffer(self._write_searches)
        with self._pool.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOG_LOCK,))
            self._prune_erasures(conn, time.time())

    @property
    def schema_version(self) -> int:
        with self._pool.connection() as conn:
            return int(conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0])

    # ---- events --------------------------------------------------------------------------------
    def add_events(self, events: Iterable[Event]) -> list[bool]:
        """Store events in one transaction. Returns per event: True if new, False if a duplicate id."""
        events = list(events)
        if not events:
            return []
        now = time.time()
        cols = list(zip(*[(e.event_id, self.user_key(e.user_id), e.item_id, e.type,
                           None if e.value is None else float(e.value), float(e.timestamp), e.request_id, now)
                          for e in events]))
        with self._pool.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOG_LOCK,))
            rows = conn.execute(
                "INSERT INTO events (event_id, user_key, item_id, type, value, ts, request_id, received_at) "
                "SELECT e, u, i, t, v, ts, r, at FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], "
                "%s::float8[], %s::float8[], %s::text[], %s::float8[]) "
                "WITH ORDINALITY AS x(e, u, i, t, v, ts, r, at, n) ORDER BY n "
                "ON CONFLICT (event_id) DO NOTHING RETURNING event_id", [list(c) for c in cols]).fetchall()
        stored, fresh = {r[0] for r in rows}, []
        for e in events:  # a repeated id within the batch: the first copy is the stored one
            fresh.append(e.event_id in stored)
            stored.discard(e.event_id)
        return fresh

    def user_events(self, user_id: str, limit: int = 200) -> list[StoredEvent]:
        """The user's most recent ``limit`` events, oldest first."""
        with self._pool.connection() as conn:
            rows = conn.execute("SELECT user_key, item_id, type, value, ts, request_id FROM events "
                                "WHERE user_key = %s ORDER BY ts DESC, seq DESC LIMIT %s",
                                (self.user_key(user_id), limit)).fetchall()
        return [StoredEvent(*r) for r in reversed(rows)]

    def events_after(self, seq: int, limit: int = 50_000) -> list[tuple[int, StoredEvent]]:
        """Up to ``limit`` events with sequence number above ``seq``, in arrival order, with their seq."""
        with self._pool.connection() as conn:
            return _events_after(conn, seq, limit)

    def changes_after(self, event_seq: int, erasure_seq: int, limit: int = 50_000) -> Changes:
        """See :meth:`EventStore.changes_after`: one REPEATABLE READ transaction, so one snapshot."""
        with self._pool.connection() as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            pruned = int(conn.execute("SELECT value FROM meta WHERE key = 'erasures_pruned_through'").fetchone()[0])
            erasures = [Erasure(seq, key, erased_from_json(key, text)) for seq, key, text in conn.execute(
                "SELECT seq, user_key, events FROM erasures WHERE seq > %s ORDER BY seq", (erasure_seq,))]
            return Changes(erasures, _events_after(conn, event_seq, limit), pruned)

    def count_events(self) -> int:
        with self._pool.connection() as conn:
            return conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]

    def rating_counts(self, item_ids: Iterable[str]) -> dict[str, tuple[list[int], float]]:
        values: dict[str, list[float]] = {}
        with self._pool.connection() as conn:
            for item, v in conn.execute("SELECT item_id, value FROM events WHERE item_id = ANY(%s) AND "
                                        "type = 'rating' AND value IS NOT NULL ORDER BY seq",
                                        (list(dict.fromkeys(item_ids)),)):
                values.setdefault(item, []).append(v)
        return {item: star_counts(vs) for item, vs in values.items()}

    # ---- onboarding, impressions -----------------------------------------------------------------
    def set_onboarding(self, user_id: str, interests: str, categories: list[str], liked_items: list[str]) -> None:
        with self._pool.connection() as conn:
            conn.execute("INSERT INTO onboarding VALUES (%s, %s, %s, %s, %s) ON CONFLICT (user_key) DO UPDATE SET "
                         "interests = EXCLUDED.interests, categories = EXCLUDED.categories, "
                         "liked_items = EXCLUDED.liked_items, updated_at = EXCLUDED.updated_at",
                         (self.user_key(user_id), interests, json.dumps(categories), json.dumps(liked_items),
                          time.time()))

    def onboarding(self, user_id: str) -> tuple[str, list[str], list[str]] | None:
        with self._pool.connection() as conn:
            row = conn.execute("SELECT interests, categories, liked_items FROM onboarding WHERE user_key = %s",
                               (self.user_key(user_id),)).fetchone()
        return None if row is None else (row[0], json.loads(row[1]), json.loads(row[2]))

    def log_impression(self, request_id: str, user_id: str, variant: str, item_ids: list[str]) -> None:
        """Buffer an impression; it is written within ``IMPRESSION_FLUSH_S``."""
        self._impressions.add((request_id, self.user_key(user_id), variant, json.dumps(item_ids), time.time()))

    def flush_impressions(self) -> int:
        """Write buffered impressions in one transaction. Returns how many were buffered."""
        return self._impressions.flush()

    def _write_impressions(self, rows: list[tuple]) -> None:
        with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            cur.executemany("INSERT INTO impressions SELECT %s, %s, %s, %s, %s WHERE NOT EXISTS (SELECT 1 FROM "
                            "erasures WHERE user_key = %s AND erased_at >= %s) ON CONFLICT DO NOTHING",
                            [(*r, r[1], r[4]) for r in rows])

    def variant_outcomes(self) -> list[tuple[str, str, int, int, int]]:
        """Per impression: (variant, request_id, clicked, added to cart, purchased) as 0/1."""
        self.flush_impressions()
        with self._pool.connection() as conn:
            return [tuple(r) for r in conn.execute("""
                SELECT i.variant, i.request_id, COALESCE(BOOL_OR(e.type = 'click'), false)::int,
                       COALESCE(BOOL_OR(e.type = 'add_to_cart'), false)::int,
                       COALESCE(BOOL_OR(e.type = 'purchase'), false)::int
                FROM impressions i LEFT JOIN events e ON e.request_id = i.request_id
                GROUP BY i.request_id ORDER BY i.variant""")]

    # ---- the search log ---------------------------------------------------------------------------
    def log_search(self, request_id: str, user_id: str | None, query: str, key: str, item_ids: list[str],
                   variant: str | None = None) -> None:
        """Buffer a search; written within ``IMPRESSION_FLUSH_S``."""
        self._searches.add((request_id, None if user_id is None else self.user_key(user_id), query, key,
                            json.dumps(item_ids), variant, time.time()))

    def flush_searches(self) -> int:
        return self._searches.flush()

    def _write_searches(self, rows: list[tuple]) -> None:
        with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            cur.executemany("INSERT INTO searches (request_id, user_key, query, query_key, item_ids, variant, ts) "
                            "SELECT %s, %s, %s, %s, %s, %s, %s WHERE NOT EXISTS (SELECT 1 FROM erasures WHERE "
                            "user_key = %s AND erased_at >= %s) ON CONFLICT DO NOTHING",
                            [(*r, r[1], r[6]) for r in rows])

    def searches_after(self, seq: int, limit: int = 50_000) -> list[tuple[int, SearchRecord]]:
        self.flush_searches()
        with self._pool.connection() as conn:
            rows = conn.execute("SELECT seq, request_id, user_key, query, query_key, item_ids, ts, variant "
                                "FROM searches WHERE seq > %s ORDER BY seq LIMIT %s", (seq, limit)).fetchall()
        return [(r[0], SearchRecord(r[1], r[2], r[3], r[4], json.loads(r[5]), r[6], r[7])) for r in rows]

    def popular_queries(self, min_users: int, limit: int = 10_000) -> list[tuple[str, str, int]]:
        self.flush_searches()
        with self._pool.connection() as conn:
            return [tuple(r) for r in conn.execute(
                "SELECT query_key, (ARRAY_AGG(query ORDER BY seq))[1], COUNT(DISTINCT user_key) AS n FROM searches "
                "WHERE user_key IS NOT NULL GROUP BY query_key HAVING COUNT(DISTINCT user_key) >= %s "
                "ORDER BY n DESC, query_key LIMIT %s", (min_users, limit))]

    def search_interactions(self, limit: int = 100_000) -> list[tuple[str, str, str, str]]:
        self.flush_searches()
        with self._pool.connection() as conn:
            rows = conn.execute("SELECT s.query, e.item_id, e.type, e.user_key, s.item_ids FROM events e "
                                "JOIN searches s ON s.request_id = e.request_id ORDER BY e.seq DESC LIMIT %s",
                                (limit,)).fetchall()
        return [(q, item, kind, user) for q, item, kind, user, shown in rows if item in json.loads(shown)]

    def search_outcomes(self) -> list[tuple[str, str, int, int, int]]:
        self.flush_searches()
        with self._pool.connection() as conn:
            return [tuple(r) for r in conn.execute("""
                SELECT s.variant, s.request_id, COALESCE(BOOL_OR(e.type = 'click'), false)::int,
                       COALESCE(BOOL_OR(e.type = 'add_to_cart'), false)::int,
                       COALESCE(BOOL_OR(e.type = 'purchase'), false)::int
                FROM searches s LEFT JOIN events e ON e.request_id = s.request_id
                WHERE s.user_key IS NOT NULL AND s.variant IS NOT NULL
                GROUP BY s.request_id, s.variant, s.seq ORDER BY s.variant, s.seq""")]

    # ---- privacy -------------------------------------------------------------------------------
    def delete_user(self, user_id: str) -> list[StoredEvent]:
        """Erase the user's events, onboarding answers, impressions and searches; log the erasure.
        Returns the erased events in seq order."""
        key, now = self.user_key(user_id), time.time()
        self.flush_impressions()  # buffered impressions and searches of this user are erased with the rest
        self.flush_searches()
        with self._pool.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOG_LOCK,))
            erased = [(r[0], StoredEvent(*r[1:])) for r in conn.execute(
                "DELETE FROM events WHERE user_key = %s RETURNING seq, user_key, item_id, type, value, ts, request_id",
                (key,))]
            erased.sort(key=lambda t: t[0])
            conn.execute("DELETE FROM onboarding WHERE user_key = %s", (key,))
            conn.execute("DELETE FROM impressions WHERE user_key = %s", (key,))
            conn.execute("DELETE FROM searches WHERE user_key = %s", (key,))
            conn.execute("INSERT INTO erasures (user_key, events, erased_at) VALUES (%s, %s, %s)",
                         (key, erased_json(erased), now))
            self._prune_erasures(conn, now)
        return [e for _, e in erased]

    def _prune_erasures(self, conn, now: float) -> None:
        """Drop erasure log entries past retention (inside the caller's transaction, under LOG_LOCK)."""
        old = conn.execute("SELECT MAX(seq) FROM erasures WHERE erased_at < %s",
                           (now - self.erasure_retention_s,)).fetchone()[0]
        if old is not None:
            conn.execute("DELETE FROM erasures WHERE seq <= %s", (old,))
            conn.execute("UPDATE meta SET value = %s WHERE key = 'erasures_pruned_through'", (str(old),))

    def close(self) -> None:
        self.flush_impressions()
        self.flush_searches()
        self._pool.close()


def _events_after(conn, seq: int, limit: int) -> list[tuple[int, StoredEvent]]:
    rows = conn.execute("SELECT seq, user_key, item_id, type, value, ts, request_id FROM events "
                        "WHERE seq > %s ORDER BY seq LIMIT %s", (seq, limit)).fetchall()
    return [(r[0], StoredEvent(*r[1:])) for r in rows]
