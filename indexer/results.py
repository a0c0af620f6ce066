"""The one result shape of every stage, and the helpers that make it.

A result is ``(labels, scores)``: ``labels`` int64 and ``scores`` float32, both ``(n_queries, k)``,
best first, padded with label -1 / score -inf where fewer than ``k`` entries qualify. Labels are
rows of the item index (or item indexes offline). Ties are broken by the lower label / column so
every ranking is deterministic.

- :func:`top_k`: the best ``k`` columns of a dense score matrix ``(n, m)``;
- :func:`top_labels`: the best ``k`` of candidate lists ``(labels, scores)`` of any width;
- :func:`keep`: drop entries (a mask) from a result, keeping order, re-padded to ``k``;
- :func:`empty`: an all-padding result.
"""

from __future__ import annotations

import numpy as np

Result = tuple[np.ndarray, np.ndarray]


def empty(n: int, k: int) -> Result:
    """``(n, k)`` all padding: labels -1, scores -inf."""
    return np.full((n, k), -1, dtype=np.int64), np.full((n, k), -np.inf, dtype=np.float32)


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k per row of ``scores`` (n, m): order by score desc, ties by lower column index.

    Returns (ids (n, k) int64, scores (n, k) float32); columns at -inf and columns beyond m are
    padding (id -1, score -inf). Equals ``np.argsort(-scores, kind="stable")[:, :k]`` on the
    non-padding part.
    """
    n, m = scores.shape
    kk = min(k, m)
    ids = np.full((n, k), -1, dtype=np.int64)
    vals = np.full((n, k), -np.inf, dtype=np.float32)
    if kk == 0 or n == 0:
        return ids, vals
    rows = np.arange(n)[:, None]
    cols = np.argpartition(scores, m - kk, axis=1)[:, m - kk :]
    v = scores[rows, cols]
    kth = v.min(axis=1)  # the k-th largest value per row
    eq_in = (v == kth[:, None]).sum(axis=1)
    eq_all = (scores == kth[:, None]).sum(axis=1)
    for r in np.flatnonzero(eq_all > eq_in):  # ties at the cut: keep the lowest indexes
        above = v[r] > kth[r]
        cols[r] = np.concatenate([cols[r][above], np.flatnonzero(scores[r] == kth[r])[: eq_in[r]]])
        v[r] = scores[r, cols[r]]
    order = np.lexsort((cols, -v))  # by score desc, then index asc
    cols, v = np.take_along_axis(cols, order, 1), np.take_along_axis(v, order, 1)
    pad = np.isneginf(v)
    ids[:, :kk] = np.where(pad, -1, cols)
    vals[:, :kk] = v
    return ids, vals



def top_labels(labels: np.ndarray, scores: np.ndarray, k: int) -> Result:
    """The ``k`` best entries of candidate lists: ``labels`` / ``scores`` ``(n, m)`` or ``(m,)``, in any
    order, -1 / -inf padding allowed -> ``(n, k)`` (``(k,)`` for 1-D input) sorted by score desc, ties
    to the lower label; entries at -inf become padding."""
    labels, scores = np.asarray(labels, dtype=np.int64), np.asarray(scores, dtype=np.float32)
    one = labels.ndim == 1
    labels, scores = np.atleast_2d(labels), np.atleast_2d(scores)
    scores = np.where(labels >= 0, scores, -np.inf)
    order = np.lexsort((labels, -scores), axis=-1)[:, :k]
    out_l, out_s = empty(len(labels), k)
    m = order.shape[1]
    out_l[:, :m] = np.take_along_axis(labels, order, 1)
    out_s[:, :m] = np.take_along_axis(scores, order, 1)
    out_l[np.isneginf(out_s)] = -1
    return (out_l[0], out_s[0]) if one else (out_l, out_s)


def keep(labels: np.ndarray, scores: np.ndarray, mask: np.ndarray, k: int) -> Result:
    """Entries of ``(labels, scores)`` ``(n, m)`` where ``mask`` (n, m) bool holds (and labels >= 0),
    in their order, cut or padded to ``(n, k)``."""
    labels, scores = np.atleast_2d(labels), np.atleast_2d(scores)
    mask = np.atleast_2d(mask) & (labels >= 0)
    out_l, out_s = empty(len(labels), k)
    for i in range(len(labels)):
        cols = np.flatnonzero(mask[i])[:k]
        out_l[i, : len(cols)], out_s[i, : len(cols)] = labels[i, cols], scores[i, cols]
    return out_l, out_s
