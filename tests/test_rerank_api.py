"""The reranking stage in the service: a tiny trained cross-encoder reorders recommendations, similar
items and search; fusion, MMR and reasons as configured; a bad model dir stops start-up."""

from __future__ import annotations

import json
import time
from dataclasses import replace

import numpy as np
import pytest
from fastapi.testclient import TestClient

from api.deps import load_components
from api.experiments import Variant
from api.settings import RerankSettings, Settings
from evaluation.protocol import sequences_from_reviews
from indexer.store import ItemIndex
from ranker.model import Reranker, RerankerLoadError
from ranker.reasons import Evidence, list_reasons
from ranker.rerank import FusionWeights, RerankConfig, fused_scores, rerank_list

from .conftest import make_app, open_events_for


@pytest.fixture(scope="module")
def small_index(beauty_small, embedder):
    """The 300 Beauty items the tiny reranker was trained on, with their vectors (no re-embedding)."""
    catalog, vectors = beauty_small
    _, item_ids, _ = sequences_from_reviews(catalog.reviews)
    items = catalog.items.set_index("item_id").loc[item_ids].reset_index()
    index = ItemIndex(model=embedder.name, dim=embedder.dim, kind="flat")
    index.add(items, vectors)
    return index


@pytest.fixture()
def make_client(small_index, embedder, trained_ranker, tmp_path):
    clients = []

    def make(**rerank) -> TestClient:
        n = len(clients)
        settings = Settings(index_dir=tmp_path / f"ix{n}", db_path=tmp_path / f"events{n}.db", auth=False,
                            ranker_dir=trained_ranker[0], rerank=RerankSettings(**rerank),
                            variants=[Variant(name="on", share=0.5), Variant(name="off", share=0.5, rerank=False)])
        small_index.save(settings.index_dir)
        store, state = open_events_for(settings)
        client = TestClient(make_app(settings, small_index, embedder, store, state, Reranker(trained_ranker[0])))
        client.__enter__()
        clients.append((client, store))
        return client

    yield make
    for client, store in clients:
        client.__exit__(None, None, None)
        store.close()


def history(client, user: str, items: list[str]) -> None:
    now = time.time()
    events = [{"event_id": f"{user}-{n}", "user_id": user, "item_id": i, "type": "click", "timestamp": now - 60 + n}
              for n, i in enumerate(items)]
    assert client.post("/events", json={"events": events}).json()["stored"] == len(items)


def get(client, path: str, **params) -> list[dict]:
    r = client.get(path, params=params)
    assert r.status_code == 200, r.text
    return r.json()["results"]


def test_recommendations_follow_the_fused_reranker_order(make_client, small_index, trained_ranker):
    client = make_client(top_n=20, mmr_lambda=1.0)
    items = [r["item_id"] for r in small_index.table.records[:40:7]]
    history(client, "u1", items)
    off = get(client, "/users/u1/recommendations", k=20, variant="off")
    on = get(client, "/users/u1/recommendations", k=10, variant="on")
    assert {r["item_id"] for r in on} <= {r["item_id"] for r in off}  # reranking invents nothing
    # brute force: the same candidates scored one by one and fused with the default weights
    rr = Reranker(trained_ranker[0])
    records = [small_index.table.get(i) for i in items]
    context = rr.context_for(records)
    labels = np.array([small_index.table.label_of[r["item_id"]] for r in off])
    scores = rr.score(context, rr.texts_for([small_index.table.get(r["item_id"]) for r in off]))
    retrieval = np.array([r["score"] for r in off], dtype=np.float32)
    counts = np.array([float(r["item_id"] in items) for r in off])  # the clicks are the only interactions
    want = fused_scores(labels, scores, retrieval, counts, FusionWeights(), 10)[0]
    assert [r["item_id"] for r in on] == [small_index.table.records[lab]["item_id"] for lab in want]
    assert all(r["reason"] for r in on[:3])
    assert {r["reason_kind"] for r in on} <= {"history", "interest", "covisit", "popular", "trending", "personal"}


def test_variant_without_rerank_keeps_the_retrieval_order(make_client, small_index):
    client = make_client(mmr_lambda=1.0)
    history(client, "u2", [r["item_id"] for r in small_index.table.records[5:30:6]])
    off = get(client, "/users/u2/recommendations", k=10, variant="off")
    assert [r["score"] for r in off] == sorted((r["score"] for r in off), reverse=True)


def test_mmr_spreads_the_list(make_client, small_index):
    plain, spread = make_client(mmr_lambda=1.0), make_client(mmr_lambda=0.3)
    for client in (plain, spread):
        history(client, "u3", [r["item_id"] for r in small_index.table.records[:50:10]])

    def mean_sim(results):
        v = small_index.vectors_of([r["item_id"] for r in results])
        s = v @ v.T
        return (s.sum() - np.trace(s)) / (len(v) * (len(v) - 1))

    a, b = (get(c, "/users/u3/recommendations", k=10, variant="on") for c in (plain, spread))
    assert mean_sim(b) < mean_sim(a)


def test_similar_and_search_rerank_when_asked(make_client, small_index):
    item = small_index.table.records[3]["item_id"]
    client = make_client(top_n=15, similar=True, search=True)
    similar = get(client, f"/items/{item}/similar", k=5)
    plain = make_client(top_n=15)
    assert len(similar) == 5 and item not in {r["item_id"] for r in similar}
    candidates = {r["item_id"] for r in get(plain, f"/items/{item}/similar", k=15)}
    assert {r["item_id"] for r in similar} <= candidates
    hits = get(client, "/search", q="shampoo for dry hair", k=5)
    assert hits and all(h["evidence"]["rerank_score"] is not None for h in hits)
    assert all(h["evidence"]["rerank_score"] is None for h in get(plain, "/search", q="shampoo for dry hair", k=5))


def test_reasons_from_history_interest_and_source(tiny_index, embedder):
    dryer_vec = tiny_index.vectors_of(["dryer-travel"])
    ev = Evidence(history=["dryer-travel"])
    [why] = list_reasons(tiny_index, np.array([tiny_index.table.label_of["dryer"]]), ev, [["dense"]])
    assert why.kind == "history" and why.text.startswith("because you viewed Compact travel hair dryer")
    ev = Evidence(history=["dryer-travel"], actions={"dryer-travel": "purchase"})
    [why] = list_reasons(tiny_index, np.array([tiny_index.table.label_of["dryer"]]), ev, [["dense"]])
    assert why.text.startswith("because you bought Compact travel hair dryer")  # the verb says what they did
    ev = Evidence(interests=["coffee"], interest_vectors=embedder.encode(["coffee"]))
    [why] = list_reasons(tiny_index, np.array([tiny_index.table.label_of["espresso"]]), ev, [["dense"]])
    assert why.kind == "interest" and why.text == "matches your interest in coffee"
    ev = Evidence(history=["tent"])  # a tent says nothing about a dryer: the dense hit is just "picked for you"
    [why] = list_reasons(tiny_index, np.array([tiny_index.table.label_of["dryer"]]), ev, [["dense"]])
    assert (why.kind, why.text) == ("personal", "picked for you")
    [why] = list_reasons(tiny_index, np.array([tiny_index.table.label_of["dryer"]]), ev, [["dense", "popular"]])
    assert why.kind == "popular"  # the next source says it
    [why] = list_reasons(tiny_index, np.array([tiny_index.table.label_of["tent"]]), Evidence(), [["popular"]])
    assert why.kind == "popular" and why.text == "popular with shoppers now"
    assert dryer_vec.shape == (1, embedder.dim)


def test_rerank_list_without_reranker_is_mmr_over_retrieval(tiny_index):
    labels = np.array([tiny_index.table.label_of[i] for i in ("lipstick-red", "lipstick-red-2", "lipstick-nude",
                                                                 "dryer", "tent")])
    retrieval = np.array([0.9, 0.89, 0.88, 0.5, 0.4], dtype=np.float32)

    same, _ = rerank_list(tiny_index, labels, retrieval, 3, reranker=None, context="", counts=np.zeros(5),
                          cfg=RerankConfig(mmr_lambda=1.0))
    assert same.tolist() == labels[:3].tolist()
    spread, _ = rerank_list(tiny_index, labels, retrieval, 3, reranker=None, context="", counts=np.zeros(5),
                            cfg=replace(RerankConfig(), mmr_lambda=0.5))
    assert spread[0] == labels[0] and tiny_index.table.label_of["lipstick-red-2"] not in spread[:2]


def test_bad_ranker_dir_fails_at_start_up(small_index, tmp_path):
    small_index.save(tmp_path / "ix")
    (tmp_path / "empty").mkdir()
    for bad in (tmp_path / "missing", tmp_path / "empty"):
        with pytest.raises(RerankerLoadError, match=str(bad.name)):
            load_components(Settings(index_dir=tmp_path / "ix", db_path=tmp_path / "e.db", ranker_dir=bad))


def test_the_service_attaches_a_split_reranker_to_its_index(small_index, trained_split, trained_ranker, tmp_path):
    from api.app import create_app

    small_index.save(tmp_path / "ix")
    for path, attached in ((trained_split[0], True), (trained_ranker[0], False)):
        c = load_components(Settings(index_dir=tmp_path / "ix", db_path=tmp_path / "e.db", auth=False,
                                     ranker_dir=path))
        assert c.svc.reranker.architecture == ("split" if attached else "cross")
        assert c.svc.reranker.attached_to(c.svc.index) is attached
        if attached:  # every item's states, and a request reranks from them (no item text encoded)
            assert len(c.svc.reranker.states) == len(c.svc.index)
            with TestClient(create_app(components=c)) as client:
                history(client, "u-split", [r["item_id"] for r in small_index.table.records[:40:7]])
                assert len(get(client, "/users/u-split/recommendations", k=10)) == 10
            assert len(c.svc.reranker.split._cache) == 0
        c.svc.events.close()


def test_the_exploration_slot_keeps_its_place(make_client, small_index, embedder):
    """A new item close to the shopper's interests takes the last place, through reranking and MMR."""
    client = make_client(top_n=20, mmr_lambda=0.8)
    items = [r["item_id"] for r in small_index.table.records[:40:7]]
    history(client, "u5", items)
    title = small_index.table.get(items[-1])["title"]
    assert client.put("/items/brand-new", json={"title": title + " (new edition)"}).status_code == 200
    r = client.get("/users/u5/recommendations", params={"k": 10, "variant": "on"}).json()
    assert r["results"][-1]["item_id"] == "brand-new" and "new" in r["results"][-1]["sources"]
    assert r["stages"] == ["fusion", "rerank", "mmr", "explore"]
    assert sum("new" in x["sources"] for x in r["results"]) == 1


def test_train_ranker_from_the_event_log(beauty_small, small_index, tmp_path, monkeypatch):
    """`semrec train-ranker --db --index`: the service's own events become training data."""
    from typer.testing import CliRunner

    from api.cli import app as cli
    from api.settings import DEV_PSEUDONYM_KEY
    from retriever.eventstore import open_event_store
    from retriever.personal import import_reviews

    catalog, _ = beauty_small
    small_index.save(tmp_path / "ix")
    store = open_event_store(tmp_path / "events.db", pseudonym_key=DEV_PSEUDONYM_KEY)
    read, stored = import_reviews(store, catalog.reviews, "beauty")
    store.close()
    assert read == stored == len(catalog.reviews)
    monkeypatch.chdir(tmp_path)  # the vector cache goes under runs/ of the working directory
    args = ["train-ranker", "--db", str(tmp_path / "events.db"), "--index", str(tmp_path / "ix"),
            "--out", str(tmp_path / "ranker"), "--users", "0", "--layers", "1", "--minutes", "0.3"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    model = Reranker(tmp_path / "ranker")
    card = json.loads((model.path / "model_card.json").read_text())
    assert card["data"]["source"].startswith("event log") and card["data"]["n_interactions"] == len(catalog.reviews)
    assert CliRunner().invoke(cli, ["train-ranker", "--out", str(tmp_path / "r2")]).exit_code == 2  # no data given
