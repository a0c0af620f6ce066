"""Final score of a reranked list: a weighted sum of normalised evidence.

For each list (row) of candidates::

    final = w_rerank * norm(reranker score) + w_retrieval * norm(retrieval score)
            + w_popularity * norm(log(1 + interaction count))

``norm`` is applied within the row over its real candidates (label >= 0) and is either

* ``"z"`` (default): (x - mean) / std; a constant row gives 0 everywhere, or
* ``"rank"``: 1 for the best candidate down to 0 for the worst, evenly spaced (ties share the
  better rank), which ignores how far apart the raw scores are.

Normalising per row puts three scores of unrelated units (cross-encoder logits, cosine
similarities, counts) on one scale and makes the weights mean "how many standard deviations of
this evidence is one standard deviation of that one worth". The popularity prior uses log counts
because interaction counts are heavy-tailed: one blockbuster should not outweigh everything else.
Padding (label -1) gets -inf. All functions are pure.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Array = np.ndarray


@dataclass(frozen=True)
class FusionWeights:
    """Weights of the normalised components. Defaults: what Beauty validation picked (``ranker.eval``,
    reranker v0003, for both the text and the text+co-visitation candidates)."""

    reranker: float = 1.0
    retrieval: float = 1.0
    popularity: float = 0.5
    normalize: str = "z"  # "z" or "rank"


def zscore(x: Array, valid: Array) -> Array:
    """Row-wise (x - mean) / std over ``valid`` entries; invalid entries and constant rows give 0.

    x: (n, m) float; valid: (n, m) bool. Returns (n, m) float32.
    """
    x = np.where(valid, np.asarray(x, dtype=np.float64), 0.0)
    count = np.maximum(valid.sum(axis=1, keepdims=True), 1)
    mean = x.sum(axis=1, keepdims=True) / count
    dev = np.where(valid, x - mean, 0.0)
    std = np.sqrt((dev ** 2).sum(axis=1, keepdims=True) / count)
    return np.where(std > 0, dev / np.where(std > 0, std, 1.0), 0.0).astype(np.float32)


def rank_normalize(x: Array, valid: Array) -> Array:
    """Row-wise 1 (best) .. 0 (worst) by rank among ``valid`` entries; ties share the better rank.

    A row with one valid entry gives it 1. Invalid entries give 0. x: (n, m); returns (n, m) float32.
    """
    x = np.where(valid, np.asarray(x, dtype=np.float64), -np.inf)
    ahead = (x[:, None, :] > x[:, :, None]).sum(axis=2)  # entries strictly better than each entry
    count = valid.sum(axis=1, keepdims=True)
    out = 1.0 - ahead / np.maximum(count - 1, 1)
    return np.where(valid, out, 0.0).astype(np.float32)


def popularity_prior(labels: Array, counts: Array) -> Array:
    """log(1 + count) of each candidate; padding (-1) gives 0. labels: (n, m) int64; counts: (n_items,)."""
    labels = np.asarray(labels)
    c = np.asarray(counts, dtype=np.float64)[np.maximum(labels, 0)]
    return np.where(labels >= 0, np.log1p(c), 0.0).astype(np.float32)


def fuse(labels: Array, reranker: Array, retrieval: Array, popularity: Array,
         weights: FusionWeights = FusionWeights()) -> Array:
    """Final scores (n, m) float32 of the candidates ``labels`` (n, m); -inf at padding.

    reranker, retrieval, popularity: (n, m) raw component scores aligned with ``labels``
    (use :func:`popularity_prior` for the last).
    """
    valid = np.asarray(labels) >= 0
    if weights.normalize == "z":
        norm = zscore
    elif weights.normalize == "rank":
        norm = rank_normalize
    else:
        raise ValueError(f"normalize must be 'z' or 'rank', not {weights.normalize!r}")
    total = np.zeros(valid.shape, dtype=np.float32)
    for w, comp in ((weights.reranker, reranker), (weights.retrieval, retrieval), (weights.popularity, popularity)):
        if w:
            total += np.float32(w) * norm(comp, valid)
    return np.where(valid, total, -np.inf).astype(np.float32)


def sort_rows(labels: Array, scores: Array, k: int | None = None) -> tuple[Array, Array]:
    """Order each row by score, best first (ties keep the input order); keep the first ``k``.

    Returns ``(labels, scores)``, each (n, k); padding (-1 / -inf) sorts last.
    """
    order = np.argsort(-np.asarray(scores), axis=1, kind="stable")[:, :k]
    out_l = np.take_along_axis(np.asarray(labels), order, 1)
    out_s = np.take_along_axis(np.asarray(scores, dtype=np.float32), order, 1)
    return np.where(np.isneginf(out_s), -1, out_l), out_s


def fused_ranking(labels: Array, reranker: Array, retrieval: Array, counts: Array,
                  weights: FusionWeights = FusionWeights(), k: int | None = None) -> tuple[Array, Array]:
    """:func:`fuse` with the popularity prior from ``counts`` (n_items,), then :func:`sort_rows`."""
    scores = fuse(labels, reranker, retrieval, popularity_prior(labels, counts), weights)
    return sort_rows(labels, scores, k)
