"""Access control, rate limits, CORS, metrics and logs, through HTTP."""

import json
import logging

import pytest
from fastapi.testclient import TestClient

from api.security import ApiKey, TokenBuckets, digest, find_key, new_key
from api.settings import Settings
from indexer.build import build_index

from .conftest import make_app

ADMIN, INGEST, READ = "sk_admin_secret", "sk_ingest_secret", "sk_read_secret"
KEYS = [ApiKey(name="ops", role="admin", sha256=digest(ADMIN)),
        ApiKey(name="shop", role="ingest", sha256=digest(INGEST)),
        ApiKey(name="bi", role="read", sha256=digest(READ))]


@pytest.fixture(scope="module")
def index(tiny_catalog, embedder, tmp_path_factory):
    ix = build_index(tiny_catalog, embedder, progress=False)
    ix.save(tmp_path_factory.mktemp("ix"))
    return ix


def make_client(index, embedder, **overrides):
    settings = Settings(index_dir=index.path, api_keys=KEYS, **overrides)
    return TestClient(make_app(settings, index, embedder))


def test_writes_need_a_key_with_the_right_role(index, embedder):
    body = {"title": "Bamboo toothbrush"}
    with make_client(index, embedder) as c:
        r = c.put("/items/brush", json=body)
        assert r.status_code == 401 and "admin" in r.json()["detail"]
        assert c.put("/items/brush", json=body, headers={"X-API-Key": "sk_wrong"}).status_code == 401
        r = c.put("/items/brush", json=body, headers={"X-API-Key": INGEST})
        assert r.status_code == 403 and "'ingest'" in r.json()["detail"]
        assert c.put("/items/brush", json=body, headers={"Authorization": f"Bearer {ADMIN}"}).status_code == 200
        assert c.delete("/items/brush", headers={"X-API-Key": READ}).status_code == 403
        assert c.delete("/items/brush", headers={"X-API-Key": ADMIN}).status_code == 204
        assert c.get("/items/dryer").status_code == 200  # reads are public by default


def test_private_reads(index, embedder):
    with make_client(index, embedder, public_reads=False) as c:
        assert c.get("/items/dryer").status_code == 401
        assert c.get("/items/dryer", headers={"X-API-Key": READ}).status_code == 200
        assert c.get("/items/dryer", headers={"X-API-Key": ADMIN}).status_code == 200


def test_rate_limit_answers_429_with_retry_after(index, embedder):
    with make_client(index, embedder, rate_per_minute=60, rate_burst=3) as c:
        codes = [c.get("/health").status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        r = c.get("/health")
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
        assert c.get("/health", headers={"X-API-Key": READ}).status_code == 200  # its own bucket


def test_token_bucket_refills():
    b = TokenBuckets(rate_per_minute=60, burst=2)
    assert [b.take("k", now=0.0) for _ in range(3)] == [0.0, 0.0, 1.0]
    assert b.take("k", now=1.0) == 0.0


def test_keys_are_stored_hashed_and_matched():
    key, sha = new_key()
    assert sha == digest(key) and key not in sha and len(sha) == 64
    assert find_key(key, [ApiKey(name="n", role="read", sha256=sha)]).name == "n"
    assert find_key(key + "x", [ApiKey(name="n", role="read", sha256=sha)]) is None


def test_cors_is_off_by_default_and_set_by_origin(index, embedder):
    with make_client(index, embedder) as c:
        preflight = {"Origin": "https://shop.example", "Access-Control-Request-Method": "GET"}
        r = c.options("/items/dryer", headers=preflight)
        assert "access-control-allow-origin" not in r.headers
    with make_client(index, embedder, cors_origins=["https://shop.example"]) as c:
        r = c.get("/items/dryer", headers={"Origin": "https://shop.example"})
        assert r.headers["access-control-allow-origin"] == "https://shop.example"


def test_metrics_and_json_logs_without_user_ids(index, embedder, caplog):
    with make_client(index, embedder) as c, caplog.at_level(logging.INFO, logger="semrec.access"):
        logging.getLogger("semrec").propagate = True  # let caplog see the lines
        c.get("/items/dryer/similar", headers={"X-Request-ID": "req-42"})
        r = c.get("/users/alice@example.com/recommendations")
        text = c.get("/metrics").text
        logging.getLogger("semrec").propagate = False
    assert r.headers["X-Request-ID"]
    assert 'semrec_requests_total{method="GET",route="/items/{item_id}/similar",status="200"} 1.0' in text
    assert "semrec_request_seconds_bucket" in text and "semrec_index_items 9.0" in text
    assert 'semrec_model_info{embedder="minilm"' in text
    lines = [r.fields for r in caplog.records if hasattr(r, "fields")]
    first = {k: lines[0][k] for k in ("request_id", "route", "status")}
    assert first == {"request_id": "req-42", "route": "/items/{item_id}/similar", "status": 200}
    assert "alice@example.com" not in json.dumps(lines) + caplog.text
