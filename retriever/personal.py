"""Profiles from what is known about a shopper: their events, their onboarding answers, or an
anonymous session's context. Also: public interaction logs as events."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pandas as pd

from indexer.embed import Embedder, normalize
from indexer.schema import make_reviews
from indexer.store import ItemIndex

from .eventstore import Event, EventStore, StoredEvent
from .profiles import Profile, ProfileConfig, build_profile, event_weights, strongest_actions

# Public logs without timestamps (Beauty, Scientific) keep their order: event n of the file gets
# IMPORT_EPOCH + n seconds, so "newest" still means "latest in the file".
IMPORT_EPOCH = 1_388_534_400.0  # 2014-01-01


def category_centroid(index: ItemIndex, category: str) -> np.ndarray | None:
    """Mean unit vector of the live items in ``category`` (any level), or None if there are none."""
    from indexer.table import Filters

    with index.lock:
        labels = np.flatnonzero(index.table.mask(Filters(category=category)))
        if len(labels) == 0:
            return None
        return normalize(index.vectors.view[labels].mean(axis=0, keepdims=True))[0]


def live_vectors(index: ItemIndex, item_ids: list[str]) -> tuple[list[int], np.ndarray]:
    """Positions in ``item_ids`` of the items live now, and their unit vectors float32 ``(m, dim)``,
    read in one step under the index lock: an item deleted meanwhile (by a request racing this
    one) is left out, never a KeyError."""
    with index.lock:
        labels = [index.table.label_of.get(i) for i in item_ids]
        keep = [n for n, label in enumerate(labels) if label is not None]
        return keep, index.vectors.view[[labels[n] for n in keep]].copy()


def context_vectors(index: ItemIndex, embedder: Embedder, cfg: ProfileConfig, *, text: str = "",
                    categories: list[str] = (), liked: list[str] = ()) -> tuple[np.ndarray, np.ndarray, dict]:
    """Vectors and weights for stated interests: free text, chosen categories, liked items.

    Unknown categories and items are skipped (the API validates them first and says which).
    Returns ``(vectors (n, dim), weights (n,), evidence)``.
    """
    # evidence["stated"]: (text, unit vector) of each stated interest and category, for reasons
    vecs, weights, evidence = [], [], {"interests": [], "categories": [], "liked": [], "stated": []}
    if text.strip():
        vecs.append(embedder.encode([text])[0])
        weights.append(cfg.interest_weight)
        evidence["interests"].append(text.strip())
        evidence["stated"].append((text.strip(), vecs[-1]))
    for cat in categories:
        centre = category_centroid(index, cat)
        if centre is not None:
            vecs.append(centre)
            weights.append(cfg.category_weight)
            evidence["categories"].append(cat)
            evidence["stated"].append((cat, centre))
    keep, liked_vecs = live_vectors(index, list(liked))
    known = [liked[n] for n in keep]
    if known:
        vecs.extend(liked_vecs)
        weights.extend([cfg.liked_weight] * len(known))
        evidence["liked"] = known
    dim = index.dim
    return (np.array(vecs, dtype=np.float32).reshape(-1, dim), np.array(weights, dtype=np.float32), evidence)


def profile_from_events(index: ItemIndex, events: list[StoredEvent], cfg: ProfileConfig, now: float,
                        extra: tuple[np.ndarray, np.ndarray, dict] | None = None) -> Profile:
    """A profile from stored events (oldest first) plus optional stated-interest vectors."""
    keep, vecs = live_vectors(index, [e.item_id for e in events])
    live = [events[n] for n in keep]
    w = event_weights([e.type for e in live], [e.value for e in live], np.array([e.ts for e in live]), now,
                      cfg.half_life_days) if live else np.zeros(0, np.float32)
    evidence: dict = {}
    if extra is not None:
        vecs, w, evidence = np.vstack([vecs, extra[0]]), np.concatenate([w, extra[1]]), extra[2]
    history = [e.item_id for e in live]
    # A rating (e.g. a review) means the shopper has the item: it counts as bought for exclusion.
    purchased = frozenset(e.item_id for e in live if e.type in ("purchase", "rating"))
    actions = strongest_actions(history, [e.type for e in live])
    return build_profile(vecs, w, cfg, history, purchased, evidence, actions)


def user_profile(store: EventStore, index: ItemIndex, embedder: Embedder, user_id: str,
                 cfg: ProfileConfig = ProfileConfig(), now: float | None = None) -> Profile:
    """The stored user's profile, from their latest events and onboarding answers."""
    now = time.time() if now is None else now
    events = store.user_events(user_id, cfg.history)
    onboarding = store.onboarding(user_id)
    extra = None
    if onboarding is not None:
        text, cats, liked = onboarding
        extra = context_vectors(index, embedder, cfg, text=text, categories=cats, liked=liked)
    return profile_from_events(index, events, cfg, now, extra)


def session_profile(index: ItemIndex, embedder: Embedder, recent_items: list[str], text: str,
                    cfg: ProfileConfig = ProfileConfig()) -> Profile:
    """An anonymous session's profile: recent items (oldest first, viewed a minute apart) + free text."""
    now = time.time()
    events = [StoredEvent("session", item, "view", None, now - 60.0 * (len(recent_items) - n))
              for n, item in enumerate(recent_items)]
    return profile_from_events(index, events, cfg, now, context_vectors(index, embedder, cfg, text=text))


def events_from_reviews(reviews: pd.DataFrame, dataset: str) -> Iterator[Event]:
    """A public log as events: a review with stars is a ``rating``, a bare interaction a ``purchase``.

    Event ids are ``import:{dataset}:{review_id}``, so importing twice stores nothing twice.
    """
    ts = reviews["timestamp"].to_numpy(np.float64)
    order_ts = IMPORT_EPOCH + np.arange(len(reviews), dtype=np.float64)
    ts = np.where(np.isnan(ts), order_ts, ts)
    for rid, user, item, rating, t in zip(reviews["review_id"], reviews["user_id"], reviews["item_id"],
                                          reviews["rating"], ts):
        rated = not np.isnan(rating)
        yield Event(f"import:{dataset}:{rid}", user, item, "rating" if rated else "purchase", float(t),
                    float(rating) if rated else None)


def reviews_from_events(store: EventStore, types: tuple[str, ...] = ("click", "add_to_cart", "purchase", "rating"),
                        batch: int = 50_000) -> pd.DataFrame:
    """The event log as interactions (reviews schema), for training: one row per event of ``types``
    (views are left out: too weak a signal for a positive), users by their pseudonymous key,
    in arrival order."""
    rows, seq = [], 0
    while chunk := store.events_after(seq, batch):
        rows += [{"review_id": f"event:{s}", "user_id": e.user_key, "item_id": e.item_id, "timestamp": e.ts,
                  "rating": e.value if e.type == "rating" else None} for s, e in chunk if e.type in types]
        seq = chunk[-1][0]
    return make_reviews(rows) if rows else make_reviews(pd.DataFrame(columns=["item_id", "user_id"]))


def import_reviews(store: EventStore, reviews: pd.DataFrame, dataset: str, batch: int = 20_000) -> tuple[int, int]:
    """Store a public log's interactions as events, oldest first. Returns ``(read, newly stored)``."""
    reviews = reviews.sort_values("timestamp", kind="stable", na_position="first")
    read = stored = 0
    pending: list[Event] = []
    for event in events_from_reviews(reviews, dataset):
        pending.append(event)
        if len(pending) == batch:
            stored += sum(store.add_events(pending))
            read, pending = read + len(pending), []
    stored += sum(store.add_events(pending))
    return read + len(pending), stored
