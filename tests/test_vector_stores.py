"""ItemIndex on every vector store (FAISS in process, Milvus Lite): business filters, upserts and
deletes visible at once, a restart that replays the log into an existing collection, and
``semrec index --vector-store``."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

import indexer.memory
from api.cli import app as cli
from indexer.embed import normalize
from indexer.milvus import MilvusIndex, attach, collection_name, expression, parse_url
from indexer.schema import make_items
from indexer.store import ItemIndex
from indexer.table import Filters
from indexer.wal import holds_entries

DIM = 16
RNG = np.random.default_rng(11)


def catalog(n: int, start: int = 0):
    items = make_items([{"item_id": f"i{j}", "title": f"item {j}", "brand": "Odd" if j % 2 else "even",
                         "categories": ["All", f"C{j % 5}"], "price": float(j) if j % 7 else None,
                         "in_stock": j % 3 != 0} for j in range(start, start + n)])
    return items, normalize(RNG.normal(size=(n, DIM)))


@pytest.fixture(params=["faiss", "milvus"])
def store(request, tmp_path, monkeypatch):
    """``open(n) -> (ItemIndex saved in tmp_path/ix, its vectors)`` on that store. Filters of any
    size go through the store (no exact subset scan), so Milvus expressions are what is tested."""
    monkeypatch.setattr(indexer.memory, "EXACT_SUBSET_MAX", 0)
    url = request.getfixturevalue("milvus_url") if request.param == "milvus" else None
    attached: list[MilvusIndex] = []

    class Store:
        name = request.param

        @staticmethod
        def open(n: int) -> tuple[ItemIndex, np.ndarray]:
            idx = ItemIndex(model="test-model", dim=DIM, kind="flat")
            items, vecs = catalog(n)
            idx.add(items, vecs)
            idx.save(tmp_path / "ix")
            return Store.attach(idx), vecs

        @staticmethod
        def attach(idx: ItemIndex) -> ItemIndex:
            if url is not None:
                attached.append(attach(idx, url))
            return idx

    yield Store
    for m in attached:
        if m.client.has_collection(m.collection):
            m.drop()


def brute(vecs, q, k, allowed):
    """Exact top-k labels among ``allowed``, -1 padded."""
    s = q @ vecs.T
    s[:, ~allowed] = -np.inf
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.where(np.isfinite(np.take_along_axis(s, order, 1)), order, -1)


class TestItemIndexOnEveryVectorStore:
    def test_filters_match_brute_force(self, store):
        idx, vecs = store.open(400)
        q = normalize(RNG.normal(size=(6, DIM)))
        j = np.arange(400)
        has_price = j % 7 != 0
        cases = [(Filters(category="c3", brand="ODD", min_price=50, max_price=350, in_stock=True),
                  (j % 5 == 3) & (j % 2 == 1) & (j >= 50) & (j <= 350) & (j % 3 != 0) & has_price),
                 (Filters(max_price=100), (j <= 100) & has_price),
                 (Filters(in_stock=False, category="ALL"), j % 3 == 0),
                 (Filters(brand="nobody"), np.zeros(400, bool))]
        for f, allowed in cases:
            labels, scores = idx.search(q, 7, f)
            assert np.array_equal(labels, brute(vecs, q, 7, allowed)), f
            assert all(np.all(np.diff(row[np.isfinite(row)]) <= 1e-6) for row in scores)

    def test_an_allowed_mask_combines_with_filters(self, store):
        idx, vecs = store.open(300)
        q = vecs[:4]
        mask = np.ones(300, bool)
        mask[np.arange(0, 300, 2)] = False  # leave out even labels (like bought items)
        labels, _ = idx.search(q, 5, Filters(category="c1"), allowed=mask)
        j = np.arange(300)
        assert np.array_equal(labels, brute(vecs, q, 5, mask & (j % 5 == 1)))

    def test_upserts_and_deletes_are_visible_at_once(self, store):
        idx, vecs = store.open(200)
        new = normalize(RNG.normal(size=(1, DIM)))
        idx.add(make_items([{"item_id": "i7", "title": "item 7 v2", "brand": "Fresh", "categories": ["New"]}]), new)
        top = idx.search(new, 1)[0][0, 0]
        assert idx.table.records[top]["item_id"] == "i7"
        assert idx.table.ids(idx.search(new, 3, Filters(brand="fresh"))[0])[0][0] == "i7"
        assert 7 not in idx.search(vecs[7:8], 200)[0]  # the replaced row is gone
        assert idx.delete("i7")
        assert "i7" not in idx.table.ids(idx.search(new, 199)[0])[0]
        assert (idx.search(new, 3, Filters(brand="fresh"))[0] == -1).all()

    def test_a_restart_replays_the_log_into_the_store(self, store, tmp_path):
        idx, vecs = store.open(150)
        idx.open_log()
        extra, extra_vecs = catalog(3, start=1000)
        idx.add(extra, extra_vecs)
        idx.delete("i5")
        again = store.attach(ItemIndex.load(tmp_path / "ix"))
        labels, _ = again.search(extra_vecs, 1)
        assert [again.table.records[lab]["item_id"] for lab in labels[:, 0]] == ["i1000", "i1001", "i1002"]
        assert "i5" not in again.table.ids(again.search(vecs[5:6], 150)[0])[0]
        if store.name == "milvus":  # the same collection, brought up to date: one row per live item
            rows = again.index.client.query(again.index.collection, filter="label >= 0", output_fields=["label"])
            assert sorted(r["label"] for r in rows) == sorted(again.table.label_of.values())


def test_filters_become_milvus_expressions():
    f = Filters(category='Hair "Care"', brand="L'Oréal", min_price=5, max_price=10.5, in_stock=False)
    assert expression(f) == ['brand == "l\'oréal"', 'array_contains(categories, "hair \\"care\\"")',
                             "price >= 5.0", "price <= 10.5", "in_stock == false"]
    assert expression(None) == [] and expression(Filters()) == []


def test_vector_store_urls():
    assert parse_url("milvus:///tmp/x/v.db") == {"uri": "/tmp/x/v.db"}
    assert parse_url("milvus://db.internal") == {"uri": "http://db.internal:19530"}
    assert parse_url("milvus://u:p%40ss@h:1234") == {"uri": "http://h:1234", "token": "u:p@ss"}
    for bad in ("faiss", "milvus:///tmp/x", "http://h:19530"):
        with pytest.raises(ValueError):
            parse_url(bad)


def test_semrec_index_builds_into_milvus(tiny_catalog, tmp_path, milvus_url, milvus_client):
    from indexer.loaders import load_own

    items_file = tmp_path / "items.jsonl"
    tiny_catalog.items.to_json(items_file, orient="records", lines=True)
    r = CliRunner().invoke(cli, ["index", str(items_file), "--out", str(tmp_path / "ix"), "--format", "own",
                                 "--vector-store", milvus_url])
    assert r.exit_code == 0, r.output
    idx = ItemIndex.load(tmp_path / "ix")
    name = collection_name(idx.snapshot_id)
    assert f"collection {name}" in r.output
    assert milvus_client.get_collection_stats(name)["row_count"] == len(load_own(items_file).items)
    r = CliRunner().invoke(cli, ["index", str(items_file), "--out", str(tmp_path / "ix2"), "--vector-store",
                                 "milvus://"])
    assert r.exit_code == 2 and "--vector-store" in r.output
    milvus_client.drop_collection(name)


def test_serve_refuses_workers_that_cannot_share_the_vector_store(tmp_path, monkeypatch):
    monkeypatch.delenv("SEMREC_DB_URL", raising=False)
    for store, says in ((f"milvus://{tmp_path}/v.db", "Milvus Lite serves one process"),
                        ("milvus://milvus.internal:19530", "SEMREC_DB_URL")):
        monkeypatch.setenv("SEMREC_VECTOR_STORE", store)
        r = CliRunner().invoke(cli, ["serve", "--index", str(tmp_path), "--workers", "2"])
        assert r.exit_code == 2 and says in r.output, r.output


def _session(client) -> list:
    """A fixed sequence of catalog writes, events, an erasure and reads; what the reads answered."""
    def ids(path, **params):
        return [x["item_id"] for x in client.get(path, params=params).json()["results"]]

    seen = [ids("/items/dryer/similar", k=3), ids("/items/dryer/similar", k=3, brand="breeze")]
    assert client.put("/items/diffuser", json={"title": "Hair dryer diffuser attachment for curls", "brand": "Breeze",
                                               "categories": ["Beauty", "Hair Care"]}).status_code == 200
    seen += [ids("/items/dryer/similar", k=3), ids("/search", q="diffuser for curly hair", k=3)]
    assert client.delete("/items/dryer-travel").status_code == 204
    seen.append(ids("/items/dryer/similar", k=3))
    events = [{"event_id": f"p{n}", "user_id": f"u{n % 2}", "item_id": item, "type": "purchase"}
              for n, item in enumerate(["tent", "espresso", "tent", "grinder"])]
    assert client.post("/events", json={"events": events}).json()["stored"] == 4
    seen += [ids("/users/stranger/recommendations", k=3), ids("/users/u0/recommendations", k=3)]
    assert client.delete("/users/u0").status_code == 204
    seen.append(ids("/users/stranger/recommendations", k=3))
    return seen


def test_the_service_on_postgresql_and_milvus_answers_as_on_the_defaults(tiny_catalog, embedder, tmp_path, pg_url):
    """Settings alone switch the backends (events in PostgreSQL, catalog changes through its feed,
    vectors in Milvus Lite), and the API answers the same requests with the same items."""
    from fastapi.testclient import TestClient

    from api.app import create_app
    from api.settings import Settings
    from indexer.build import build_index

    answers = {}
    for name in ("defaults", "scale-out"):
        build_index(tiny_catalog, embedder, progress=False).save(tmp_path / name / "ix")
        settings = Settings(index_dir=tmp_path / name / "ix", db_path=tmp_path / name / "events.db", auth=False)
        if name == "scale-out":
            settings = settings.model_copy(update={"db_url": pg_url, "vector_store": f"milvus://{tmp_path}/api.db"})
        with TestClient(create_app(settings)) as client:
            c = client.app.state.components
            assert (c.svc.index.index.kind == "milvus" and c.svc.index.feed is not None) == (name == "scale-out")
            answers[name] = _session(client)
            assert c.svc.state.interactions("tent") == 0 and c.svc.state.interactions("espresso") == 1
    assert answers["scale-out"] == answers["defaults"]
    assert "diffuser" in answers["defaults"][2] and "dryer-travel" not in answers["defaults"][4]
    assert not holds_entries(tmp_path / "scale-out" / "ix" / "wal.jsonl")  # catalog changes went to PostgreSQL
    assert not (tmp_path / "scale-out" / "events.db").exists()
