"""Features of each candidate of a personal list: what the learned ranking (``ranker.ltr``) reads.

For one shopper and their candidates (the union of the sources' runs), one row per candidate:

    rank_<s>, score_<s>   its 1-based rank and score in each source's run (NaN: not proposed)
    cos_interest          max cosine of the item to the shopper's interest vectors
    mf, encoder, ease     the MF and history-encoder dot products and the EASE score (NaN: model
                          absent / item unknown)
    log_count, popular, trending   log(1 + interactions); decayed popularity (weeks / a day), best = 1
    fresh, age_days       no interactions yet and created recently; days since created (NaN unknown)
    share_top, share_leaf, share_brand   share of the shopper's history in its top-level
                          category / most specific category / brand
    price_gap             |log(price) - mean log price of the history| (NaN unknown)
    history, interests    the shopper's history length and number of interest vectors
    fused                 the weighted reciprocal-rank fusion of the sources (the untrained ranking)
    reranker              the reranker's logit for (the shopper's context, the item's text), for the
                          candidates ``ranker.rerank.feature_positions`` picks (NaN: not scored / no reranker)

Plain functions over arrays; callers hold ``index.lock`` and ``state.lock``.
"""

from __future__ import annotations

import time
from collections import Counter

import numpy as np

from indexer.store import ItemIndex
from retriever.profiles import Profile
from retriever.state import InteractionState

Array = np.ndarray
SOURCES = ("dense", "covisit", "popular", "trending", "mf", "encoder", "ease")
LEARNED = ("mf", "encoder", "ease")  # the learned sources' scores of every candidate
NAMES = (*(f"{p}_{s}" for s in SOURCES for p in ("rank", "score")), "cos_interest", *LEARNED,
         "log_count", "popular", "trending", "fresh", "age_days", "share_top", "share_leaf", "share_brand",
         "price_gap", "history", "interests", "fused", "reranker")


def _shares(values: list[str], history: list[str]) -> Array:
    counts = Counter(history)
    n = max(len(history), 1)
    return np.array([counts[v] / n if v else 0.0 for v in values], dtype=np.float32)


def candidate_features(index: ItemIndex, state: InteractionState, profile: Profile, labels: Array, fused: Array,
                       runs: dict[str, tuple[Array, Array]], fresh: Array | None, *, learned: dict[str, Array],
                       popular_days: float, trending_days: float, now: float | None = None) -> Array:
    """float32 ``(len(labels), len(NAMES))``: the rows above for ``labels`` (m,) int64 (no padding).

    fused: (m,) the fusion score of each label; runs: source -> (labels, scores) best first;
    fresh: bool mask over all labels (or None); learned: source in ``LEARNED`` -> (m,) scores (absent: NaN).
    The reranker column stays NaN here: ``ranker.pipeline.rerank_feature`` fills it, outside the locks.
    """
    now = time.time() if now is None else now
    m = len(labels)
    out = np.full((m, len(NAMES)), np.nan, dtype=np.float32)
    col = {name: j for j, name in enumerate(NAMES)}
    # row of each label, by label (an array lookup: a dict per candidate cost 1 ms a shopper)
    pos = np.full(max(index.table.n_labels, int(labels.max(initial=-1)) + 1), -1, dtype=np.int64)
    pos[labels] = np.arange(m)
    for source in SOURCES:
        run_l, run_s = runs.get(source, (np.zeros(0, np.int64), np.zeros(0, np.float32)))
        run_l = np.asarray(run_l, dtype=np.int64)
        ok = (run_l >= 0) & (run_l < len(pos))
        j = np.where(ok, pos[np.where(ok, run_l, 0)], -1)
        hit = np.flatnonzero(j >= 0)
        hit = hit[np.unique(j[hit], return_index=True)[1]]  # a label twice in a run: its first (best) place
        out[j[hit], col[f"rank_{source}"]] = hit + 1
        out[j[hit], col[f"score_{source}"]] = np.asarray(run_s)[hit]
    vecs = index.vectors.view[labels]
    if not profile.is_empty:
        out[:, col["cos_interest"]] = (vecs @ profile.interests.T).max(axis=1)
    for name, values in learned.items():
        out[:, col[name]] = values
    records = [index.table.records[lab] for lab in labels.tolist()]
    ids = [r["item_id"] for r in records]
    out[:, col["log_count"]] = np.log1p(state.counts(ids))
    for name, days in (("popular", popular_days), ("trending", trending_days)):
        out[:, col[name]] = state.counter(days).relative(ids)
    if fresh is not None:
        out[:, col["fresh"]] = fresh[labels]
    created = index.table.created_at.view[labels]
    out[:, col["age_days"]] = (now - created) / 86_400.0
    hist = [index.table.get(i) for i in profile.history[-50:]]
    hist = [r for r in hist if r is not None]
    top = [(r["categories"] or [""])[0] for r in hist]
    leaf = [(r["categories"] or [""])[-1] for r in hist]
    out[:, col["share_top"]] = _shares([(r["categories"] or [""])[0] for r in records], top)
    out[:, col["share_leaf"]] = _shares([(r["categories"] or [""])[-1] for r in records], leaf)
    brands = [r["brand"].casefold() for r in hist]
    out[:, col["share_brand"]] = _shares([r["brand"].casefold() for r in records], brands)
    prices = np.array([r["price"] for r in hist], dtype=np.float64)
    prices = prices[np.isfinite(prices) & (prices > 0)]
    if len(prices):
        item_prices = index.table.price.view[labels]
        with np.errstate(invalid="ignore", divide="ignore"):
            out[:, col["price_gap"]] = np.abs(np.log(item_prices) - np.log(prices).mean())
    out[:, col["history"]] = len(profile.history)
    out[:, col["interests"]] = len(profile.interests)
    out[:, col["fused"]] = fused
    return out
