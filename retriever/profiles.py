"""User profiles: a few interest vectors from the items a shopper touched, weighted by what they did
and how long ago.

    weight(event) = TYPE_WEIGHTS[type] * 0.5 ** (age / half_life)

The weighted history is clustered (spherical k-means, deterministic farthest-point start) into at
most ``max_interests`` interest vectors, so a shopper of both skincare and hair dryers keeps both;
clusters whose centres are closer than ``merge_cosine`` are merged. Each interest carries its mass
(share of the total weight), which decides how many candidates it retrieves.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from indexer.embed import normalize

# What an event says about interest. A rating's weight scales with the stars (see event_weights).
TYPE_WEIGHTS = {"view": 1.0, "click": 2.0, "add_to_cart": 4.0, "purchase": 6.0, "rating": 6.0}


@dataclass(frozen=True)
class ProfileConfig:
    half_life_days: float = 30.0   # an event half as telling after this long
    max_interests: int = 3         # interest vectors kept per user
    merge_cosine: float = 0.75     # interests closer than this are one interest
    history: int = 200             # most recent events read per user
    interest_weight: float = 6.0   # onboarding text counts as much as a purchase
    category_weight: float = 4.0   # a chosen onboarding category, as an add-to-cart
    liked_weight: float = 6.0      # an item liked during onboarding, as a purchase


@dataclass(frozen=True)
class Profile:
    """``interests`` float32 ``(m, dim)`` unit rows; ``masses`` float32 ``(m,)`` summing to 1."""

    interests: np.ndarray
    masses: np.ndarray
    history: list[str] = field(default_factory=list)      # item ids touched, oldest first
    purchased: frozenset[str] = frozenset()
    actions: dict[str, str] = field(default_factory=dict)  # item id -> strongest event type on it
    evidence: dict = field(default_factory=dict)          # texts behind the profile, for explanations

    @property
    def is_empty(self) -> bool:
        return len(self.interests) == 0


def event_weights(types: list[str], values: list[float | None], ts: np.ndarray, now: float,
                  half_life_days: float) -> np.ndarray:
    """float32 ``(n,)``: type weight x recency decay. Ratings: 1-2 stars weigh 0 (not an interest)."""
    base = np.array([TYPE_WEIGHTS[t] for t in types], dtype=np.float64)
    stars = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    is_rating = np.array([t == "rating" for t in types])
    rated = is_rating & ~np.isnan(stars)
    base[rated] *= np.clip((stars[rated] - 2.0) / 3.0, 0.0, 1.0)
    age_days = np.maximum(now - np.asarray(ts, dtype=np.float64), 0.0) / 86_400.0
    return (base * 0.5 ** (age_days / half_life_days)).astype(np.float32)


def interest_vectors(vectors: np.ndarray, weights: np.ndarray, max_interests: int = 3,
                     merge_cosine: float = 0.75, iterations: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Weighted spherical k-means of unit ``vectors (n, d)`` -> ``(centres (m, d), masses (m,))``.

    Deterministic: the first centre is the heaviest vector, each next one the vector farthest from
    the centres so far. Zero-weight rows are ignored. Masses sum to 1; centres are sorted by mass.
    """
    keep = weights > 0
    x, w = np.asarray(vectors, np.float32)[keep], np.asarray(weights, np.float32)[keep]
    if len(x) == 0:
        return np.zeros((0, vectors.shape[1]), np.float32), np.zeros(0, np.float32)
    k = min(max_interests, len(x))
    centres = [x[int(np.argmax(w))]]
    while len(centres) < k:
        nearest = (x @ np.array(centres).T).max(axis=1)
        centres.append(x[int(np.argmin(nearest))])
    c = np.array(centres)
    for _ in range(iterations):
        assign = np.argmax(x @ c.T, axis=1)
        c = normalize(np.stack([(w[assign == j, None] * x[assign == j]).sum(0) if (assign == j).any() else c[j]
                                for j in range(len(c))]))
    assign = np.argmax(x @ c.T, axis=1)
    mass = np.array([w[assign == j].sum() for j in range(len(c))], dtype=np.float32)
    c, mass = _merge_close(c, mass, merge_cosine)
    order = np.argsort(-mass, kind="stable")
    return c[order].astype(np.float32), (mass[order] / mass.sum()).astype(np.float32)


def _merge_close(c: np.ndarray, mass: np.ndarray, merge_cosine: float) -> tuple[np.ndarray, np.ndarray]:
    c, mass = c[mass > 0], mass[mass > 0]
    while len(c) > 1:
        sim = c @ c.T
        np.fill_diagonal(sim, -np.inf)
        i, j = np.unravel_index(int(np.argmax(sim)), sim.shape)
        if sim[i, j] < merge_cosine:
            break
        merged = normalize((mass[i] * c[i] + mass[j] * c[j])[None])[0]
        rest = [n for n in range(len(c)) if n not in (i, j)]
        c = np.vstack([c[rest], merged[None]])
        mass = np.append(mass[rest], mass[i] + mass[j])
    return c, mass


def strongest_actions(item_ids: list[str], types: list[str]) -> dict[str, str]:
    """Per item, the event type that says most (``TYPE_WEIGHTS``; ties: the later event)."""
    out: dict[str, str] = {}
    for item, t in zip(item_ids, types):
        if item not in out or TYPE_WEIGHTS[t] >= TYPE_WEIGHTS[out[item]]:
            out[item] = t
    return out


def build_profile(vectors: np.ndarray, weights: np.ndarray, cfg: ProfileConfig = ProfileConfig(),
                  history: list[str] | None = None, purchased: frozenset[str] = frozenset(),
                  evidence: dict | None = None, actions: dict[str, str] | None = None) -> Profile:
    """A profile from weighted unit vectors (history items, onboarding text, chosen categories)."""
    centres, masses = interest_vectors(vectors, weights, cfg.max_interests, cfg.merge_cosine)
    return Profile(centres, masses, history or [], purchased, actions or {}, evidence or {})


def allocate(masses: np.ndarray, n: int) -> np.ndarray:
    """Split ``n`` retrieval slots over interests in proportion to mass, at least 1 each. int64 ``(m,)``."""
    m = len(masses)
    if m == 0:
        return np.zeros(0, dtype=np.int64)
    if n <= m:
        return (np.arange(m) < n).astype(np.int64)
    slots = 1 + np.floor(masses * (n - m)).astype(np.int64)
    slots[0] += n - int(slots.sum())  # rounding leftovers go to the main interest
    return slots
