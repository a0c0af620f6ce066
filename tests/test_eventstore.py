"""The EventStore contract, run against every backend: SQLite and a real PostgreSQL server.

Also: workers that follow one log (``InteractionState.catch_up``) end with exactly the counts of a
fresh replay of what the log holds, whatever the interleaving of writes, erasures and catch-ups.
"""

from __future__ import annotations

import random
import threading
import time

import numpy as np
import pytest

from retriever.eventstore import IMPRESSION_FLUSH_S, Event, EventStore, open_event_store, pseudonymize
from retriever.state import InteractionState

KEY = "contract-secret-key"


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request, tmp_path):
    """``open()`` -> a new store on one database (call it twice for two workers); ``raw()`` -> all the
    text the database holds in its tables."""
    where = str(tmp_path / "events.db") if request.param == "sqlite" else request.getfixturevalue("pg_url")
    opened: list[EventStore] = []

    class Backend:
        name = request.param
        url = where

        @staticmethod
        def open(**kw) -> EventStore:
            if kw:
                from retriever.eventstore.postgres import PostgresEventStore
                from retriever.eventstore.sqlite import SQLiteEventStore

                cls = SQLiteEventStore if request.param == "sqlite" else PostgresEventStore
                store = cls(where, pseudonym_key=KEY, **kw)
            else:
                store = open_event_store(where, pseudonym_key=KEY)
            opened.append(store)
            return store

        @staticmethod
        def raw() -> str:
            if request.param == "sqlite":
                import sqlite3

                con = sqlite3.connect(where)
                try:
                    return "\n".join(con.iterdump())
                finally:
                    con.close()
            import psycopg

            with psycopg.connect(where) as conn:
                tables = [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
                return "\n".join(str(r[0]) for t in tables for r in conn.execute(f"SELECT row_to_json(x) FROM {t} x"))

    yield Backend
    for store in opened:
        store.close()


def ev(n, user="alice", item="i1", kind="view", ts=None, value=None, request_id=None) -> Event:
    return Event(f"e{n}", user, item, kind, float(1_000 + n if ts is None else ts), value, request_id)


class TestEventStoreContract:
    def test_event_ids_are_idempotent(self, backend):
        store = backend.open()
        assert store.add_events([ev(1), ev(2), ev(1, item="other")]) == [True, True, False]
        assert store.add_events([ev(2), ev(3)]) == [False, True]
        assert store.add_events([]) == []
        assert store.count_events() == 3
        assert [e.item_id for e in store.user_events("alice")] == ["i1", "i1", "i1"]  # the first copy of e1 kept

    def test_user_events_are_the_newest_oldest_first(self, backend):
        store = backend.open()
        store.add_events([ev(n, ts=t, item=f"i{n}") for n, t in enumerate([5, 1, 9, 3])] + [ev(9, user="bob")])
        assert [e.item_id for e in store.user_events("alice")] == ["i1", "i3", "i0", "i2"]
        assert [e.item_id for e in store.user_events("alice", limit=2)] == ["i0", "i2"]
        assert store.user_events("nobody") == []
        e = store.user_events("bob")[0]
        assert (e.user_key, e.type, e.ts, e.value) == (pseudonymize("bob", KEY), "view", 1009.0, None)

    def test_events_after_is_in_arrival_order_with_a_limit(self, backend):
        store = backend.open()
        store.add_events([ev(n, ts=100 - n, item=f"i{n}") for n in range(5)])
        rows = store.events_after(0)
        seqs = [s for s, _ in rows]
        assert seqs == sorted(seqs) and [e.item_id for _, e in rows] == [f"i{n}" for n in range(5)]
        assert [s for s, _ in store.events_after(seqs[1], limit=2)] == seqs[2:4]
        changes = store.changes_after(seqs[2], 0, limit=10)
        assert [s for s, _ in changes.events] == seqs[3:] and changes.erasures == []

    def test_user_ids_never_reach_the_database_in_clear(self, backend):
        store = backend.open()
        store.add_events([ev(1, user="alice@example.com", item="tea-42")])
        store.set_onboarding("alice@example.com", "green tea", ["Tea"], ["tea-42"])
        store.log_impression("r1", "alice@example.com", "a", ["tea-42"])
        store.flush_impressions()
        raw = backend.raw()
        assert "tea-42" in raw and pseudonymize("alice@example.com", KEY) in raw
        assert "alice@example.com" not in raw

    def test_onboarding_round_trip_and_overwrite(self, backend):
        store = backend.open()
        assert store.onboarding("carol") is None
        store.set_onboarding("carol", "coffee", ["Kitchen"], ["grinder"])
        assert store.onboarding("carol") == ("coffee", ["Kitchen"], ["grinder"])
        store.set_onboarding("carol", "tea", [], [])
        assert store.onboarding("carol") == ("tea", [], [])

    def test_rating_counts(self, backend):
        store = backend.open()
        store.add_events([ev(1, item="a", kind="rating", value=4.6), ev(2, user="b", item="a", kind="rating", value=1),
                          ev(3, user="c", item="a", kind="rating", value=9), ev(4, item="b", kind="rating", value=2.5),
                          ev(5, item="c", kind="purchase")])
        counts = store.rating_counts(["a", "b", "c", "a", "zzz"])
        assert counts == {"a": ([1, 0, 0, 0, 2], 14.6), "b": ([0, 1, 0, 0, 0], 2.5)}  # round(2.5) == 2

    def test_impressions_join_outcomes_by_request(self, backend):
        store = backend.open()
        for n, user in enumerate(["u1", "u2", "u3"]):
            store.log_impression(f"r{n}", user, "a" if n < 2 else "b", ["x", "y"])
        store.add_events([ev(1, user="u1", item="x", kind="click", request_id="r0"),
                          ev(2, user="u1", item="x", kind="purchase", request_id="r0"),
                          ev(3, user="u3", item="y", kind="add_to_cart", request_id="r2")])
        assert sorted(store.variant_outcomes()) == [("a", "r0", 1, 0, 1), ("a", "r1", 0, 0, 0), ("b", "r2", 0, 1, 0)]
        store.log_impression("r0", "u1", "a", ["x"])  # the same request id again: kept once
        assert len(store.variant_outcomes()) == 3

    def test_search_log_round_trip_and_popular_queries_by_distinct_users(self, backend):
        store, other = backend.open(), backend.open()
        store.log_search("s1", "alice@example.com", "Red Lipstick", "red lipstick", ["a", "b"], "v1")
        store.log_search("s2", "alice@example.com", "red lipstick", "red lipstick", ["a"], "v1")
        store.log_search("s3", None, "red lipstick", "red lipstick", ["b"])
        store.log_search("s4", "bob", "tent", "tent", ["t"], "v2")
        store.log_search("s1", "bob", "again", "again", [])  # a request id is logged once
        store.flush_searches()  # buffered per process: another one reads what was flushed
        rows = other.searches_after(0)
        assert [r.request_id for _, r in rows] == ["s1", "s2", "s3", "s4"]
        assert rows[0][1].query == "Red Lipstick" and rows[0][1].item_ids == ["a", "b"] and rows[2][1].user_key is None
        assert rows[0][1].user_key == pseudonymize("alice@example.com", KEY) and rows[0][1].variant == "v1"
        assert [s for s, _ in other.searches_after(rows[1][0])] == [rows[2][0], rows[3][0]]
        # one shopper typing twice, plus an anonymous search, is one user: not popular at 2
        assert store.popular_queries(2) == []
        store.log_search("s5", "carol", "red lipstick", "red lipstick", ["a"])
        assert store.popular_queries(2) == [("red lipstick", "Red Lipstick", 2)]
        assert [q[0] for q in store.popular_queries(1)] == ["red lipstick", "tent"]
        assert "alice@example.com" not in backend.raw()

    def test_clicks_from_a_search_list_join_their_query(self, backend):
        store = backend.open()
        store.log_search("s1", "u1", "burr grinder", "burr grinder", ["g", "k"], "a")
        store.log_search("s2", "u2", "kettle", "kettle", ["k"], "b")
        store.add_events([ev(1, user="u1", item="g", kind="click", request_id="s1"),
                          ev(2, user="u1", item="z", kind="click", request_id="s1"),  # not in the list
                          ev(3, user="u2", item="k", kind="add_to_cart", request_id="s2"),
                          ev(4, user="u2", item="k", kind="click")])  # no request id
        got = store.search_interactions()
        assert sorted((q, i, t) for q, i, t, _ in got) == [("burr grinder", "g", "click"),
                                                           ("kettle", "k", "add_to_cart")]
        assert sorted(store.search_outcomes()) == [("a", "s1", 1, 0, 0), ("b", "s2", 0, 1, 0)]

    def test_erasure_forgets_the_users_searches(self, backend):
        a, b = backend.open(), backend.open()
        a.log_search("s1", "leaver", "secret query", "secret query", ["x"])
        a.log_search("s2", "stayer", "secret query", "secret query", ["x"])
        a.flush_searches()
        a.log_search("s3", "leaver", "buffered query", "buffered query", ["x"])  # still buffered in a
        b.log_search("s4", "leaver", "other worker", "other worker", ["x"])  # buffered in another process
        a.delete_user("leaver")
        b.flush_searches()
        assert [r.request_id for _, r in b.searches_after(0)] == ["s2"]
        assert "buffered query" not in backend.raw() and "other worker" not in backend.raw()

    def test_impressions_reach_the_database_on_their_own(self, backend):
        writer, reader = backend.open(), backend.open()
        writer.log_impression("r1", "u1", "a", ["x"])
        deadline = time.time() + 40 * IMPRESSION_FLUSH_S
        while time.time() < deadline and not reader.variant_outcomes():
            time.sleep(0.05)
        assert reader.variant_outcomes() == [("a", "r1", 0, 0, 0)]

    def test_an_impression_buffered_in_one_process_dies_with_an_erasure_in_another(self, backend):
        a, b = backend.open(), backend.open()
        a.log_impression("r1", "leaver", "a", ["x"])
        a.log_impression("r2", "stayer", "a", ["x"])
        b.delete_user("leaver")
        a.flush_impressions()
        assert [o[1] for o in b.variant_outcomes()] == ["r2"]

    def test_another_process_sees_every_acknowledged_write(self, backend):
        a, b = backend.open(), backend.open()
        a.add_events([ev(n, user=f"u{n % 3}") for n in range(10)])
        a.set_onboarding("u1", "tents", [], [])
        assert b.count_events() == 10 and b.onboarding("u1") == ("tents", [], [])
        assert b.add_events([ev(3)]) == [False]  # idempotent across connections too
        a.close()
        again = backend.open()
        assert again.count_events() == 10  # durable: a new connection after close reads it back

    def test_delete_user_erases_everything_and_logs_the_erasure(self, backend):
        store = backend.open()
        store.add_events([ev(1, ts=50, item="late-ts"), ev(2, user="bob"), ev(3, ts=10, item="early-ts")])
        store.set_onboarding("alice", "x", [], [])
        store.log_impression("r1", "alice", "a", ["i1"])  # still buffered: erased too
        store.log_impression("r2", "bob", "a", ["i1"])
        erased = store.delete_user("alice")
        assert [e.item_id for e in erased] == ["late-ts", "early-ts"]  # seq order, as they were counted
        assert store.user_events("alice") == [] and store.onboarding("alice") is None
        assert [o[1] for o in store.variant_outcomes()] == ["r2"] and store.count_events() == 1
        changes = store.changes_after(0, 0)
        assert [e.user_key for _, e in changes.events] == [pseudonymize("bob", KEY)]
        (erasure,) = changes.erasures
        assert erasure.user_key == pseudonymize("alice", KEY)
        assert [e.item_id for _, e in erasure.events] == ["late-ts", "early-ts"]
        assert [s for s, _ in erasure.events] == sorted(s for s, _ in erasure.events)
        assert store.changes_after(0, erasure.seq).erasures == []
        assert store.delete_user("nobody") == [] and len(store.changes_after(0, 0).erasures) == 2

    def test_erasures_past_retention_are_pruned(self, backend):
        store = backend.open(erasure_retention_s=0.0)
        store.add_events([ev(1, item="alices-item"), ev(2, user="bob")])
        store.delete_user("alice")
        assert "alices-item" in backend.raw()  # in the erasure log, until retention is over
        time.sleep(0.01)
        store.delete_user("bob")  # prunes the first entry
        changes = store.changes_after(0, 0)
        assert len(changes.erasures) == 1 and changes.erasures_pruned_through == changes.erasures[0].seq - 1
        assert "alices-item" not in backend.raw()

    def test_schema_is_migrated_once_and_a_newer_one_refused(self, backend):
        store = backend.open()
        if backend.name == "sqlite":
            from retriever.eventstore.sqlite import MIGRATIONS
        else:
            from retriever.eventstore.postgres import MIGRATIONS
        assert store.schema_version == len(MIGRATIONS)
        store.add_events([ev(1)])
        assert backend.open().count_events() == 1  # reopening migrates nothing away
        _set_schema_version(backend, len(MIGRATIONS) + 1)
        with pytest.raises(RuntimeError, match="newer than this semrec"):
            backend.open()

    def test_workers_opening_a_new_database_at_once_all_start(self, backend):
        # Two server workers on a fresh SQLite file both ran the first migration: one failed to start.
        from concurrent.futures import ThreadPoolExecutor

        gate = threading.Barrier(4)

        def open_one(_):
            gate.wait()
            return backend.open()

        with ThreadPoolExecutor(4) as pool:
            stores = list(pool.map(open_one, range(4)))
        stores[0].add_events([ev(1)])
        assert {s.schema_version for s in stores} == {stores[0].schema_version}
        assert [s.count_events() for s in stores] == [1, 1, 1, 1]

    def test_two_workers_converge_to_a_fresh_replay(self, backend):
        """Random interleavings of writes, erasures and catch-ups by two workers on two connections:
        each worker's counts equal those of a worker that replays the final log from scratch."""
        stores = [backend.open(), backend.open()]
        states = [InteractionState(), InteractionState()]
        rng, n = random.Random(3), 0
        users, items = [f"u{i}" for i in range(6)], [f"i{i}" for i in range(8)]
        for _ in range(120):
            w = rng.randrange(2)
            roll = rng.random()
            if roll < 0.6:
                batch = []
                for _ in range(rng.randint(1, 4)):
                    n += 1
                    batch.append(ev(n, user=rng.choice(users), item=rng.choice(items),
                                    kind=rng.choice(["view", "click", "add_to_cart", "purchase"]), ts=1_000 + n))
                stores[w].add_events(batch)
            elif roll < 0.7:
                stores[w].delete_user(rng.choice(users))
            else:
                states[w].catch_up(stores[w])
        fresh = InteractionState()
        fresh.catch_up(stores[0])
        for state, store in zip(states, stores):
            state.catch_up(store)
            assert_same_counts(state, fresh)
        assert sum(fresh.counter(30.0).count) == stores[1].count_events()

    def test_a_follower_misses_no_event_under_concurrent_writers(self, backend):
        """Seq numbers must become visible in order: a follower reading while 4 threads write sees
        every event exactly once (with an unordered sequence it skips some)."""
        writer_store, follower_store = backend.open(), backend.open()
        state, stop, seen = InteractionState(), threading.Event(), []

        def follow():
            while not stop.is_set():
                seen.append(state.catch_up(follower_store))

        def write(t):
            for n in range(60):
                writer_store.add_events([ev(t * 1000 + n, user=f"w{t}", item=f"i{n % 5}")])

        follower = threading.Thread(target=follow)
        follower.start()
        writers = [threading.Thread(target=write, args=(t,)) for t in range(4)]
        for t in writers:
            t.start()
        for t in writers:
            t.join()
        stop.set()
        follower.join()
        seen.append(state.catch_up(follower_store))
        assert sum(seen) == 240 and sum(state.counter(30.0).count) == 240

    def test_a_worker_that_missed_pruned_erasures_recounts(self, backend):
        store = backend.open(erasure_retention_s=0.0)
        state = InteractionState()
        store.add_events([ev(1, item="a"), ev(2, user="bob", item="b")])
        state.catch_up(store)
        store.delete_user("alice")
        time.sleep(0.01)
        store.delete_user("carol")  # prunes alice's entry before this worker applied it
        state.catch_up(store)
        assert state.interactions("a") == 0 and state.interactions("b") == 1


def assert_same_counts(state: InteractionState, want: InteractionState) -> None:
    for name in state.counters:  # one decayed counter per half-life (popular, trending)
        got, ref = state.counters[name], want.counters[name]
        for item in set(got.ids) | set(ref.ids):
            assert got.interactions(item) == ref.interactions(item), (name, item)
            g = got.score[got.index[item]] * 2.0 ** (((got.t0 or 0) - (ref.t0 or 0)) / got.half_life) \
                if item in got.index else 0.0
            r = ref.score[ref.index[item]] if item in ref.index else 0.0
            assert np.isclose(g, r, rtol=1e-9, atol=1e-9), (name, item, g, r)
    pairs = {(a, b) for a, row in state.covisit.counts.items() for b in row} | \
            {(a, b) for a, row in want.covisit.counts.items() for b in row}
    for a, b in pairs:
        assert np.isclose(state.covisit.counts[a].get(b, 0.0), want.covisit.counts[a].get(b, 0.0), atol=1e-9), (a, b)
    got, ref = state.baskets, want.baskets  # co-purchase: baskets per item and per pair
    assert {i: round(c, 9) for i, c in got.baskets.items()} == {i: round(c, 9) for i, c in ref.baskets.items()}
    assert {a: {b: round(c, 9) for b, c in row.items()} for a, row in got.pairs.items()} == \
        {a: {b: round(c, 9) for b, c in row.items()} for a, row in ref.pairs.items()}


def _set_schema_version(backend, version: int) -> None:
    if backend.name == "sqlite":
        import sqlite3

        con = sqlite3.connect(backend.url)
        con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(version),))
        con.commit()
        con.close()
    else:
        import psycopg

        with psycopg.connect(backend.url) as conn:
            conn.execute("UPDATE meta SET value = %s WHERE key = 'schema_version'", (str(version),))


def test_event_store_urls():
    with pytest.raises(ValueError, match="postgresql://"):
        open_event_store("mysql://h/db", pseudonym_key=KEY)
    from retriever.eventstore.postgres import PostgresEventStore

    with pytest.raises(ConnectionError, match="cannot connect to PostgreSQL"):
        PostgresEventStore("postgresql://nobody@/nodb?host=/nonexistent", pseudonym_key=KEY, timeout_s=1.0)

