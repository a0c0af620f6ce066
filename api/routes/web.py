"""The web storefront and merchandiser console: ``GET /`` serves a plain HTML/CSS/JS page (``api/web``,
mounted under ``/static``; no build step, no CDN), plus the helper routes the page needs:

- ``GET /ratings?ids=``: average stars per item, from the rating events in the event log;
- ``GET /categories``: the catalog's category tree with live item counts (onboarding, browsing);
- ``GET /shoppers``: shoppers to pick in the console. User ids are stored only pseudonymised, so
  the log cannot list them: the ids come from the catalog's own reviews file (``shoppers_file``),
  and each is looked up in the log by its keyed hash to show how much history is loaded;
- ``GET /users/{id}/history``: one shopper's events and onboarding answers, looked up by clear id;
- ``GET /variants``: the configured A/B variants and the one a shopper is bucketed in;
- ``GET /report`` and ``GET /report/files/{path}``: the evaluation report's PNG plots and text.

``shoppers`` lists shoppers: it needs an admin key when the service requires keys. ``history``
shows what one person did: it needs that shopper's token or a key with role ``backend``
(``api.security``). The widgets (also bought, bought together, trending, recently viewed) are in
``api.routes.widgets``, the rule editor's routes in ``api.routes.rules``.
"""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path
from typing import Annotated

import numpy as np
from fastapi import APIRouter, FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from retriever.eventstore import EventStore

from ..deps import Components, ComponentsDep, unprocessable
from ..experiments import assign
from ..models import ERRORS
from ..security import require, require_shopper
from .users import UserId as UserPath

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
MAX_SHOPPERS = 500       # shoppers listed at most (the first ids of the file)
MAX_RATING_IDS = 200     # items per /ratings request
MAX_REPORT_FILES = 50
UserId = Annotated[str, Query(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")]

router = APIRouter()


def install(app: FastAPI) -> None:
    """Add the page, its static assets and the helper routes to ``app``."""
    app.state.shopper_ids = ShopperIds()
    app.include_router(router, tags=["web"], responses=ERRORS)
    app.mount("/static", StaticFiles(directory=WEB_DIR), name="web-static")


@router.get("/", include_in_schema=False)
def page() -> FileResponse:
    return FileResponse(WEB_DIR / "index.html", media_type="text/html", headers={"Cache-Control": "no-cache"})


# ---- ratings ---------------------------------------------------------------------------------------
class Rating(BaseModel):
    average: float = Field(description="mean stars, 1-5")
    count: int
    stars: list[int] = Field(description="number of ratings with 1, 2, 3, 4, 5 stars (rounded)")


class RatingsOut(BaseModel):
    ratings: dict[str, Rating] = Field(description="per requested item with at least one rating")


@router.get("/ratings", response_model=RatingsOut)
def ratings(c: ComponentsDep,
            ids: Annotated[str, Query(min_length=1, max_length=20_000,
                                      description=f"comma-separated item ids, at most {MAX_RATING_IDS}")]
            ) -> RatingsOut:
    """Average stars per item from the rating events (the demo's reviews, and ratings sent since)."""
    wanted = [i.strip() for i in ids.split(",") if i.strip()]
    if not wanted:
        raise unprocessable("query", "ids", "ids must name at least one item")
    if len(wanted) > MAX_RATING_IDS:
        raise unprocessable("query", "ids", f"at most {MAX_RATING_IDS} ids per request")
    if c.svc.events is None:
        return RatingsOut(ratings={})
    return RatingsOut(ratings={item: Rating(average=round(total / sum(stars), 2), count=sum(stars), stars=stars)
                               for item, (stars, total) in c.svc.events.rating_counts(wanted).items()})


# ---- categories -------------------------------------------------------------------------------------
class CategoryOut(BaseModel):
    name: str
    count: int = Field(description="live items in it")
    children: list[CategoryOut] = Field(default_factory=list)


class CategoriesOut(BaseModel):
    categories: list[CategoryOut]


@router.get("/categories", response_model=CategoriesOut)
def categories(c: ComponentsDep) -> CategoriesOut:
    """Top-level categories and their subcategories, by live item count."""
    tops: Counter = Counter()
    subs: dict[str, Counter] = {}
    with c.svc.index.lock:
        for label in np.flatnonzero(c.svc.index.table.mask()):
            cats = c.svc.index.table.records[label]["categories"]
            if cats:
                tops[cats[0]] += 1
                if len(cats) > 1:
                    subs.setdefault(cats[0], Counter())[cats[1]] += 1
    return CategoriesOut(categories=[
        CategoryOut(name=top, count=n, children=[CategoryOut(name=s, count=m)
                                                 for s, m in sorted(subs.get(top, {}).items(), key=_by_count)])
        for top, n in sorted(tops.items(), key=_by_count)])


def _by_count(kv: tuple[str, int]) -> tuple[int, str]:
    return -kv[1], kv[0]


# ---- shoppers and their history ----------------------------------------------------------------------
def _store(c: Components) -> EventStore:
    if c.svc.events is None:
        raise HTTPException(503, detail="this server runs without an event log")
    return c.svc.events


class ShopperIds:
    """User ids in the shoppers file (reviews in the catalog's own format), cached by file and mtime."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: tuple | None = None
        self._ids: list[str] = []

    def ids(self, path: Path) -> list[str]:
        from indexer.loaders import read_reviews

        stat = path.stat()
        key = (str(path), stat.st_mtime_ns, stat.st_size)
        with self._lock:
            if key != self._key:
                counts = Counter(read_reviews(path)["user_id"])
                self._ids = sorted(counts)[:MAX_SHOPPERS]
                self._key = key
            return self._ids


class ShopperOut(BaseModel):
    user_id: str
    events: int = Field(description="events of this shopper in the log (latest 200 counted)")
    top_categories: list[str] = Field(description="their most frequent subcategories")
    last_seen: float | None = Field(description="unix seconds of their latest event")


class ShoppersOut(BaseModel):
    source: str = Field(description="the file the ids were read from")
    shoppers: list[ShopperOut] = Field(description="ids from the file that have history in the event log")
    without_history: int = Field(description="ids in the file with no events in the log")
    note: str = ""


@router.get("/shoppers", response_model=ShoppersOut, dependencies=[require("admin")])
def shoppers(c: ComponentsDep, request: Request) -> ShoppersOut:
    """Shoppers to look at in the console. The event log keeps only keyed hashes of user ids, so it
    cannot say who is in it: the ids are read from the catalog's reviews file (setting
    ``shoppers_file``, by default the demo's) and each one is looked up in the log."""
    store = _store(c)
    path = Path(c.settings.shoppers_file)
    if not path.is_file():
        return ShoppersOut(source=shown(path), shoppers=[], without_history=0,
                           note=f"no shoppers file at {shown(path)} (set SEMREC_SHOPPERS_FILE)")
    try:
        ids = request.app.state.shopper_ids.ids(path)
    except Exception as e:  # a malformed file must not break the console
        return ShoppersOut(source=shown(path), shoppers=[], without_history=0, note=f"cannot read {shown(path)}: "
                                                                                   f"{type(e).__name__}")
    out, missing = [], 0
    for uid in ids:
        events = store.user_events(uid, 200)
        if not events:
            missing += 1
            continue
        cats = Counter()
        for e in events:
            rec = c.svc.index.table.get(e.item_id)
            if rec is not None and rec["categories"]:
                cats[rec["categories"][min(1, len(rec["categories"]) - 1)]] += 1
        out.append(ShopperOut(user_id=uid, events=len(events), top_categories=[k for k, _ in cats.most_common(3)],
                              last_seen=max(e.ts for e in events)))
    return ShoppersOut(source=shown(path), shoppers=out, without_history=missing)


class HistoryEvent(BaseModel):
    item_id: str
    title: str | None = Field(description="null when the item is no longer in the catalog")
    categories: list[str]
    price: float | None
    type: str
    value: float | None
    timestamp: float
    request_id: str | None


class OnboardingOut(BaseModel):
    interests: str
    categories: list[str]
    liked_items: list[str]


class HistoryOut(BaseModel):
    user_id: str
    events: list[HistoryEvent] = Field(description="newest first")
    onboarding: OnboardingOut | None


@router.get("/users/{user_id}/history", response_model=HistoryOut, dependencies=[require_shopper()])
def history(user_id: UserPath, c: ComponentsDep,
            limit: Annotated[int, Query(ge=1, le=200, description="latest events returned")] = 50) -> HistoryOut:
    """A shopper's latest events and onboarding answers, looked up by the keyed hash of ``user_id``.
    An id with no history answers an empty list (the log cannot tell unknown from inactive)."""
    store = _store(c)
    rows = []
    for e in reversed(store.user_events(user_id, limit)):
        rec = c.svc.index.table.get(e.item_id)
        price = None if rec is None or rec["price"] != rec["price"] else float(rec["price"])
        rows.append(HistoryEvent(item_id=e.item_id, title=rec["title"] if rec else None,
                                 categories=rec["categories"] if rec else [], price=price, type=e.type,
                                 value=e.value, timestamp=e.ts, request_id=e.request_id))
    answers = store.onboarding(user_id)
    onboarding = None if answers is None else OnboardingOut(interests=answers[0], categories=answers[1],
                                                            liked_items=answers[2])
    return HistoryOut(user_id=user_id, events=rows, onboarding=onboarding)


# ---- A/B variants ------------------------------------------------------------------------------------
class VariantOut(BaseModel):
    name: str
    share: float
    candidates: dict[str, float]
    rerank: bool
    merchandising: bool = Field(True, description="whether merchandising rules apply in this variant")


class VariantsOut(BaseModel):
    variants: list[VariantOut]
    assigned: str | None = Field(description="the variant ``user_id`` is bucketed in, if one was given")


@router.get("/variants", response_model=VariantsOut)
def variants(c: ComponentsDep, user_id: UserId | None = None) -> VariantsOut:
    """The configured variants (request one with ``/users/{id}/recommendations?variant=``)."""
    vs = c.settings.variants
    assigned = assign(user_id, vs, c.settings.ab_salt).name if user_id is not None else None
    return VariantsOut(variants=[VariantOut(**v.model_dump()) for v in vs], assigned=assigned)


# ---- evaluation report --------------------------------------------------------------------------------
class PlotOut(BaseModel):
    path: str = Field(description="relative to the report directory")
    url: str
    title: str


class ReportOut(BaseModel):
    directory: str
    exists: bool
    plots: list[PlotOut]
    markdown: str | None = Field(description="results.md, when the report has one")


def shown(path: Path) -> str:
    """A path as clients may see it: a relative one as configured, an absolute one by its last two
    parts only (the server's own directory layout is none of a client's business)."""
    return f".../{'/'.join(path.parts[-2:])}" if path.is_absolute() else path.as_posix()


def _report_files(root: Path) -> list[Path]:
    """PNGs in the report directory and its immediate subfolders (one per dataset), sorted."""
    found = sorted(root.glob("*.png")) + sorted(root.glob("*/*.png"))
    return [p for p in found if p.is_file()][:MAX_REPORT_FILES]


@router.get("/report", response_model=ReportOut)
def report(c: ComponentsDep) -> ReportOut:
    """The offline evaluation's plots (setting ``report_dir``, default ``runs/report``)."""
    root = Path(c.settings.report_dir)
    if not root.is_dir():
        return ReportOut(directory=shown(root), exists=False, plots=[], markdown=None)
    plots = []
    for p in _report_files(root):
        rel = p.relative_to(root).as_posix()
        title = (f"{p.parent.name}: " if p.parent != root else "") + p.stem.replace("_", " ").replace("-", " ")
        plots.append(PlotOut(path=rel, url=f"/report/files/{rel}", title=title))
    md = next((p for p in (root / "results.md", *sorted(root.glob("*/results.md"))) if p.is_file()), None)
    return ReportOut(directory=shown(root), exists=True, plots=plots,
                     markdown=md.read_text(encoding="utf-8", errors="replace")[:100_000] if md else None)


@router.get("/report/files/{path:path}", include_in_schema=False)
def report_file(path: str, c: ComponentsDep) -> FileResponse:
    root = Path(c.settings.report_dir).resolve()
    if not path.endswith(".png") or ".." in Path(path).parts:
        raise HTTPException(404, detail="no such plot")
    target = (root / path).resolve()
    if not target.is_relative_to(root) or target not in {p.resolve() for p in _report_files(root)}:
        raise HTTPException(404, detail="no such plot")
    return FileResponse(target, media_type="image/png")
