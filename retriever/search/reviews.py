"""Review match: how close a query is to what an item's own reviews say, one review at a time.

An item's index vector pools its description and all its reviews into one vector; a query (a
review headline, a shopper's words) is often close to two or three reviews and lost in the mean.
For each of the fused top ``rerank_depth`` candidates, ``match = mean of its best `top` review
cosines`` over the per-review vectors its review pool keeps (``indexer.pools.ReviewPool.rows``); the
engine reorders them by max-normalised fused score + ``review_weight * minmax(match)``
(``SearchConfig``).

Measured on the dev samples of ``evaluation.search_eval`` (500 queries each, hybrid MRR@10
Instruments 0.1678, Subscription Boxes 0.1621): weight 0.5 over the top 50 gave 0.1773 and 0.1715;
0.3 gave 0.1735 / 0.1683, 0.7 0.1756 / 0.1679, the top 30 0.1776 / 0.1707. Over every fused
candidate (~200) instead of the top 50 it lost MRR on the Instruments test sample (0.1439 -> 0.1427),
and the 3 reviews kept for explanations alone instead of all of them cost MRR on dev (0.1646 / 0.1527).
"""

from __future__ import annotations

import numpy as np

from indexer.store import ItemIndex


def review_match(index: ItemIndex, labels: np.ndarray, query_vec: np.ndarray, top: int = 3) -> np.ndarray:
    """float32 ``(len(labels),)``: per candidate label, the mean cosine of its ``top`` reviews closest
    to the unit ``query_vec`` (0 for an item without per-review vectors)."""
    q = np.asarray(query_vec, dtype=np.float32)
    out = np.zeros(len(labels), dtype=np.float32)
    with index.lock:
        pools = [index.pools.get(index.table.records[int(lb)]["item_id"]) for lb in labels]
        mats = [p.matrix() if p is not None and p.rows else None for p in pools]
    for j, m in enumerate(mats):
        if m is not None:
            sims = m.astype(np.float32) @ q
            out[j] = np.sort(sims)[-top:].mean()
    return out


def rerank_by_reviews(index: ItemIndex, labels: np.ndarray, scores: np.ndarray, query_vec: np.ndarray, n: int,
                      weight: float, top: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """One fused run ``(labels, scores)`` with its top ``n`` reordered by max-normalised score +
    ``weight * minmax(review_match)``; the rest keep their order below them (-1 padding dropped)."""
    live = labels >= 0
    labels, scores = labels[live], scores[live].astype(np.float64)
    n = min(len(labels), n)
    if not n:
        return labels, scores
    m = review_match(index, labels[:n], query_vec, top).astype(np.float64)
    span = m.max() - m.min()
    m = (m - m.min()) / span if span > 0 else np.zeros_like(m)
    head = scores[:n] / max(scores[:n].max(), 1e-12) + weight * m
    order = np.argsort(-head, kind="stable")
    rest = scores[n:] / max(scores[:n].max(), 1e-12) - (head.max() - head.min() + 1)  # stays below the head
    return np.concatenate([labels[:n][order], labels[n:]]), np.concatenate([head[order], rest])
