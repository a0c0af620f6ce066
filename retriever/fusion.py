"""Fusing ranked lists from several sources into one: the one ``fuse``, plain functions.

Used by search (BM25 + dense), by personal recommendations (candidate sources) and by the
reranking stage (cross-encoder + retrieval + popularity over the same candidates).

Every run is a ``(labels, scores)`` pair of shape ``(n_queries, depth)`` (int64 labels, -1 padding;
float32 scores, -inf padding). Every function returns the same shape with ``k`` columns, best
first (``indexer.results``). Ties are broken by the lower label, so results are deterministic.

- :func:`rrf`: reciprocal-rank fusion (Cormack, Clarke & Büttcher, SIGIR 2009):
  ``score(d) = sum_r w_r / (RRF_K + rank_r(d))``, rank 1-based, a run missing ``d`` adds nothing.
  Scale-free: it needs no calibration between BM25 (unbounded) and cosine ([-1, 1]).
- :func:`weighted_fusion`: each run's scores normalised per query over its retrieved candidates,
  then ``score(d) = sum_r w_r * norm_r(d)``, a run missing ``d`` adds 0. Normalisers: ``minmax``
  (best -> 1, worst -> 0; all equal -> 1: "relative score fusion", keeps how *much* better the top
  hit is), ``z`` ((x - mean) / std; a constant run gives 0: puts cross-encoder logits, cosines and
  log counts on one scale, so a weight reads "how many standard deviations of this evidence is one
  of that one worth"), ``rank`` (1 for the best down to 0 for the worst, ties share the better rank).

Which is the default where is decided by measurement: search in ``retriever.search.engine.SearchConfig``
(``evaluation/search_eval.py``), recommendations in ``ranker.pipeline``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from indexer.results import empty

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
    labels, scores = empty(1, k)
    best = sorted(acc.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
    if best:
        labels[0, : len(best)] = [lb for lb, _ in best]
        scores[0, : len(best)] = [s for _, s in best]
    return labels[0], scores[0]


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
    out_l, out_s = empty(n, k)
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


def zscore(scores: np.ndarray) -> np.ndarray:
    """Per-row (x - mean) / std over finite scores; a constant row gives 0; -inf padding becomes NaN."""
    s = np.asarray(scores, dtype=np.float64)
    finite = np.isfinite(s)
    count = np.maximum(finite.sum(axis=1, keepdims=True), 1)
    mean = np.where(finite, s, 0.0).sum(axis=1, keepdims=True) / count
    dev = np.where(finite, s - mean, 0.0)
    std = np.sqrt((dev ** 2).sum(axis=1, keepdims=True) / count)
    return np.where(finite, np.where(std > 0, dev / np.where(std > 0, std, 1.0), 0.0), np.nan)


def rank_normalize(scores: np.ndarray) -> np.ndarray:
    """Per-row 1 (best) .. 0 (worst) by rank among finite scores, ties sharing the better rank; a row
    with one finite score gives it 1; -inf padding becomes NaN."""
    s = np.asarray(scores, dtype=np.float64)
    finite = np.isfinite(s)
    x = np.where(finite, s, -np.inf)
    ahead = (x[:, None, :] > x[:, :, None]).sum(axis=2)  # entries strictly better than each entry
    count = finite.sum(axis=1, keepdims=True)
    return np.where(finite, 1.0 - ahead / np.maximum(count - 1, 1), np.nan)


NORMALIZERS: dict[str, Callable[[np.ndarray], np.ndarray]] = {"minmax": minmax, "z": zscore,
                                                               "rank": rank_normalize}


def weighted_fusion(runs: Sequence[Run], k: int, *, weights: Sequence[float] | None = None,
                    normalize: str = "minmax") -> tuple[np.ndarray, np.ndarray]:
    """Weighted sum of per-run normalised scores -> ``(labels, scores)`` of shape ``(n_queries, k)``.

    >>> a = (np.array([[1, 2, 3]]), np.array([[10., 6., 2.]], dtype=np.float32))   # norm 1, .5, 0
    >>> b = (np.array([[2, 3, -1]]), np.array([[.8, .4, -np.inf]], dtype=np.float32))  # norm 1, 0
    >>> weighted_fusion([a, b], 3, weights=[.5, .5])[1].tolist()   # 2: .25 + .5; 1: .5; 3: 0
    [[0.75, 0.5, 0.0]]
    """
    if normalize not in NORMALIZERS:
        raise ValueError(f"unknown normalisation {normalize!r}; use one of {sorted(NORMALIZERS)}")
    n, w = _rows(runs), _weights(runs, weights)
    norms = [NORMALIZERS[normalize](np.where(np.asarray(labels) >= 0, scores, -np.inf)) for labels, scores in runs]
    out_l, out_s = empty(n, k)
    for i in range(n):
        acc: dict[int, float] = {}
        for (labels, _), norm, wr in zip(runs, norms, w):
            for label, x in zip(labels[i], norm[i]):
                if label >= 0 and not np.isnan(x):
                    acc[int(label)] = acc.get(int(label), 0.0) + wr * float(x)
        out_l[i], out_s[i] = _top(acc, k)
    return out_l, out_s


def fuse(runs: Sequence[Run], k: int, method: str = "rrf", *, weights: Sequence[float] | None = None,
         rrf_k: float = RRF_K) -> tuple[np.ndarray, np.ndarray]:
    """The one fusion entry point. ``method``: "rrf" (constant ``rrf_k``), or a normaliser for the
    weighted sum: "weighted" / "minmax", "z", "rank" (see the module docstring). A run with weight
    0 takes no part (its items are not candidates through it)."""
    w = _weights(runs, weights)
    live = [i for i, x in enumerate(w) if x > 0]
    if not live:
        return empty(_rows(runs), k)
    runs, w = [runs[i] for i in live], [w[i] for i in live]
    if method == "rrf":
        return rrf(runs, k, weights=w, c=rrf_k)
    norm = "minmax" if method == "weighted" else method
    if norm in NORMALIZERS:
        return weighted_fusion(runs, k, weights=w, normalize=norm)
    raise ValueError(f"unknown fusion method {method!r}; use 'rrf', 'weighted', 'z' or 'rank'")


def popularity_prior(labels: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """log(1 + count) per label: the popularity evidence (interaction counts are heavy-tailed: one
    blockbuster must not outweigh everything else). labels (n, m) int64 with -1 padding (-> -inf);
    counts (n_labels,)."""
    labels = np.asarray(labels)
    c = np.asarray(counts, dtype=np.float64)[np.maximum(labels, 0)]
    return np.where(labels >= 0, np.log1p(c), -np.inf).astype(np.float32)


def boost(labels: np.ndarray, scores: np.ndarray, extra: dict[int, float], weight: float):
    """``(labels, scores)`` of one run (int64 / float ``(m,)``, -1 padding dropped), re-sorted by
    max-normalised score + ``weight`` x each label's ``extra`` over the largest (e.g. search-log
    clicks). Only labels in the run gain: an item it lacks may not match the query's filters."""
    live = labels >= 0
    labels, scores = labels[live], scores[live].astype(np.float64)
    c = np.array([extra.get(int(lb), 0.0) for lb in labels], dtype=np.float64)
    if not len(labels) or c.max() <= 0:
        return labels, scores
    scores = scores / max(scores.max(), 1e-12) + weight * c / c.max()
    order = np.argsort(-scores, kind="stable")
    return labels[order], scores[order]


def as_run(labels: np.ndarray, scores: np.ndarray) -> Run:
    """One query's 1-D ``(labels, scores)`` as a single-row run."""
    return np.atleast_2d(np.asarray(labels, dtype=np.int64)), np.atleast_2d(np.asarray(scores, dtype=np.float32))
