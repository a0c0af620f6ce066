"""Metrics in Prometheus text format and structured JSON logs.

Logs and metrics name a route by its template (``/users/{user_id}/recommendations``), never by the
raw path, so no user id reaches them in clear. Each request gets an id (the caller's X-Request-ID if
it is sane, else a new one), returned in the X-Request-ID header and written in its log line.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid

from fastapi import Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

log = logging.getLogger("semrec.access")
_SANE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {"ts": round(record.created, 3), "level": record.levelname.lower(), "logger": record.name,
                "msg": record.getMessage()}
        line.update(getattr(record, "fields", {}))
        return json.dumps(line, ensure_ascii=False)


def configure_logging(level: str = "INFO") -> None:
    """Send semrec's loggers to stderr as one JSON object per line."""
    root = logging.getLogger("semrec")
    if not any(isinstance(h.formatter, JsonFormatter) for h in root.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False


class Metrics:
    """One registry per app, so several apps in one process (tests) do not collide."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("semrec_requests_total", "HTTP requests", ["route", "method", "status"],
                                registry=self.registry)
        self.latency = Histogram("semrec_request_seconds", "HTTP request latency", ["route", "method"],
                                 buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5),
                                 registry=self.registry)
        self.items = Gauge("semrec_index_items", "live items in the index", registry=self.registry)
        self.events = Gauge("semrec_events_stored", "events in the event log", registry=self.registry)
        self.model = Gauge("semrec_model_info", "models in use", ["embedder", "index_kind", "ranker"],
                           registry=self.registry)

    def render(self, svc) -> Response:
        """Gauges from ``svc`` (``ranker.services.Services``), then the registry as Prometheus text."""
        self.items.set(len(svc.index))
        if svc.events is not None:
            self.events.set(svc.events.count_events())
        ranker = svc.reranker.path.name if svc.reranker is not None else "none"
        self.model.labels(svc.index.model, svc.index.kind, ranker).set(1)
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


def route_template(request: Request) -> str:
    route = request.scope.get("route")
    # path_format drops convertors: "/items/{item_id}", not "/items/{item_id:item}"
    return getattr(route, "path_format", None) or getattr(route, "path", None) or "unmatched"


async def observe(request: Request, call_next):
    """Middleware: request id, latency histogram, request counter, one JSON log line."""
    incoming = request.headers.get("x-request-id", "")
    request_id = incoming if _SANE_ID.match(incoming) else uuid.uuid4().hex
    request.state.request_id = request_id
    started = time.perf_counter()
    status = 500
    try:
        response = await call_next(request)
        status = response.status_code
        response.headers["X-Request-ID"] = request_id
        return response
    finally:
        seconds = time.perf_counter() - started
        route, metrics = route_template(request), request.app.state.metrics
        metrics.requests.labels(route, request.method, str(status)).inc()
        metrics.latency.labels(route, request.method).observe(seconds)
        log.info("request", extra={"fields": {"request_id": request_id, "method": request.method, "route": route,
                                              "status": status, "ms": round(1000 * seconds, 2)}})
