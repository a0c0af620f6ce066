"""Personalisation routes: events in, recommendations out, onboarding, anonymous sessions, erasure."""

from __future__ import annotations

import time
import uuid
from dataclasses import replace
from typing import Annotated

import numpy as np
from fastapi import APIRouter, HTTPException, Path, Query, Response
from pydantic import ValidationError

from indexer.table import Filters
from ranker.serve import context_text, evidence_of, list_reasons, rerank_keeping
from retriever.eventstore import Event
from retriever.personal import session_profile, user_profile
from retriever.profiles import Profile, ProfileConfig
from retriever.recommend import recommend

from ..deps import Components, ComponentsDep, FiltersDep, KDep, candidate_counts, scored, unprocessable
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
    if c.events is None:
        raise HTTPException(503, detail="this server runs without an event log")
    return c.events


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
        elif c.index.table.get(e.item_id) is None:
            rejected.append(Rejected(index=n, event_id=e.event_id, reason=f"item_id: unknown item {e.item_id!r}"))
        elif e.timestamp is not None and e.timestamp > now + FUTURE_SLACK_S:
            rejected.append(Rejected(index=n, event_id=e.event_id, reason="timestamp: more than a day in the future"))
        else:
            valid.append(Event(e.event_id, e.user_id, e.item_id, e.type, e.timestamp or now, e.value, e.request_id))
    fresh = store.add_events(valid) if valid else []
    new = [e for e, f in zip(valid, fresh) if f]
    c.state.catch_up(store)  # counted before we answer: the next request already sees them
    return EventsOut(stored=len(new), duplicates=len(valid) - len(new), rejected=rejected)


def _id(raw) -> str | None:
    return str(raw.get("event_id"))[:200] if isinstance(raw, dict) and "event_id" in raw else None


def _respond(c: Components, profile: Profile, user_id: str | None, k: int, filters: Filters,
             exclude: frozenset[str], forced: Variant | None = None) -> RecommendationsOut:
    variant = forced or assign(user_id or uuid.uuid4().hex, c.settings.variants, c.settings.ab_salt)
    cfg = c.rerank_config
    # a cold start has nothing to rerank against; a history whose weight has decayed away still does
    staged = variant.rerank and (not profile.is_empty or bool(profile.history))
    candidates = variant.candidate_config()
    recs = recommend(c.index, c.state, profile, max(k, cfg.top_n) if staged else k, candidates, filters, exclude)
    labels, scores = recs.labels, recs.scores
    sources = {int(lab): src for lab, src in zip(recs.labels, recs.sources)}
    evidence = evidence_of(profile)
    if staged:
        explore = np.array([lab >= 0 and "new" in sources[int(lab)] for lab in labels])
        explore[np.flatnonzero(explore)[candidates.explore_slots:]] = False
        context = context_text(c.reranker, c.index, evidence) if c.reranker is not None else ""
        labels, scores = rerank_keeping(c.index, labels, scores, explore, k, reranker=c.reranker, context=context,
                                        counts=candidate_counts(c, labels), cfg=cfg)
    evidence = replace(evidence, sources=[sources.get(int(lab), []) for lab in labels if lab >= 0])
    reasons = list_reasons(c.index, labels, evidence)
    items = scored(c.index, labels, scores)
    results = [RecommendedItem(**item.model_dump(), sources=sources[int(lab)], reason=why.text, reason_kind=why.kind)
               for item, lab, why in zip(items, labels[labels >= 0], reasons)]
    request_id = uuid.uuid4().hex
    if user_id is not None and c.events is not None and forced is None:  # a forced variant is no A/B data
        c.events.log_impression(request_id, user_id, variant.name, [r.item_id for r in results])
    return RecommendationsOut(request_id=request_id, variant=variant.name, results=results)


def _profile_cfg(c: Components) -> ProfileConfig:
    return ProfileConfig(half_life_days=c.settings.half_life_days)


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
    forced = None
    if variant is not None:
        forced = next((v for v in c.settings.variants if v.name == variant), None)
        if forced is None:
            raise unprocessable("query", "variant", f"unknown variant {variant!r}; configured: "
                                                    f"{[v.name for v in c.settings.variants]}")
    profile = user_profile(_store(c), c.index, c.embedder, user_id, _profile_cfg(c))
    drop = c.settings.exclude_purchased if exclude_purchased is None else exclude_purchased
    return _respond(c, profile, user_id, k, filters, profile.purchased if drop else frozenset(), forced)


@router.post("/users/{user_id}/onboarding", response_model=RecommendationsOut, dependencies=[require_shopper()])
def onboarding(user_id: UserId, body: OnboardingIn, c: ComponentsDep, k: KDep) -> RecommendationsOut:
    """Stated interests build a profile at once; the answer is the first recommendations."""
    unknown = [i for i in body.liked_items if c.index.table.get(i) is None]
    if unknown:
        raise unprocessable("body", "liked_items", f"unknown item ids: {unknown[:10]}")
    missing = [cat for cat in body.categories if not c.index.table.mask(Filters(category=cat)).any()]
    if missing:
        raise unprocessable("body", "categories", f"no items in categories: {missing[:10]}")
    store = _store(c)
    store.set_onboarding(user_id, body.interests, body.categories, body.liked_items)
    profile = user_profile(store, c.index, c.embedder, user_id, _profile_cfg(c))
    return _respond(c, profile, user_id, k, Filters(), profile.purchased)


@router.post("/recommendations", response_model=RecommendationsOut, dependencies=[public_read()])
def session_recommendations(body: SessionIn, c: ComponentsDep) -> RecommendationsOut:
    """Recommendations for an anonymous session from its inline context; nothing is stored."""
    unknown = [i for i in body.recent_items if c.index.table.get(i) is None]
    if unknown:
        raise unprocessable("body", "recent_items", f"unknown item ids: {unknown[:10]}")
    if body.min_price is not None and body.max_price is not None and body.min_price > body.max_price:
        raise unprocessable("body", "max_price", "max_price is below min_price")
    filters = Filters(category=body.category, brand=body.brand, min_price=body.min_price,
                      max_price=body.max_price, in_stock=body.in_stock)
    profile = session_profile(c.index, c.embedder, body.recent_items, body.text, _profile_cfg(c))
    return _respond(c, profile, None, body.k, filters, frozenset(body.recent_items))


@router.delete("/users/{user_id}", status_code=204, dependencies=[require("admin")])
def delete_user(user_id: UserId, c: ComponentsDep) -> Response:
    """Erase the user's events, onboarding answers and impressions, their share of the
    collaborative counts and their past searches. A later request for this id is a cold start."""
    store = _store(c)
    erased = store.delete_user(user_id)
    key = store.user_key(user_id)
    with c.state.lock:
        # Replay from an empty session window, as when the events were first counted.
        c.state.covisit.forget_user(key)
        c.state.apply(erased, sign=-1.0)
        c.state.covisit.forget_user(key)
    if c.search is not None:
        c.search.queries.forget(key)  # the query log keys a verified shopper's searches like the event log
    return Response(status_code=204)
