"""Personalisation routes: events in, recommendations out, onboarding, anonymous sessions, erasure.
Each handler validates, calls the one pipeline (``ranker.pipeline``) and shapes the answer."""

from __future__ import annotations

import time
import uuid
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Response
from pydantic import ValidationError

from indexer.table import Filters
from ranker.pipeline import Recommendations, recommend_session, recommend_users
from retriever.eventstore import Event

from ..deps import Components, ComponentsDep, FiltersDep, KDep, scored, unprocessable
from ..experiments import Variant, assign
from ..models import (
    EventIn,
    EventsIn,
    EventsOut,
    OnboardingIn,
    RecommendationsOut,
    RecommendedItem,
    Rejected,
    SessionIn,
)
from ..security import EventWriter, public_read, require, require_shopper

router = APIRouter()
UserId = Annotated[str, Path(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")]
FUTURE_SLACK_S = 86_400.0  # clocks disagree; a day ahead is tolerated, more is a bug in the sender


def _store(c: Components):
    if c.svc.events is None:
        raise HTTPException(503, detail="this server runs without an event log")
    return c.svc.events


@router.post("/events", response_model=EventsOut)
def post_events(body: EventsIn, c: ComponentsDep, writer: EventWriter) -> EventsOut:
    """Store a batch. Each event is checked on its own: invalid ones come back with the reason,
    valid ones are stored (durably, before this returns) and change recommendations at once."""
    store = _store(c)
    if len(body.events) > c.settings.max_events_per_request:
        raise unprocessable("body", "events", f"at most {c.settings.max_events_per_request} events per request")
    now, valid, rejected = time.time(), [], []
    for n, raw in enumerate(body.events):
        try:
            e = EventIn.model_validate(raw)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "event"
            rejected.append(Rejected(index=n, event_id=_id(raw), reason=f"{where}: {first['msg']}"))
            continue
        if writer is not None and e.user_id != writer:  # a shopper token posts only its own events
            rejected.append(Rejected(index=n, event_id=e.event_id, reason="user_id: this shopper token is for "
                                                                          "another user"))
        elif c.svc.index.table.get(e.item_id) is None:
            rejected.append(Rejected(index=n, event_id=e.event_id, reason=f"item_id: unknown item {e.item_id!r}"))
        elif e.timestamp is not None and e.timestamp > now + FUTURE_SLACK_S:
            rejected.append(Rejected(index=n, event_id=e.event_id, reason="timestamp: more than a day in the future"))
        else:
            valid.append(Event(e.event_id, e.user_id, e.item_id, e.type, e.timestamp or now, e.value, e.request_id))
    fresh = store.add_events(valid) if valid else []
    new = [e for e, f in zip(valid, fresh) if f]
    c.svc.state.catch_up(store)  # counted before we answer: the next request already sees them
    return EventsOut(stored=len(new), duplicates=len(valid) - len(new), rejected=rejected)


def _id(raw) -> str | None:
    return str(raw.get("event_id"))[:200] if isinstance(raw, dict) and "event_id" in raw else None


def _respond(c: Components, recs: Recommendations, variant: Variant, user_id: str | None,
             log: bool) -> RecommendationsOut:
    """Row 0 of ``recs`` as the answer; an impression is logged for A/B reports when ``log``."""
    labels, scores = recs.labels[0], recs.scores[0]
    items = scored(c.svc.index, labels, scores, recs.rules[0] if recs.rules else None)
    results = [RecommendedItem(**item.model_dump(), sources=src, reason=why.text, reason_kind=why.kind)
               for item, src, why in zip(items, recs.sources[0], recs.reasons[0])]
    request_id = uuid.uuid4().hex
    if log and user_id is not None and c.svc.events is not None:
        c.svc.events.log_impression(request_id, user_id, variant.name, [r.item_id for r in results])
    return RecommendationsOut(request_id=request_id, variant=variant.name, stages=list(recs.stages[0]),
                              results=results)


@router.get("/users/{user_id}/recommendations", response_model=RecommendationsOut,
            dependencies=[require_shopper()])
def user_recommendations(user_id: UserId, c: ComponentsDep, filters: FiltersDep, k: KDep,
                         exclude_purchased: bool | None = None,
                         variant: Annotated[str | None, Query(
                             min_length=1, max_length=50,
                             description="serve this named variant instead of the user's A/B bucket (for "
                                         "side-by-side comparison; not logged as an A/B impression)")] = None,
                         ) -> RecommendationsOut:
    """Personal recommendations. An unknown user is a cold start: a varied popular list."""
    _store(c)
    if variant is not None:
        chosen = next((v for v in c.settings.variants if v.name == variant), None)
        if chosen is None:
            raise unprocessable("query", "variant", f"unknown variant {variant!r}; configured: "
                                                    f"{[v.name for v in c.settings.variants]}")
    else:
        chosen = assign(user_id, c.settings.variants, c.settings.ab_salt)
    recs = recommend_users(c.svc, c.config(chosen), [user_id], k, filters, exclude_purchased=exclude_purchased)
    return _respond(c, recs, chosen, user_id, log=variant is None)  # a forced variant is no A/B data


@router.post("/users/{user_id}/onboarding", response_model=RecommendationsOut, dependencies=[require_shopper()])
def onboarding(user_id: UserId, body: OnboardingIn, c: ComponentsDep, k: KDep) -> RecommendationsOut:
    """Stated interests build a profile at once; the answer is the first recommendations."""
    unknown = [i for i in body.liked_items if c.svc.index.table.get(i) is None]
    if unknown:
        raise unprocessable("body", "liked_items", f"unknown item ids: {unknown[:10]}")
    missing = [cat for cat in body.categories if not c.svc.index.table.mask(Filters(category=cat)).any()]
    if missing:
        raise unprocessable("body", "categories", f"no items in categories: {missing[:10]}")
    _store(c).set_onboarding(user_id, body.interests, body.categories, body.liked_items)
    variant = assign(user_id, c.settings.variants, c.settings.ab_salt)
    recs = recommend_users(c.svc, c.config(variant), [user_id], k)
    return _respond(c, recs, variant, user_id, log=True)


@router.post("/recommendations", response_model=RecommendationsOut, dependencies=[public_read()])
def session_recommendations(body: SessionIn, c: ComponentsDep) -> RecommendationsOut:
    """Recommendations for an anonymous session from its inline context; nothing is stored."""
    unknown = [i for i in body.recent_items if c.svc.index.table.get(i) is None]
    if unknown:
        raise unprocessable("body", "recent_items", f"unknown item ids: {unknown[:10]}")
    if body.min_price is not None and body.max_price is not None and body.min_price > body.max_price:
        raise unprocessable("body", "max_price", "max_price is below min_price")
    filters = Filters(category=body.category, brand=body.brand, min_price=body.min_price,
                      max_price=body.max_price, in_stock=body.in_stock)
    variant = assign(uuid.uuid4().hex, c.settings.variants, c.settings.ab_salt)
    recs = recommend_session(c.svc, c.config(variant), body.recent_items, body.text, body.k, filters)
    return _respond(c, recs, variant, None, log=False)


@router.delete("/users/{user_id}", status_code=204, dependencies=[require("admin")])
def delete_user(user_id: UserId, c: ComponentsDep) -> Response:
    """Erase the user's events, onboarding answers and impressions, their share of the
    collaborative counts and their past searches. A later request for this id is a cold start."""
    store = _store(c)
    store.delete_user(user_id)
    # Applies the erasure log entry here at once: the counts, and (state.on_erasure) the search box's
    # query log, which keys a verified shopper's searches like the event log; other workers within follow_seconds.
    c.svc.state.catch_up(store)
    if c.svc.search is not None:  # the search log's counts without their searches: here at once, in other
        c.svc.search.sync_queries(store, wait=True)  # workers at the first search after their catch-up
    return Response(status_code=204)
