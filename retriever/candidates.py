"""Candidate sources of personal recommendations, each a ranked run of item-index labels.

    dense     FAISS neighbours of each interest vector, slots split by interest mass
    covisit   items that follow the shopper's recent items in other shoppers' histories
    popular   decayed popularity over weeks; trending: over about a day
    new       the exploration slot: items with no interactions yet, close to an interest

Every source returns one run ``(labels (m,), scores (m,))`` (int64, -1 padding; float32, -inf
padding), best first, already restricted to the ``allowed`` mask (live items passing the filters,
minus what the shopper must not be shown). Fusing them is ``retriever.fusion``'s job, ranking
``ranker.pipeline``'s. Callers hold ``index.lock`` and ``state.lock`` (one consistent view).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from indexer.results import empty, top_labels
from indexer.store import ItemIndex
from indexer.table import Filters

from .profiles import Profile, allocate
from .state import InteractionState

Run = tuple[np.ndarray, np.ndarray]
SOURCES = ("dense", "covisit", "popular", "trending", "mf", "encoder", "ease")  # the last three: when loaded


@dataclass(frozen=True)
class CandidateConfig:
    """Source weights in the fusion, and candidate counts. Variants of an A/B test override these."""

    dense: float = 1.0
    covisit: float = 1.0
    popular: float = 0.15
    trending: float = 0.15
    mf: float = 1.0              # matrix factorisation (``retriever.mf``), when a model is loaded
    encoder: float = 1.0         # the history encoder (``retriever.encoder``), when a model is loaded
    ease: float = 1.0            # EASE item-item weights (``retriever.ease``), when a model is loaded
    rrf_k: float = 20.0          # rank damping: 1 / (rrf_k + rank)
    per_source: int = 100        # candidates each source proposes
    explore_slots: int = 1       # slots reserved for items with no interactions yet
    explore_min_cosine: float = 0.35  # ... when they are at least this close to an interest
    new_days: float = 30.0       # "new": added this recently (created_at) and no interactions yet
    popular_days: float = 30.0
    trending_days: float = 1.0

    def weights(self) -> dict[str, float]:
        return {s: float(getattr(self, s)) for s in SOURCES}


def allowed_mask(index: ItemIndex, filters: Filters | None, exclude: frozenset[str] = frozenset()) -> np.ndarray:
    """bool ``(n_labels,)``: live items passing ``filters``, without the item ids in ``exclude``."""
    allowed = index.table.mask(filters)
    for item in exclude:
        label = index.table.label_of.get(item)
        if label is not None:
            allowed[label] = False
    return allowed


def _labels_of(index: ItemIndex, item_ids: list[str]) -> np.ndarray:
    return np.array([index.table.label_of.get(i, -1) for i in item_ids], dtype=np.int64)


def dense(index: ItemIndex, profile: Profile, n: int, allowed: np.ndarray) -> Run:
    """Neighbours of each interest vector, slots split by interest mass, merged by similarity."""
    if profile.is_empty:
        return tuple(a[0] for a in empty(1, 0))
    parts_l, parts_s = [], []
    for vec, slots in zip(profile.interests, allocate(profile.masses, n)):
        labels, scores = index.search(vec[None], int(slots), allowed=allowed)
        parts_l.append(labels[0])
        parts_s.append(scores[0])
    labels, scores = np.concatenate(parts_l), np.concatenate(parts_s)
    best: dict[int, float] = {}
    for lab, s in zip(labels.tolist(), scores.tolist()):
        if lab >= 0 and s > best.get(lab, -np.inf):
            best[lab] = s
    return top_labels(np.fromiter(best, np.int64, len(best)), np.fromiter(best.values(), np.float32, len(best)),
                      len(best))


def covisit(index: ItemIndex, state: InteractionState, history: list[str], n: int, allowed: np.ndarray) -> Run:
    """Items that followed ``history`` (oldest first) in other shoppers' sessions."""
    if not history:
        return tuple(a[0] for a in empty(1, 0))
    ids, scores = state.covisit.neighbours(history, 4 * n)
    labels = _labels_of(index, ids)
    ok = (labels >= 0) & allowed[np.maximum(labels, 0)]
    return labels[ok][:n], scores[ok][:n]


def popular(index: ItemIndex, state: InteractionState, half_life_days: float, n: int, allowed: np.ndarray) -> Run:
    """The ``n`` most popular allowed items under a decayed count with that half-life (best = 1)."""
    def ok(item: str) -> bool:
        label = index.table.label_of.get(item)
        return label is not None and bool(allowed[label])

    ids, scores = state.counter(half_life_days).top(n, ok)
    return _labels_of(index, ids), scores


def gather(index: ItemIndex, state: InteractionState, profile: Profile, cfg: CandidateConfig,
           allowed: np.ndarray) -> dict[str, Run]:
    """Every source with a positive weight, as one run each."""
    n, w = cfg.per_source, cfg.weights()
    makers = {
        "dense": lambda: dense(index, profile, n, allowed),
        "covisit": lambda: covisit(index, state, profile.history, n, allowed),
        "popular": lambda: popular(index, state, cfg.popular_days, n, allowed),
        "trending": lambda: popular(index, state, cfg.trending_days, n, allowed),
    }
    return {name: make() for name, make in makers.items() if w[name] > 0}


def new_item_mask(index: ItemIndex, state: InteractionState, allowed: np.ndarray, new_days: float,
                  now: float | None = None) -> np.ndarray:
    """Items in ``allowed`` created within ``new_days`` of ``now`` that no one has interacted with yet."""
    now = time.time() if now is None else now
    created = index.table.created_at.view
    with np.errstate(invalid="ignore"):
        mask = allowed & (created >= now - new_days * 86_400.0)  # unknown (NaN) creation: not new
    # Only the recently created are looked up: a loop over every item with interactions cost ~10 ms
    # per request on Beauty.
    fresh = np.flatnonzero(mask)
    seen = state.interacted([index.table.records[lab]["item_id"] for lab in fresh.tolist()])
    mask[fresh[seen]] = False
    return mask


def explore(index: ItemIndex, profile: Profile, fresh: np.ndarray, taken: set[int], cfg: CandidateConfig) -> Run:
    """Up to ``cfg.explore_slots`` new items (``fresh`` mask) closest to an interest, at least
    ``cfg.explore_min_cosine`` close, not in ``taken``."""
    if profile.is_empty or not fresh.any() or not cfg.explore_slots:
        return tuple(a[0] for a in empty(1, 0))
    labels, scores = index.search(profile.interests, cfg.explore_slots + len(taken), allowed=fresh)
    best: dict[int, float] = {}
    for lab, s in zip(labels.ravel().tolist(), scores.ravel().tolist()):
        if lab >= 0 and lab not in taken and s >= cfg.explore_min_cosine and s > best.get(lab, -np.inf):
            best[lab] = s
    ranked = top_labels(np.fromiter(best, np.int64, len(best)), np.fromiter(best.values(), np.float32, len(best)),
                        cfg.explore_slots)
    live = ranked[0] >= 0
    return ranked[0][live], ranked[1][live]


def round_robin(labels: np.ndarray, groups: list[str], k: int) -> np.ndarray:
    """Round-robin over ``groups`` (one per label, e.g. top-level categories), each keeping its own
    order: a varied first screen. labels: (m,) int64 best first -> (<= k,) int64."""
    queues: dict[str, list[int]] = {}
    for lab, group in zip(labels.tolist(), groups):
        if lab >= 0:
            queues.setdefault(group, []).append(lab)
    out: list[int] = []
    while len(out) < k and any(queues.values()):
        for group in list(queues):
            if queues[group] and len(out) < k:
                out.append(queues[group].pop(0))
    return np.asarray(out, dtype=np.int64)


def spread_over_categories(index: ItemIndex, labels: np.ndarray, k: int) -> np.ndarray:
    """:func:`round_robin` over the labels' top-level categories."""
    tops = [(index.table.records[lab]["categories"] or [""])[0] if lab >= 0 else "" for lab in labels.tolist()]
    return round_robin(labels, tops, k)
