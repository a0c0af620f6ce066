"""Maximal Marginal Relevance (Carbonell & Goldstein 1998): re-order a list for diversity.

Greedy: pick the most relevant candidate; then repeatedly pick the candidate maximising

    lam * rel(j) - (1 - lam) * max_{s already picked} cos(v_j, v_s)

``rel`` is the row's relevance min-max scaled to [0, 1], so it is on the scale of the cosine
penalty whatever its units (logits, fused z-scores). ``lam = 1`` keeps the relevance order;
smaller ``lam`` trades relevance for items unlike those already shown, which breaks up runs of
near-duplicates (the same lipstick in five shades). Pure function; ties go to the earlier column.
"""

from __future__ import annotations

import numpy as np

Array = np.ndarray


def mmr(labels: Array, relevance: Array, vectors: Array, k: int, lam: float = 0.7) -> tuple[Array, Array]:
    """Diversified top-``k`` of each candidate list.

    Args:
        labels: (n, m) int64 candidate labels (rows of ``vectors``); -1 = padding, never picked.
        relevance: (n, m) float, higher = more relevant.
        vectors: (n_items, d) float32 unit item vectors (cosine = dot product).
        k: length of each output list.
        lam: weight of relevance in [0, 1].

    Returns ``(labels, scores)``, each (n, k): picked labels in pick order and the MMR objective at
    the moment each was picked (non-increasing only when ``lam`` = 1); padded with -1 / -inf.
    """
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must be in [0, 1], got {lam}")
    labels = np.asarray(labels)
    n, m = labels.shape
    out_l = np.full((n, k), -1, dtype=np.int64)
    out_s = np.full((n, k), -np.inf, dtype=np.float32)
    for r in range(n):
        cols = np.flatnonzero(labels[r] >= 0)
        if not len(cols):
            continue
        rel = np.asarray(relevance[r, cols], dtype=np.float64)
        span = rel.max() - rel.min()
        rel = (rel - rel.min()) / span if span > 0 else np.ones_like(rel)
        v = np.asarray(vectors[labels[r, cols]], dtype=np.float64)
        sim = v @ v.T
        max_sim = np.full(len(cols), -np.inf)  # nothing picked yet: no redundancy penalty
        free = np.ones(len(cols), dtype=bool)
        for slot in range(min(k, len(cols))):
            penalty = np.where(np.isneginf(max_sim), 0.0, max_sim)
            obj = np.where(free, lam * rel - (1.0 - lam) * penalty, -np.inf)
            j = int(np.argmax(obj))  # first maximum = earliest column
            out_l[r, slot], out_s[r, slot] = labels[r, cols[j]], obj[j]
            free[j] = False
            max_sim = np.maximum(max_sim, sim[j])
    return out_l, out_s
