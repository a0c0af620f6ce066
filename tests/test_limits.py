"""Limits before work (issue #16, red-team cases 3 and 5), against a real server on loopback: the
body limit holds on the stream for chunked and declared bodies, before keys and parsing; errors
never echo large inputs; NaN, Infinity, 1e999 and lone surrogates anywhere in a JSON body are 422s
naming the field, never 500s; an unparseable body is the documented 400."""

import json
import select
import socket
import threading
import time

import pytest
import uvicorn

from api.security import ApiKey, digest
from api.settings import Settings
from indexer.build import build_index

from .conftest import make_app, open_events_for
from .test_crash import free_port

ADMIN = "sk_limits_admin"
LIMIT = 1_000_000


@pytest.fixture(scope="module")
def server(tiny_catalog, embedder, tmp_path_factory):
    root = tmp_path_factory.mktemp("limits")
    index = build_index(tiny_catalog, embedder, progress=False)
    index.save(root / "ix")
    cfg = Settings(index_dir=root / "ix", db_path=root / "ev.db", max_body_bytes=LIMIT, rate_per_minute=1e6,
                   rate_burst=100_000, api_keys=[ApiKey(name="ops", role="admin", sha256=digest(ADMIN))])
    store, state = open_events_for(cfg)
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(make_app(cfg, index, embedder, store, state),
                                        host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    while not srv.started:
        time.sleep(0.05)
    yield port
    srv.should_exit = True
    thread.join()
    store.close()


def raw_request(port, head: str, body_chunks, chunked: bool) -> tuple[int, bytes, int]:
    """Send ``head`` then the body (chunked or as is) until the server answers; returns
    ``(status, response bytes, body bytes sent before the answer came)``."""
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    s.sendall(head.encode())
    sent, answer = 0, b""
    try:
        for chunk in body_chunks:
            if select.select([s], [], [], 0)[0]:
                break  # the server has answered: stop sending, as a client would
            s.sendall((f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n") if chunked else chunk)
            sent += len(chunk)
        else:
            if chunked:
                s.sendall(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server closed its end after answering: the answer is still in our buffer
    try:
        while not _complete(answer):
            part = s.recv(65536)
            if not part:
                break
            answer += part
    except ConnectionResetError:
        pass
    finally:
        s.close()
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else 0, answer, sent


def _complete(answer: bytes) -> bool:
    """Whether ``answer`` holds a whole response: headers and Content-Length bytes of body."""
    head, sep, body = answer.partition(b"\r\n\r\n")
    if not sep:
        return False
    length = next((int(line.split(b":")[1]) for line in head.lower().split(b"\r\n")
                   if line.startswith(b"content-length:")), 0)
    return len(body) >= length


def chunks(total, size=64 * 1024):
    piece = b'{"e":"' + b"x" * (size - 8) + b'",'
    for _ in range(total // len(piece)):
        yield piece


def test_a_chunked_50_mb_body_is_refused_on_the_stream_before_the_key_check(server):
    head = ("POST /events HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n")
    status, answer, sent = raw_request(server, head, chunks(50_000_000), chunked=True)
    assert status == 413, answer[:300]
    assert sent < 10_000_000  # read up to the limit (plus socket buffers), never the 50 MB


def test_a_declared_oversized_body_is_refused_unread(server):
    head = (f"PUT /items/big HTTP/1.1\r\nHost: t\r\nX-API-Key: {ADMIN}\r\nContent-Type: application/json\r\n"
            "Content-Length: 50000000\r\n\r\n")
    status, answer, sent = raw_request(server, head, [], chunked=False)
    assert status == 413 and sent == 0 and b"at most 1000000 bytes" in answer


def test_a_chunked_upsert_over_the_limit_is_413_not_an_echo(server):
    head = (f"PUT /items/big HTTP/1.1\r\nHost: t\r\nX-API-Key: {ADMIN}\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n")
    status, answer, sent = raw_request(server, head, chunks(50_000_000), chunked=True)
    assert status == 413 and len(answer) < 2000


def http(port, method, path, body=None, raw: bytes | None = None, headers=None, content_type="application/json"):
    import httpx

    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    h = {"X-API-Key": ADMIN, **({"Content-Type": content_type} if data is not None else {}), **(headers or {})}
    return httpx.request(method, f"http://127.0.0.1:{port}{path}", content=data, headers=h, timeout=60)


def test_errors_never_echo_large_inputs(server):
    r = http(server, "PUT", "/items/big", {"title": "x" * 900_000})
    assert r.status_code == 422 and len(r.content) < 3000
    assert r.json()["detail"][0]["loc"] == ["body", "title"]
    r = http(server, "PUT", "/items/big", raw=b"A" * 900_000, content_type="text/plain")
    assert r.status_code == 422 and len(r.content) < 3000
    r = http(server, "POST", "/events", {"events": [{"event_id": "e" * 400_000}] * 2})
    assert r.status_code == 200 and len(r.content) < 3000  # per-event reasons cut the echoed id


NON_FINITE = ["NaN", "Infinity", "-Infinity", "1e999"]


@pytest.mark.parametrize("literal", NON_FINITE)
@pytest.mark.parametrize("method,path,body,field", [
    ("PUT", "/items/nan", '{"title": "Lamp", "price": %s}', ["body", "price"]),
    ("PUT", "/items/nan", '{"title": "Lamp", "created_at": %s}', ["body", "created_at"]),
    ("PUT", "/items/nan", '{"title": "Lamp", "reviews": [{"text": "ok", "rating": %s}]}',
     ["body", "reviews", 0, "rating"]),
    ("POST", "/recommendations", '{"min_price": %s}', ["body", "min_price"]),
    ("POST", "/events", '{"events": [{"event_id": "n1", "user_id": "u", "item_id": "tent", "type": "rating", '
                        '"value": %s}]}', ["body", "events", 0, "value"]),
])
def test_non_finite_numbers_are_422_naming_the_field(server, literal, method, path, body, field):
    r = http(server, method, path, raw=(body % literal).encode())
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == field


@pytest.mark.parametrize("method,path,body,field", [
    ("PUT", "/items/s", {"title": "\ud800"}, ["body", "title"]),
    ("PUT", "/items/s", {"title": "Lamp", "brand": "a\udfffb"}, ["body", "brand"]),
    ("PUT", "/items/s", {"title": "Lamp", "categories": ["Home", "\ud800"]}, ["body", "categories", 1]),
    ("PUT", "/items/s", {"title": "Lamp", "attributes": {"colour": "\ud800"}}, ["body", "attributes", "colour"]),
    ("PUT", "/items/s", {"title": "Lamp", "attributes": {"\ud800": "red"}}, ["body", "attributes", "\\ud800"]),
    ("PUT", "/items/s", {"title": "Lamp", "reviews": [{"text": "\ud800"}]}, ["body", "reviews", 0, "text"]),
    ("POST", "/events", {"events": [{"event_id": "\ud800", "user_id": "u", "item_id": "tent", "type": "view"}]},
     ["body", "events", 0, "event_id"]),
    ("POST", "/events", {"events": [{"event_id": "s1", "user_id": "\udbff", "item_id": "tent", "type": "view"}]},
     ["body", "events", 0, "user_id"]),
    ("POST", "/users/u/onboarding", {"interests": "tea \ud800"}, ["body", "interests"]),
    ("POST", "/recommendations", {"text": "\ud800"}, ["body", "text"]),
])
def test_lone_surrogates_are_422_naming_the_field(server, method, path, body, field):
    raw = json.dumps(body).encode()  # ensure_ascii: "\ud800" goes over the wire as its JSON escape
    assert b"\\ud" in raw.lower()
    r = http(server, method, path, raw=raw)
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == field


def test_valid_escapes_and_look_alikes_still_pass(server):
    # a surrogate *pair* is an emoji; "NaN" and "1e999" inside strings are text
    r = http(server, "POST", "/recommendations", raw=json.dumps({"text": "NaN 1e999 Infinity \U0001F600"}).encode())
    assert r.status_code == 200, r.text
    r = http(server, "POST", "/recommendations", raw=b'{"min_price": 1e-300, "max_price": 1E+3}')
    assert r.status_code == 200, r.text


def test_unparseable_bodies_are_the_documented_400(server):
    for raw in (b'{"title": ', b"\xff\xfe not utf-8", b"[" * 100_000):
        r = http(server, "PUT", "/items/x", raw=raw)
        assert r.status_code == 400, (raw[:20], r.status_code, r.text[:200])
        assert isinstance(r.json()["detail"], str) and len(r.content) < 1000
    import httpx

    schema = httpx.get(f"http://127.0.0.1:{server}/openapi.json").json()
    for path, ops in schema["paths"].items():
        for method, op in ops.items():
            if "requestBody" in op:
                assert "400" in op["responses"], (method, path)
