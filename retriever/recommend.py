"""Personal recommendations: candidates from several sources, fused, filtered, with an exploration slot.

Sources (each a ranked list of item ids):
    dense     FAISS neighbours of each interest vector, slots split by interest mass
    covisit   items that follow the shopper's recent items in other shoppers' histories
    popular   decayed popularity over weeks; trending: over about a day
Fusion is weighted reciprocal rank (:func:`fuse`). One slot (``explore_slots``) goes to the item with
no interactions yet that is closest to the shopper's interests, if it is close enough: this is how a
brand-new product reaches the people it suits before anyone has clicked it.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from indexer.store import ItemIndex
from indexer.table import Filters

from .covisit import CoVisitation, DecayedCounter
from .eventstore import Erasure, EventStore, StoredEvent
from .profiles import Profile, allocate


@dataclass(frozen=True)
class CandidateConfig:
    """Source weights in the fusion, and candidate counts. Variants of an A/B test override these."""

    dense: float = 1.0
    covisit: float = 1.0
    popular: float = 0.15
    trending: float = 0.15
    rrf_k: float = 20.0          # rank damping: 1 / (rrf_k + rank)
    per_source: int = 100        # candidates each source proposes
    explore_slots: int = 1       # slots reserved for items with no interactions yet
    explore_min_cosine: float = 0.35  # ... when they are at least this close to an interest
    new_days: float = 30.0       # "new": added this recently (created_at) and no interactions yet
    popular_days: float = 30.0
    trending_days: float = 1.0


@dataclass
class Recommendations:
    """``labels`` int64 ``(k,)`` (-1 padding), ``scores`` float32 ``(k,)``, ``sources`` per slot."""

    labels: np.ndarray
    scores: np.ndarray
    sources: list[list[str]] = field(default_factory=list)


def fuse(ranked: dict[str, list[str]], weights: dict[str, float], rrf_k: float = 20.0
         ) -> list[tuple[str, float, list[str]]]:
    """Weighted reciprocal-rank fusion: ``score(i) = sum_s weights[s] / (rrf_k + rank_s(i))``, rank from 1.

    Returns ``(item_id, score, sources)`` best first; ties broken by item id for determinism.
    """
    score: dict[str, float] = defaultdict(float)
    sources: dict[str, list[str]] = defaultdict(list)
    for source, items in ranked.items():
        if weights.get(source, 0.0) <= 0:
            continue  # a switched-off source neither scores nor claims credit
        for rank, item in enumerate(items, start=1):
            score[item] += weights.get(source, 0.0) / (rrf_k + rank)
            sources[item].append(source)
    return sorted(((i, s, sources[i]) for i, s in score.items() if s > 0), key=lambda t: (-t[1], t[0]))


def diversify_by_category(item_ids: list[str], top_category: list[str], k: int) -> list[str]:
    """Round-robin over top-level categories, keeping each category's own order: a varied first screen."""
    queues: dict[str, list[str]] = {}
    for item, cat in zip(item_ids, top_category):
        queues.setdefault(cat, []).append(item)
    out: list[str] = []
    while len(out) < k and any(queues.values()):
        for cat in list(queues):
            if queues[cat] and len(out) < k:
                out.append(queues[cat].pop(0))
    return out


CATCH_UP_BATCH = 50_000  # events per snapshot read by InteractionState.catch_up


class InteractionState:
    """Co-visitation and popularity, kept in step with the event log and its erasure log."""

    def __init__(self, cfg: CandidateConfig = CandidateConfig()):
        self.cfg = cfg
        self.lock = threading.RLock()  # request threads read while event ingestion writes
        self._catching_up = threading.Lock()  # one reader of the log at a time: the cursors move in order
        self._reset()

    def _reset(self) -> None:
        self.covisit = CoVisitation()
        self.popular = DecayedCounter(self.cfg.popular_days * 86_400.0)
        self.trending = DecayedCounter(self.cfg.trending_days * 86_400.0)
        self.last_seq = 0  # events up to this sequence number of the log are counted
        self.last_erasure = 0  # erasure log entries up to this one are applied

    def catch_up(self, store: EventStore) -> int:
        """Apply every erasure and count every event the log holds beyond the cursors: the one path
        by which events and erasures reach the counts, whichever process stored them. Returns how
        many events were counted.

        Each round reads one snapshot and applies its erasures before its events. Why that is exact:
        an erased event with seq <= ``last_seq`` was read, and counted, in an earlier snapshot (seqs
        become visible in order, and it was not yet deleted: the erasure was not yet visible);
        one above ``last_seq`` is already deleted in this snapshot, so it is never counted.
        """
        counted = 0
        with self._catching_up:
            while True:
                changes = store.changes_after(self.last_seq, self.last_erasure, CATCH_UP_BATCH)
                if changes.erasures_pruned_through > self.last_erasure and self.last_seq > 0:
                    with self.lock:  # erasures we never applied were pruned: recount the log as it is
                        self._reset()
                    continue
                with self.lock:
                    for erasure in changes.erasures:
                        self.apply_erasure(erasure)
                    if changes.events:
                        self.apply([e for _, e in changes.events])
                        self.last_seq = changes.events[-1][0]
                self.last_erasure = max([self.last_erasure, changes.erasures_pruned_through,
                                         *(e.seq for e in changes.erasures)])
                counted += len(changes.events)
                if len(changes.events) < CATCH_UP_BATCH:  # the snapshot held no more
                    return counted

    def apply_erasure(self, erasure: Erasure) -> None:
        """Take an erased user's share out of the counts: the erased events this state counted
        (seq <= ``last_seq``), replayed with the opposite sign from an empty session window, as
        when they were first counted."""
        with self.lock:
            self.covisit.forget_user(erasure.user_key)
            self.apply([e for seq, e in erasure.events if seq <= self.last_seq], sign=-1.0)
            self.covisit.forget_user(erasure.user_key)

    def apply(self, events: list[StoredEvent], sign: float = 1.0) -> None:
        with self.lock:
            self.covisit.add(events, sign)
            self.popular.add(events, sign)
            self.trending.add(events, sign)


def _dense(index: ItemIndex, profile: Profile, n: int, allowed: np.ndarray) -> list[str]:
    """Neighbours of each interest vector, slots split by interest mass, merged by similarity."""
    ranked: list[tuple[float, str]] = []
    for vec, slots in zip(profile.interests, allocate(profile.masses, n)):
        labels, scores = index.search(vec[None], int(slots), allowed=allowed)
        ranked += [(float(s), index.table.records[lab]["item_id"]) for lab, s in zip(labels[0], scores[0]) if lab >= 0]
    seen: set[str] = set()
    out = []
    for _, item in sorted(ranked, key=lambda t: -t[0]):
        if item not in seen:
            seen.add(item)
            out.append(item)
    return out


def new_item_mask(index: ItemIndex, state: InteractionState, allowed: np.ndarray, new_days: float,
                  now: float) -> np.ndarray:
    """Items in ``allowed`` created within ``new_days`` of ``now`` that no one has interacted with yet."""
    created = index.table.created_at.view
    with np.errstate(invalid="ignore"):
        mask = allowed & (created >= now - new_days * 86_400.0)  # unknown (NaN) creation: not new
    pop = state.popular
    # Only the recently created are looked up: a loop over every item with interactions cost ~10 ms
    # per request on Beauty.
    for label in np.flatnonzero(mask):
        slot = pop.index.get(index.table.records[label]["item_id"])
        if slot is not None and pop.count[slot] > 0:
            mask[label] = False
    return mask


def recommend(index: ItemIndex, state: InteractionState, profile: Profile, k: int,
              cfg: CandidateConfig = CandidateConfig(), filters: Filters | None = None,
              exclude: frozenset[str] = frozenset()) -> Recommendations:
    """Top-``k`` items for ``profile``: fused candidates, business filters, ``exclude`` left out.

    With an empty profile (nothing known about the shopper) the answer is the popular list spread
    over top-level categories, never an error.
    """
    with index.lock, state.lock:
        allowed = index.table.mask(filters)
        for item in exclude:
            label = index.table.label_of.get(item)
            if label is not None:
                allowed[label] = False

        def ok(item: str) -> bool:
            label = index.table.label_of.get(item)
            return label is not None and bool(allowed[label])

        ranked: dict[str, list[str]] = {}
        if not profile.is_empty:
            ranked["dense"] = _dense(index, profile, cfg.per_source, allowed)
        if profile.history:
            ranked["covisit"] = [i for i in state.covisit.neighbours(profile.history, 4 * cfg.per_source)[0]
                                 if ok(i)][: cfg.per_source]
        ranked["popular"] = state.popular.top(cfg.per_source, ok)[0]
        ranked["trending"] = state.trending.top(cfg.per_source, ok)[0]
        weights = {"dense": cfg.dense, "covisit": cfg.covisit, "popular": cfg.popular, "trending": cfg.trending}
        fused = fuse(ranked, weights, cfg.rrf_k)
        if profile.is_empty:
            fused = _cold(index, fused, allowed, k)
        picks = fused[: max(0, k - cfg.explore_slots) if not profile.is_empty else k]
        if not profile.is_empty and cfg.explore_slots:
            fresh = new_item_mask(index, state, allowed, cfg.new_days, time.time())
            # a new item that another source found is still "new": later stages keep its slot
            picks = [(i, s, src + ["new"]) if fresh[index.table.label_of[i]] else (i, s, src) for i, s, src in picks]
            picks += _explore(index, state, profile, fresh, {p[0] for p in picks}, cfg)
        taken = {q[0] for q in picks}
        picks += [p for p in fused[len(picks):] if p[0] not in taken][: k - len(picks)]
        labels = np.full(k, -1, dtype=np.int64)
        scores = np.full(k, -np.inf, dtype=np.float32)
        for slot, (item, score, _) in enumerate(picks[:k]):
            labels[slot], scores[slot] = index.table.label_of[item], score
        return Recommendations(labels, scores, [p[2] for p in picks[:k]])


def _cold(index: ItemIndex, fused: list[tuple[str, float, list[str]]], allowed: np.ndarray, k: int):
    """Popular first, spread over categories; with no events at all, the catalog itself, spread."""
    if not fused:
        fused = [(index.table.records[lab]["item_id"], 0.0, ["catalog"]) for lab in np.flatnonzero(allowed)[: 50 * k]]
    by_id = {f[0]: f for f in fused}
    tops = [(index.table.get(f[0])["categories"] or [""])[0] for f in fused]
    return [by_id[i] for i in diversify_by_category([f[0] for f in fused], tops, k)]


def _explore(index, state, profile, fresh, taken, cfg) -> list[tuple[str, float, list[str]]]:
    if not fresh.any():
        return []
    labels, scores = index.search(profile.interests, cfg.explore_slots, allowed=fresh)
    best = sorted(((float(s), int(lab)) for row_l, row_s in zip(labels, scores)
                   for lab, s in zip(row_l, row_s) if lab >= 0), reverse=True)
    out = []
    for s, lab in best:
        item = index.table.records[lab]["item_id"]
        if s >= cfg.explore_min_cosine and item not in taken and len(out) < cfg.explore_slots:
            out.append((item, s, ["new"]))
            taken = taken | {item}
    return out
