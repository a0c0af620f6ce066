"""/search and /suggest through HTTP (FastAPI's TestClient): evidence, expansions, filters, the
422 cases, catalog updates, popular queries, and the 150 real ESCI shopper queries on the demo catalog."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from api.settings import SearchSettings, Settings
from indexer.build import EmbedConfig, build_index
from indexer.clean import clean_catalog
from indexer.loaders import load_catalog
from indexer.store import ItemIndex

from .conftest import make_app, open_events_for, shared_data

ROOT = Path(__file__).resolve().parent.parent


def make_client(index, embedder, tmp_path, **search_settings) -> TestClient:
    settings = Settings(index_dir=tmp_path / "ix", db_path=tmp_path / "events.db", auth=False,
                        rate_per_minute=1e9, rate_burst=1_000_000)  # the ESCI test sends 300 requests at once
    if search_settings:
        settings = settings.model_copy(update={"search": SearchSettings(**search_settings)})
    return TestClient(make_app(settings, index, embedder))


@pytest.fixture()
def client(tiny_catalog, embedder, tmp_path, one_thread):
    """A fresh service per test, for tests that change the catalog or the search box."""
    index = build_index(tiny_catalog, embedder, progress=False)
    with make_client(index, embedder, tmp_path) as c:
        yield c


@pytest.fixture(scope="module")
def shared_client(tiny_catalog, embedder, tmp_path_factory, one_thread):
    """One service for the tests that only read."""
    index = build_index(tiny_catalog, embedder, progress=False)
    with make_client(index, embedder, tmp_path_factory.mktemp("ro")) as c:
        yield c


def test_search_results_carry_evidence_and_expansion(shared_client):
    client = shared_client
    r = client.get("/search", params={"q": "espresso coffee", "k": 3})
    assert r.status_code == 200
    body = r.json()
    top = body["results"][0]
    assert top["item_id"] == "espresso" and top["score"] > 0
    assert set(top["evidence"]["retrievers"]) == {"lexical", "dense"}
    assert top["evidence"]["lexical_rank"] == 1 and {"espresso", "coffee"} <= set(top["evidence"]["matched_terms"])
    assert body["expansion"] == [] and body["llm"] == "off" and body["personalised"] is False
    expanded = client.get("/search", params={"q": "espresso coffee", "k": 3, "expand": "true"}).json()
    assert expanded["expansion"] and {e["source"] for e in expanded["expansion"]} <= {"catalog", "feedback"}
    assert client.get("/search", params={"q": "espresso", "llm": "true"}).json()["llm"] == "unavailable"


def test_search_filters_and_typos(shared_client):
    client = shared_client
    r = client.get("/search", params={"q": "hair", "brand": "sleek"}).json()
    assert [x["item_id"] for x in r["results"]] == ["straightener"]
    r = client.get("/search", params={"q": "lipstik", "in_stock": "true", "k": 2}).json()
    assert {x["item_id"] for x in r["results"]} == {"lipstick-red", "lipstick-red-2"}
    assert {"term": "lipstick", "source": "typo"} in r["expansion"]


@pytest.mark.parametrize("path", ["/search", "/suggest"])
@pytest.mark.parametrize("q", ["", "   ", "x" * 501, "a\x00b", "\x1b[31mred", "tab\there", "\x7f"])
def test_bad_queries_are_422_naming_q(shared_client, path, q):
    client = shared_client
    r = client.get(path, params={"q": q})
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert any("q" in d["loc"] for d in detail) and all(isinstance(d["msg"], str) for d in detail)


@pytest.mark.parametrize("path", ["/search", "/suggest"])
def test_binary_and_missing_queries_are_422(shared_client, path):
    client = shared_client
    r = client.get(f"{path}?q=%FF%FEab")  # bytes that are not UTF-8 (they arrive as U+FFFD)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "q"]
    assert client.get(path).status_code == 422


def test_suggest_completions_and_popular_queries(client):
    r = client.get("/suggest", params={"q": "lip", "k": 5})
    assert r.status_code == 200
    kinds = {s["text"]: s["kind"] for s in r.json()["suggestions"]}
    assert kinds["Lips"] == "category" and kinds["Matte red lipstick"] == "title"
    assert client.get("/suggest", params={"q": "brezee"}).json()["suggestions"][0] == {"text": "Breeze",
                                                                                       "kind": "brand"}
    # the same client twice (anonymous: one source), then one shopper twice: two sources, not yet popular
    for user in (None, None, "ann", "ann"):
        client.get("/search", params={"q": "travel hair dryer"} | ({"user_id": user} if user else {}))
    assert {"text": "travel hair dryer", "kind": "query"} not in client.get("/suggest", params={"q": "trav"}).json()[
        "suggestions"]
    client.get("/search", params={"q": "Travel hair  dryer", "user_id": "bob"})  # keys off: a user id is verified
    assert {"text": "travel hair dryer", "kind": "query"} in client.get("/suggest", params={"q": "trav"}).json()[
        "suggestions"]
    assert client.get("/suggest", params={"q": "zzzzzz"}).json()["suggestions"] == []


def test_updates_reach_search_and_suggest(client):
    body = {"title": "Gooseneck kettle KX-9000", "brand": "Pourwell", "categories": ["Kitchen", "Kettles"]}
    assert client.put("/items/kettle", json=body).status_code == 200
    top = client.get("/search", params={"q": "KX-9000", "k": 1}).json()["results"][0]
    assert top["item_id"] == "kettle" and top["evidence"]["lexical_rank"] == 1
    c = client.app.state.components
    c.svc.search.suggester.wait()
    assert "Pourwell" in [s["text"] for s in client.get("/suggest", params={"q": "pour"}).json()["suggestions"]]
    assert client.delete("/items/kettle").status_code == 204
    assert "kettle" not in [x["item_id"] for x in client.get("/search", params={"q": "KX-9000"}).json()["results"]]
    assert "Gooseneck kettle KX-9000" not in [
        s["text"] for s in client.get("/suggest", params={"q": "gooseneck"}).json()["suggestions"]]


def test_personalised_search_follows_the_shoppers_events(tiny_catalog, embedder, tmp_path, one_thread):
    settings = Settings(index_dir=tmp_path / "ix", db_path=tmp_path / "events.db", auth=False)
    store, state = open_events_for(settings)
    with TestClient(make_app(settings, build_index(tiny_catalog, embedder, progress=False), embedder, store,
                             state)) as client:
        client.get("/search", params={"q": "warm up"})  # builds the search box
        c = client.app.state.components
        c.svc.search.engine.config = replace(c.svc.search.engine.config, personal_weight=2.0)
        event = {"event_id": "e1", "user_id": "camper", "item_id": "tent", "type": "purchase"}
        assert client.post("/events", json={"events": [event]}).json()["stored"] == 1
        r = client.get("/search", params={"q": "waterproof gear", "user_id": "camper", "k": 3}).json()
        # one purchase: the shopper's one interest is the tent's own vector
        assert r["personalised"] is True and r["results"][0]["item_id"] == "tent"
        assert r["results"][0]["evidence"]["personal_score"] == pytest.approx(1.0, abs=1e-4)
        stranger = client.get("/search", params={"q": "waterproof gear", "user_id": "stranger"}).json()
        assert stranger["personalised"] is False
        assert client.get("/search", params={"q": "x", "user_id": "a\x00"}).status_code == 422


@pytest.fixture(scope="module")
def demo_client(embedder, tmp_path_factory, request, one_thread):
    """The demo catalog (300 products, some Chinese), items embedded without their reviews to keep
    the build short, kept in pytest's cache between runs (keyed by the catalog's bytes and the
    model); search settings as served, expansion on."""
    demo = ROOT / "data" / "demo"
    digest = hashlib.sha256((demo / "items.jsonl").read_bytes()).hexdigest()[:12]
    folder = Path(request.config.cache.mkdir("semrec-search-demo")) / f"{embedder.name}-{digest}"
    if (folder / "CURRENT").exists():
        index = ItemIndex.load(folder, expect_model=embedder.name)
    else:
        catalog, _ = clean_catalog(load_catalog(demo))
        index = build_index(catalog, embedder, kind="flat", cfg=EmbedConfig(max_reviews=0), progress=False)
        index.save(folder)
    with make_client(index, embedder, tmp_path_factory.mktemp("demo"), expand=True,
                     vocab_cache_dir=folder.parent / "vocab") as c:
        yield c


def test_esci_queries_run_through_search_and_suggest(demo_client):
    queries = [q["queryText"] for q in json.loads(
        (shared_data("esci-judgments-partial") / "esci_us_queryset.json").read_text())["querySetQueries"]]
    assert len(queries) == 150
    found = 0
    for q in queries:
        r = demo_client.get("/search", params={"q": q, "k": 10})
        assert r.status_code == 200, (q, r.text)
        body = r.json()
        found += bool(body["results"])
        assert all(np.isfinite(x["score"]) for x in body["results"])
        assert all(e["source"] in {"catalog", "feedback", "typo"} for e in body["expansion"])
        s = demo_client.get("/suggest", params={"q": q[:4]})
        assert s.status_code == 200, (q, s.text)
    assert found == 150  # the dense retriever always returns something


def test_demo_catalog_mixed_languages(demo_client):
    r = demo_client.get("/search", params={"q": "保温杯", "k": 3, "expand": "false"}).json()
    assert "保温杯" in r["results"][0]["title"] and r["results"][0]["evidence"]["lexical_rank"] == 1
    r = demo_client.get("/search", params={"q": "ionik hair dryer", "k": 3}).json()
    assert all(x["brand"] == "Ionique Pro" for x in r["results"])
    s = demo_client.get("/suggest", params={"q": "保温"}).json()["suggestions"]
    assert s and all("保温" in x["text"] for x in s)
