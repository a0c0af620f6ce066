"""Fusing ranked lists from several retrievers (BM25 and dense) into one: plain functions.

Every run is a ``(labels, scores)`` pair of shape ``(n_queries, depth)`` (int64 labels, -1 padding;
float32 scores, -inf padding), best first. Every function returns the same shape with ``k`` columns.
Ties are broken by the lower label, so results are deterministic.

- :func:`rrf`: reciprocal-rank fusion (Cormack, Clarke & Büttcher, SIGIR 2009):
  ``score(d) = sum_r w_r / (RRF_K + rank_r(d))``, rank 1-based, a run missing ``d`` adds nothing.
  Scale-free: it needs no calibration between BM25 (unbounded) and cosine ([-1, 1]).
- :func:`weighted_fusion`: each run's scores min-max normalised per query over its retrieved
  candidates (best -> 1, worst -> 0; all equal -> 1), then ``score(d) = sum_r w_r * norm_r(d)``, a
  run missing ``d`` adds 0 ("relative score fusion"). Keeps how *much* better the top hit is.

Which is the default is decided by measurement (``evaluation/search_eval.py``): see
``retriever.search.engine.SearchConfig``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Run = tuple[np.ndarray, np.ndarray]

# Cormack et al.'s constant: damps the head so one retriever's rank-1 cannot outvote agreement.
RRF_K = 60.0


def _rows(runs: Sequence[Run]) -> int:
    if not runs:
        raise ValueError("fusion needs at least one run")
    n = len(runs[0][0])
    if any(len(labels) != n or np.shape(scores) != np.shape(labels) for labels, scores in runs):
        raise ValueError("every run must have the same number of rows and matching label/score shapes")
    return n


def _top(acc: dict[int, float], k: int) -> tuple[np.ndarray, np.ndarray]:
    labels = np.full(k, -1, dtype=np.int64)
    scores = np.full(k, -np.inf, dtype=np.float32)
    best = sorted(acc.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
    if best:
        labels[: len(best)] = [lb for lb, _ in best]
        scores[: len(best)] = [s for _, s in best]
    return labels, scores


def _weights(runs: Sequence[Run], weights: Sequence[float] | None) -> list[float]:
    w = [1.0] * len(runs) if weights is None else [float(x) for x in weights]
    if len(w) != len(runs):
        raise ValueError(f"{len(w)} weights for {len(runs)} runs")
    return w


def rrf(runs: Sequence[Run], k: int, *, weights: Sequence[float] | None = None,
        c: float = RRF_K) -> tuple[np.ndarray, np.ndarray]:
    """Reciprocal-rank fusion of ``runs`` -> ``(labels, scores)`` of shape ``(n_queries, k)``.

    >>> a = (np.array([[1, 2, 3]]), np.array([[9., 8., 7.]], dtype=np.float32))
    >>> b = (np.array([[3, 1, -1]]), np.array([[.9, .5, -np.inf]], dtype=np.float32))
    >>> rrf([a, b], 2)[0].tolist()   # 1: 1/61 + 1/62; 3: 1/63 + 1/61; 2: 1/62
    [[1, 3]]
    """
    n, w = _rows(runs), _weights(runs, weights)
    out_l = np.full((n, k), -1, dtype=np.int64)
    out_s = np.full((n, k), -np.inf, dtype=np.float32)
    for i in range(n):
        acc: dict[int, float] = {}
        for (labels, _), wr in zip(runs, w):
            for rank, label in enumerate(labels[i], start=1):
                if label >= 0:
                    acc[int(label)] = acc.get(int(label), 0.0) + wr / (c + rank)
        out_l[i], out_s[i] = _top(acc, k)
    return out_l, out_s


def minmax(scores: np.ndarray) -> np.ndarray:
    """Per-row min-max normalisation of finite scores to [0, 1]; -inf padding becomes NaN.

    A row whose finite scores are all equal maps them to 1 (one candidate is a perfect match
    of itself, not a worst one).
    """
    s = np.asarray(scores, dtype=np.float64)
    finite = np.isfinite(s)
    lo = np.where(finite, s, np.inf).min(axis=1, keepdims=True)
    hi = np.where(finite, s, -np.inf).max(axis=1, keepdims=True)
    span = hi - lo
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = np.where(span > 0, (s - lo) / np.where(span > 0, span, 1.0), 1.0)
    return np.where(finite, norm, np.nan)


def weighted_fusion(runs: Sequence[Run], k: int, *, weights: Sequence[float] | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Weighted sum of min-max normalised scores -> ``(labels, scores)`` of shape ``(n_queries, k)``.

    >>> a = (np.array([[1, 2, 3]]), np.array([[10., 6., 2.]], dtype=np.float32))   # norm 1, .5, 0
    >>> b = (np.array([[2, 3, -1]]), np.array([[.8, .4, -np.inf]], dtype=np.float32))  # norm 1, 0
    >>> weighted_fusion([a, b], 3, weights=[.5, .5])[1].tolist()   # 2: .25 + .5; 1: .5; 3: 0
    [[0.75, 0.5, 0.0]]
    """
    n, w = _rows(runs), _weights(runs, weights)
    norms = [minmax(scores) for _, scores in runs]
    out_l = np.full((n, k), -1, dtype=np.int64)
    out_s = np.full((n, k), -np.inf, dtype=np.float32)
    for i in range(n):
        acc: dict[int, float] = {}
        for (labels, _), norm, wr in zip(runs, norms, w):
            for label, x in zip(labels[i], norm[i]):
                if label >= 0 and not np.isnan(x):
                    acc[int(label)] = acc.get(int(label), 0.0) + wr * float(x)
        out_l[i], out_s[i] = _top(acc, k)
    return out_l, out_s


def fuse(runs: Sequence[Run], k: int, method: str, *, weights: Sequence[float] | None = None,
         rrf_k: float = RRF_K) -> tuple[np.ndarray, np.ndarray]:
    """Dispatch: ``method`` is "rrf" (constant ``rrf_k``) or "weighted" (see module docstring)."""
    if method == "rrf":
        return rrf(runs, k, weights=weights, c=rrf_k)
    if method == "weighted":
        return weighted_fusion(runs, k, weights=weights)
    raise ValueError(f"unknown fusion method {method!r}; use 'rrf' or 'weighted'")


def as_run(labels: np.ndarray, scores: np.ndarray) -> Run:
    """One query's 1-D ``(labels, scores)`` as a single-row run."""
    return np.atleast_2d(np.asarray(labels, dtype=np.int64)), np.atleast_2d(np.asarray(scores, dtype=np.float32))
