"""The load generator against a real `semrec serve` subprocess on a tiny index: no errors, every
route exercised, and every acknowledged event found in the event log."""

from __future__ import annotations

import json

import pytest

from api.settings import DEV_PSEUDONYM_KEY
from bench.loadtest import format_report, run
from bench.traffic import ROUTES, percentile, summarize
from indexer.build import build_index
from retriever.eventstore import open_event_store
from retriever.personal import import_reviews


def test_percentile_and_summary():
    assert percentile([], 50) != percentile([], 50)  # nan
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 99), percentile(values, 100)) == (50.0, 99.0, 100.0)
    s = summarize([("search", "ok", 0.01), ("search", "HTTP 500", 0.02), ("events", "unsent (max in flight)", None)],
                  2.0)
    assert s["requests"] == 2 and s["errors"] == 2 and s["throughput_rps"] == 1.0
    assert s["errors_by_kind"] == {"search HTTP 500": 1, "events unsent (max in flight)": 1}
    assert s["routes"]["search"]["p99_ms"] == 20.0


@pytest.mark.parametrize("log", ["sqlite", "postgres"])
def test_load_run_against_real_server(log, tmp_path, tiny_catalog, embedder, request):
    build_index(tiny_catalog, embedder, kind="flat", progress=False).save(tmp_path / "ix")
    db = tmp_path / "events.db" if log == "sqlite" else request.getfixturevalue("pg_url")  # SEMREC_DB_URL
    store = open_event_store(db, pseudonym_key=DEV_PSEUDONYM_KEY)
    import_reviews(store, tiny_catalog.reviews, "tiny")
    store.close()
    users = tmp_path / "users.jsonl"
    users.write_text("".join(json.dumps({"user_id": u}) + "\n" for u in tiny_catalog.reviews["user_id"]))

    r = run(tmp_path / "ix", db, duration=5, rate=8, mix={route: 0.25 for route in ROUTES}, batch=5,
            users=users, server_log=tmp_path / "server.log", startup_s=180, log=lambda m: None)

    print(format_report(r))
    s = r["summary"]
    assert s["errors"] == 0, s["errors_by_kind"]
    assert all(s["routes"][route]["requests"] > 0 for route in ROUTES), s["routes"]
    assert r["events"]["acknowledged"] > 0
    assert r["events"]["acknowledged"] == r["events"]["in_log"] and r["events"]["ok"], r["events"]
    assert r["server_errors"] == [] and r["ok"]
