"""The HTTP API through a real HTTP client (FastAPI's TestClient), on the tiny real index."""

import pytest
from fastapi.testclient import TestClient

from api.settings import Settings
from indexer.build import build_index

from .conftest import make_app


@pytest.fixture()
def client(tiny_catalog, embedder, tmp_path):
    index = build_index(tiny_catalog, embedder, progress=False)
    index.save(tmp_path / "ix")
    index.open_log()
    app = make_app(Settings(index_dir=tmp_path / "ix", auth=False), index, embedder)
    with TestClient(app) as c:
        yield c


def test_health_and_docs(client):
    h = client.get("/health").json()
    assert h == {"status": "ok", "items": 9, "model": "minilm", "dim": 384, "index_kind": "flat"}
    assert "/items/{item_id}/similar" in client.get("/openapi.json").json()["paths"]


def test_docs_page_loads_its_assets_from_the_app(client):
    import re

    html = client.get("/docs").text
    assets = re.findall(r"""(?:src|href)=['"]([^'"]+)['"]""", html)
    assert any(a.endswith("swagger-ui-bundle.js") for a in assets) and any(a.endswith(".css") for a in assets)
    for url in assets:
        assert url.startswith("/"), url  # nothing from a CDN: /docs works offline
        assert client.get(url).status_code == 200, url


def test_get_item(client):
    r = client.get("/items/grinder")
    assert r.status_code == 200
    assert r.json()["price"] is None and r.json()["categories"] == ["Kitchen", "Coffee"]
    r = client.get("/items/nope")
    assert r.status_code == 404 and "nope" in r.json()["detail"]


def test_similar_with_filters(client):
    r = client.get("/items/dryer/similar", params={"k": 2})
    assert r.status_code == 200
    body = r.json()
    assert body["item_id"] == "dryer" and [x["item_id"] for x in body["results"]][0] == "dryer-travel"
    assert len(body["results"]) == 2
    r = client.get("/items/dryer/similar", params={"brand": "rouge", "in_stock": "true"})
    # two listings of one lipstick (same title): the list shows one of them
    assert len({x["item_id"] for x in r.json()["results"]} & {"lipstick-red", "lipstick-red-2"}) == 1
    assert client.get("/items/missing/similar").status_code == 404


@pytest.mark.parametrize("params,field", [
    ({"k": 0}, "k"), ({"k": 101}, "k"), ({"k": "ten"}, "k"), ({"min_price": -1}, "min_price"),
    ({"min_price": 50, "max_price": 10}, "max_price"), ({"in_stock": "maybe"}, "in_stock"),
])
def test_bad_parameters_name_the_field(client, params, field):
    r = client.get("/items/dryer/similar", params=params)
    assert r.status_code == 422
    assert any(field in d["loc"] for d in r.json()["detail"])


def test_search(client):
    r = client.get("/search", params={"q": "something to brew coffee at home", "k": 3})
    assert r.status_code == 200
    assert {x["item_id"] for x in r.json()["results"][:2]} == {"espresso", "grinder"}
    for q in ["", "   ", "x" * 501, "a\x00b"]:
        assert client.get("/search", params={"q": q}).status_code == 422


def test_put_is_searchable_at_once_and_delete_removes(client):
    body = {"title": "Rose gold curling wand 25mm", "brand": "Breeze", "categories": ["Beauty", "Hair Care"],
            "price": 35, "reviews": [{"text": "Beach waves in ten minutes, holds all day.", "rating": 5}]}
    r = client.put("/items/wand", json=body)
    assert r.status_code == 200 and r.json() == {"item_id": "wand", "created": True}
    top = client.get("/search", params={"q": "curling wand for beach waves", "k": 1}).json()["results"]
    assert top[0]["item_id"] == "wand"
    assert "wand" in [x["item_id"] for x in client.get("/items/dryer/similar").json()["results"]]
    assert client.put("/items/wand", json={**body, "price": 30}).json()["created"] is False
    assert client.get("/items/wand").json()["price"] == 30
    pools = client.app.state.components.svc.index.pools
    assert pools["wand"].count == 1  # the same review sent again counts once
    client.put("/items/wand", json={**body, "price": 30, "reviews": [{"text": "Heats up in 30 seconds."}]})
    assert pools["wand"].count == 2  # a new one joins it
    assert client.get("/health").json()["items"] == 10
    assert client.delete("/items/wand").status_code == 204
    assert client.get("/items/wand").status_code == 404
    assert client.delete("/items/wand").status_code == 404
    assert "wand" not in [x["item_id"] for x in client.get("/items/dryer/similar").json()["results"]]


@pytest.mark.parametrize("body,field", [
    ({}, "title"), ({"title": "   "}, "title"), ({"title": "x", "price": -3}, "price"),
    ({"title": "x", "categories": "Beauty"}, "categories"), ({"title": "x", "colour": "red"}, "colour"),
    ({"title": "x", "reviews": [{"text": ""}]}, "text"), ({"title": "x" * 501}, "title"),
])
def test_bad_items_are_rejected_and_change_nothing(client, body, field):
    r = client.put("/items/bad", json=body)
    assert r.status_code == 422
    assert any(field in map(str, d["loc"]) for d in r.json()["detail"])
    assert client.get("/items/bad").status_code == 404


def test_oversized_body_is_413(client):
    r = client.put("/items/big", json={"title": "x", "description": "y" * 1_100_000})
    assert r.status_code == 413 and "at most" in r.json()["detail"]


def test_updates_survive_a_restart(client, tmp_path, embedder):
    from api.deps import load_components

    client.put("/items/kettle", json={"title": "Gooseneck pour-over kettle", "categories": ["Kitchen"]})
    client.delete("/items/tent")
    c = load_components(Settings(index_dir=tmp_path / "ix"))
    assert c.svc.index.table.get("kettle") is not None and c.svc.index.table.get("tent") is None


def test_stock_is_claimed_only_when_the_catalog_has_stock_data(tiny_catalog, embedder, tmp_path):
    from dataclasses import replace

    from indexer.loaders import load_catalog, write_items
    from indexer.store import ItemIndex

    # The own format: a file with an in_stock column knows its stock, one without does not.
    write_items(tiny_catalog.items, tmp_path / "with.jsonl")
    tiny_catalog.items[["item_id", "title", "brand"]].to_csv(tmp_path / "without.csv", index=False)
    assert load_catalog(tmp_path / "with.jsonl").stock_known
    assert not load_catalog(tmp_path / "without.csv").stock_known
    for stock_known, expected in ((True, {"dryer": True, "lipstick-nude": False}),
                                  (False, {"dryer": None, "lipstick-nude": False})):
        index = build_index(replace(tiny_catalog, stock_known=stock_known), embedder, progress=False)
        index.save(tmp_path / f"ix-{stock_known}")  # the flag lives in the manifest
        loaded = ItemIndex.load(tmp_path / f"ix-{stock_known}")
        app = make_app(Settings(index_dir=tmp_path, auth=False), loaded, embedder)
        with TestClient(app) as c:
            assert {i: c.get(f"/items/{i}").json()["in_stock"] for i in expected} == expected
