"""The HTTP API: one app, one router per area. Routes validate, call the library, shape the response."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi_offline import FastAPIOffline

from .deps import Components, ComponentsDep, load_components
from .guards import RequestGuard, method_not_allowed, validation_failed
from .models import ERRORS
from .observability import Metrics, configure_logging, observe
from .routes import demo, items, rules, search, users, web, widgets
from .security import TokenBuckets, identify
from .settings import Settings

log = logging.getLogger("semrec.app")
# Longest request line and headers the HTTP server reads (uvicorn's h11 default is 16 KiB): a
# query the schema allows (e.g. /ratings?ids= of 20,000 characters, percent-encoded up to 12
# bytes each) must reach the app and get its 422, not a bare 400 from the server.
MAX_REQUEST_HEAD_BYTES = 256 * 1024


def follow(c: Components, every: float, stop: threading.Event) -> None:
    """Apply what other server processes wrote (the catalog's log or feed; the event log with its
    erasures, which take an erased user's share out of this worker's counts) every ``every``
    seconds, so with several workers each one sees any write within about that long; compact the
    index's log and memory when they have grown (``ItemIndex.maybe_compact``)."""
    s = c.settings
    while not stop.wait(every):
        try:
            c.svc.index.follow()
            if c.svc.events is not None:
                c.svc.state.catch_up(c.svc.events)
            c.refresh_rules()
            c.refresh_models()  # a version `semrec train` published meanwhile (loaded here, off the request path)
            done = c.svc.index.maybe_compact(log_bytes=int(s.compact_log_mb * 2**20), retired=s.compact_retired)
            if done:
                log.info("compacted the index", extra={"fields": {"what": done, "items": len(c.svc.index)}})
        except Exception:  # keep following; a failure here must not stop the service, but is logged
            log.exception("following the shared logs failed")


def hold_labels(request: Request) -> Iterator[None]:
    """App-wide dependency: item labels a request reads stay valid until it is answered (a label
    renumbering waits for open requests; ``ItemIndex.reading``)."""
    with request.app.state.components.svc.index.reading():
        yield


def create_app(settings: Settings | None = None, components: Components | None = None) -> FastAPI:
    """The app. Pass ``components`` to serve what is already in memory (tests, the demo)."""
    settings = settings or (components.settings if components else Settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.components = c = components or load_components(settings)
        opened_rules = components is not None and c.open_rules()  # served from memory: rules beside its log
        stop = threading.Event()
        follower = threading.Thread(target=follow, args=(c, settings.follow_seconds, stop), daemon=True,
                                    name="semrec-follow")
        follower.start()
        yield
        stop.set()
        follower.join()
        if components is None:  # what start-up opened is closed: buffered impressions written, pools shut
            for resource in (c.svc.events, c.svc.index.feed, c.rule_store):
                if resource is not None:
                    resource.close()
        elif opened_rules:
            c.rule_store.close()
            c.rule_store = None

    configure_logging()
    # /docs: Swagger UI with its assets from the fastapi-offline package, no CDN. No /redoc: ReDoc's
    # bundle fetches its logo from a CDN (the browser test caught it), and one docs page is enough.
    app = FastAPIOffline(title="semrec", version="0.1.0", lifespan=lifespan,
                         dependencies=[Depends(identify), Depends(hold_labels)], redoc_url=None,
                         description="Semantic recommendations for e-commerce: similar items, search, personal "
                                     "recommendations, events. Writes need an API key (X-API-Key); a shopper's "
                                     "personal routes need their shopper token (X-Shopper-Token) or a backend key.")
    app.state.metrics = Metrics()
    app.state.rate_limits = TokenBuckets(settings.rate_per_minute, settings.rate_burst)

    # Body size on the stream and strict JSON, before routing, keys and parsing (api/guards.py).
    app.add_middleware(RequestGuard, max_body_bytes=settings.max_body_bytes)
    app.add_exception_handler(RequestValidationError, validation_failed)
    app.add_exception_handler(405, method_not_allowed)
    app.middleware("http")(observe)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"],
                           allow_headers=["*"])

    @app.get("/metrics", tags=["operations"], response_class=Response, responses=ERRORS)
    def metrics(c: ComponentsDep) -> Response:
        """Prometheus text format: requests and latency per route, index size, events, models."""
        return app.state.metrics.render(c.svc)

    app.include_router(items.router, tags=["items"], responses=ERRORS)
    app.include_router(search.router, tags=["search"], responses=ERRORS)
    app.include_router(users.router, tags=["personalisation"], responses=ERRORS)
    app.include_router(widgets.router, tags=["widgets"], responses=ERRORS)
    app.include_router(rules.router, tags=["merchandising"], responses=ERRORS)
    web.install(app)  # GET /: storefront and console page, /static, and its helper routes
    if settings.demo_tokens:  # demo only: stands in for the shop's backend (api/routes/demo.py)
        app.include_router(demo.router, tags=["demo"], responses=ERRORS)
    return app


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory`` and multi-worker serving: settings from the environment."""
    return create_app(Settings())
