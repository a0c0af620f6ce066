"""Limits that hold before any work: the request body's size on the receive stream, strict JSON,
and error answers that cannot fail to serialise.

:class:`RequestGuard` is a pure ASGI middleware in front of routing, authentication and parsing. It
answers 413 for a declared ``Content-Length`` over the limit without reading a byte, and for a
chunked (or lying) body as soon as the bytes read pass the limit, without reading the rest. A body
within the limit is checked as JSON before anything parses it for real: ``NaN``, ``Infinity``,
numbers that overflow a float (``1e999``) and lone UTF-16 surrogates (``"\\ud800"``) are not JSON
text a client can mean, and past this point they become 500s (a float that cannot be written back,
a string SQLite and UTF-8 cannot encode); each is a 422 naming the field. The check parses the
body and writes it back strictly (both in C: ~2 ms for a 1,000-event batch); only a body that fails
is walked to find the field.

:func:`validation_failed` replaces FastAPI's 422 handler: inputs are echoed only when small (long
strings and containers are cut to a summary, bytes to a count, non-finite numbers to text, surrogates
escaped), and an unparseable body (``json_invalid``) is a 400, as documented in the schema.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_SURROGATE = re.compile("[\ud800-\udfff]")
ECHO_CHARS = 100           # characters of a string input echoed in a 422
ECHO_JSON = 300            # an echoed container larger than this (as JSON) becomes a summary
MAX_ERRORS = 20            # errors listed per 422


class RequestGuard:
    """ASGI middleware: body size limit on the stream, then the strict-JSON check (module docstring)."""

    def __init__(self, app: ASGIApp, max_body_bytes: int):
        self.app, self.max_body_bytes = app, max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        declared = headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body_bytes):
            await self._too_large(scope, receive, send)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left before sending its body: nobody to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await self._too_large(scope, receive, send)  # the rest is never read
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        problem = json_problem(body, headers.get("content-type"))
        if problem is not None:
            await JSONResponse(status_code=422, content={"detail": [problem]})(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # e.g. http.disconnect, for streaming responses
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = JSONResponse(status_code=413, content={
            "detail": f"request body must be at most {self.max_body_bytes} bytes"}, headers={"Connection": "close"})
        await response(scope, receive, send)


def _is_json(content_type: str | None) -> bool:
    if not content_type:
        return True  # clients that send no type mostly send JSON; the check costs nothing otherwise
    kind = content_type.split(";")[0].strip().lower()
    return kind == "application/json" or kind.endswith("+json")


def json_problem(body: bytes, content_type: str | None) -> dict | None:
    """A 422 error entry (FastAPI's shape, naming the field) for the first value in a JSON ``body``
    that is not a finite number or holds a lone surrogate; None if there is none (or the body is not
    JSON at all: the route's own parsing answers that, with a 400)."""
    if not body or not _is_json(content_type):
        return None
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        return None  # not JSON: the route's parsing answers 400
    try:
        json.dumps(doc, allow_nan=False, ensure_ascii=False).encode("utf-8")
        return None
    except RecursionError:
        return None
    except ValueError:  # NaN, Infinity or 1e999, or a lone surrogate (UnicodeEncodeError): find where
        pass
    stack: list[tuple[Any, tuple]] = [(doc, ("body",))]
    while stack:
        value, loc = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            return _error(loc, "finite_number", "Input should be a finite number (NaN, Infinity and numbers beyond "
                                                "±1.8e308 are not accepted)")
        if isinstance(value, str) and _SURROGATE.search(value):
            return _error(loc, "string_unicode", "Input should be valid Unicode text: it holds a lone surrogate "
                                                 "escape (\\ud800-\\udfff)")
        if isinstance(value, dict):
            for k, v in reversed(list(value.items())):
                if _SURROGATE.search(k):
                    return _error((*loc, k), "string_unicode", "Field names must be valid Unicode text: this one "
                                                               "holds a lone surrogate escape")
                stack.append((v, (*loc, k)))
        elif isinstance(value, list):
            stack.extend((v, (*loc, i)) for i, v in reversed(list(enumerate(value))))
    return None


def _error(loc: tuple, kind: str, msg: str) -> dict:
    return {"type": kind, "loc": [_text(p) if isinstance(p, str) else p for p in loc], "msg": msg}


def _text(s: str, limit: int | None = None) -> str:
    """``s`` as encodable text (surrogates escaped), cut to ``limit`` characters with a note."""
    if _SURROGATE.search(s):
        s = s.encode("utf-8", "backslashreplace").decode("utf-8")
    if limit is not None and len(s) > limit:
        return f"{s[:limit]}… ({len(s)} characters)"
    return s


def safe_input(value: Any, depth: int = 0) -> Any:
    """A small, JSON-serialisable stand-in for an input echoed in an error."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if value.bit_length() <= 64 else f"<integer of about {int(value.bit_length() * 0.30103)} digits>"
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return _text(value, ECHO_CHARS)
    if isinstance(value, bytes | bytearray):
        return f"<{len(value)} bytes>"
    if isinstance(value, dict | list | tuple):
        summary = f"<object with {len(value)} fields>" if isinstance(value, dict) else f"<array of {len(value)} items>"
        if depth >= 3 or len(value) > 10:
            return summary
        small = ({_text(str(k), ECHO_CHARS): safe_input(v, depth + 1) for k, v in value.items()}
                 if isinstance(value, dict) else [safe_input(v, depth + 1) for v in value])
        return small if len(json.dumps(small, allow_nan=False)) <= ECHO_JSON else summary
    return _text(repr(value), ECHO_CHARS)


def _safe_error(error: dict) -> dict:
    out = {"type": _text(str(error.get("type", "value_error")), 100),
           "loc": [p if isinstance(p, int) else _text(str(p), ECHO_CHARS) for p in error.get("loc", ())],
           "msg": _text(str(error.get("msg", "")), 500)}
    if "input" in error:
        out["input"] = safe_input(error["input"])
    ctx = error.get("ctx")
    if isinstance(ctx, dict):
        out["ctx"] = {_text(str(k), 50): safe_input(v) if isinstance(v, int | float | str | None)
                      else _text(str(v), 200) for k, v in list(ctx.items())[:10]}
    return out


async def method_not_allowed(request: Request, exc: HTTPException) -> JSONResponse:
    """405 whose ``Allow`` lists every method of the path (Starlette lists only the first route
    matching it, and GET, PUT and DELETE of one item are three routes)."""
    methods = set()
    for route in request.app.router.routes:
        if isinstance(route, Route) and route.methods and route.matches(request.scope)[0] != Match.NONE:
            methods |= route.methods
    return JSONResponse(status_code=405, content={"detail": "Method Not Allowed"},
                        headers={"Allow": ", ".join(sorted(methods))})


async def validation_failed(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 naming the fields, inputs echoed only when small; 400 for a body that is not JSON."""
    errors = list(exc.errors())
    bad_json = next((e for e in errors if e.get("type") == "json_invalid"), None)
    if bad_json is not None:
        reason = (bad_json.get("ctx") or {}).get("error", "")
        return JSONResponse(status_code=400, content={"detail": _text(f"request body is not valid JSON: {reason}"
                                                                      f" (at character {bad_json['loc'][-1]})", 300)})
    try:
        detail = [_safe_error(e) for e in errors[:MAX_ERRORS]]
        json.dumps(detail, allow_nan=False)
    except (TypeError, ValueError):  # cannot happen by construction; an error answer must never fail
        detail = [{"type": "value_error", "loc": ["body"], "msg": "the request is invalid"}]
    return JSONResponse(status_code=422, content={"detail": detail})
