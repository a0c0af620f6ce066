"""The HTTP API: one app, one router per area. Routes validate, call the library, shape the response."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from .deps import Components, load_components
from .routes import items, search, users
from .settings import Settings


def create_app(settings: Settings | None = None, components: Components | None = None) -> FastAPI:
    """The app. Pass ``components`` to serve what is already in memory (tests, the demo)."""
    settings = settings or (components.settings if components else Settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.components = components or load_components(settings)
        yield

    app = FastAPI(title="semrec", version="0.1.0", lifespan=lifespan,
                  description="Semantic recommendations for e-commerce: similar items, search, catalog updates.")

    @app.middleware("http")
    async def limit_body(request: Request, call_next):
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > settings.max_body_bytes):
            return JSONResponse(status_code=413, content={
                "detail": f"request body must be at most {settings.max_body_bytes} bytes"})
        return await call_next(request)

    app.include_router(items.router, tags=["items"])
    app.include_router(search.router, tags=["search"])
    app.include_router(users.router, tags=["personalisation"])
    return app
