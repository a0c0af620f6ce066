"""The HTTP API: one app, one router per area. Routes validate, call the library, shape the response."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline

from .deps import Components, ComponentsDep, load_components
from .models import ERRORS
from .observability import Metrics, configure_logging, observe
from .routes import items, rules, search, users, web, widgets
from .security import TokenBuckets, identify
from .settings import Settings

log = logging.getLogger("semrec.app")


def follow(c: Components, every: float, stop: threading.Event) -> None:
    """Apply what other server processes wrote (the catalog's log or feed; the event log with its
    erasures, which take an erased user's share out of this worker's counts) every ``every``
    seconds, so with several workers each one sees any write within about that long."""
    while not stop.wait(every):
        try:
            c.svc.index.follow()
            if c.svc.events is not None:
                c.svc.state.catch_up(c.svc.events)
            c.refresh_rules()
        except Exception:  # keep following; a failure here must not stop the service, but is logged
            log.exception("following the shared logs failed")


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
    app = FastAPIOffline(title="semrec", version="0.1.0", lifespan=lifespan, dependencies=[Depends(identify)],
                         redoc_url=None,
                         description="Semantic recommendations for e-commerce: similar items, search, personal "
                                     "recommendations, events. Writes need an API key (X-API-Key).")
    app.state.metrics = Metrics()
    app.state.rate_limits = TokenBuckets(settings.rate_per_minute, settings.rate_burst)

    @app.middleware("http")
    async def limit_body(request: Request, call_next):
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > settings.max_body_bytes):
            return JSONResponse(status_code=413, content={
                "detail": f"request body must be at most {settings.max_body_bytes} bytes"})
        return await call_next(request)

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
    return app


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory`` and multi-worker serving: settings from the environment."""
    return create_app(Settings())
