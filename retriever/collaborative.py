"""Candidate generators from interaction sequences (and from item vectors), one interface for all.

Every model follows ``Recommender`` (in the spirit of benfred/implicit's ``RecommenderBase``):

    model.fit(sequences, n_items)            sequences: list of int64 item-index arrays, oldest first
    model.score(histories) -> (n, n_items)   float32, higher is better, no masking
    model.recommend(histories, k, exclude_history=True) -> (ids, scores)

Result shape everywhere: ``ids`` (n_queries, k) int64 item indexes, -1 where fewer than k items are
eligible; ``scores`` (n_queries, k) float32, -inf at the padding. Ranking is over ALL items; ties
go to the lower item index, so results are deterministic. A history may be empty: every model
then falls back to training popularity.

Models: ``Popularity``, ``Markov`` (first-order transitions), ``ALS`` and ``BPR`` (thin wrappers
over the ``implicit`` library, CPU), ``VectorRecommender`` (item vectors, e.g. text embeddings).
SASRec lives in ``retriever.sasrec``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Self

import numpy as np
import scipy.sparse as sp

from indexer.results import top_k

from .mf import least_squares_fold_in

Array = np.ndarray
ScoreFn = Callable[[Sequence[Array]], Array]


# ----------------------------------------------------------------------------- ranking helpers
def exclude_items(scores: Array, histories: Sequence[Array]) -> Array:
    """Set ``scores[row, item] = -inf`` for every item in that row's history (in place; returned).

    scores: (n, n_items) float32; histories: n int64 arrays.
    """
    lengths = np.fromiter((len(h) for h in histories), dtype=np.int64, count=len(histories))
    if lengths.sum():
        rows = np.repeat(np.arange(len(histories)), lengths)
        scores[rows, np.concatenate(histories).astype(np.int64)] = -np.inf
    return scores


def target_ranks(scores: Array, targets: Array) -> Array:
    """0-based rank of each row's target under the ``top_k`` order; -1 when the target is at -inf.

    scores: (n, m) float; targets: (n,) int64. Returns (n,) int64.
    """
    n, m = scores.shape
    s_t = scores[np.arange(n), targets][:, None]
    ahead = (scores > s_t).sum(axis=1) + ((scores == s_t) & (np.arange(m) < targets[:, None])).sum(axis=1)
    return np.where(np.isneginf(s_t[:, 0]), -1, ahead).astype(np.int64)


def recommend_batched(
    score_fn: ScoreFn,
    histories: Sequence[Array],
    k: int,
    *,
    exclude_history: bool = True,
    batch_size: int = 1024,
) -> tuple[Array, Array]:
    """Top-k over all items for each history, scoring ``batch_size`` histories at a time."""
    ids, vals = [], []
    for start in range(0, len(histories), batch_size):
        batch = histories[start : start + batch_size]
        s = np.asarray(score_fn(batch), dtype=np.float32)
        if exclude_history:
            exclude_items(s, batch)
        i, v = top_k(s, k)
        ids.append(i)
        vals.append(v)
    if not ids:
        return np.empty((0, k), dtype=np.int64), np.empty((0, k), dtype=np.float32)
    return np.concatenate(ids), np.concatenate(vals)


def history_matrix(
    histories: Sequence[Array], n_items: int, weights: Sequence[Array] | None = None
) -> sp.csr_matrix:
    """(n, n_items) float32 CSR; entry = sum of weights of that item in the history (default 1 each)."""
    lengths = np.fromiter((len(h) for h in histories), dtype=np.int64, count=len(histories))
    rows = np.repeat(np.arange(len(histories)), lengths)
    cols = np.concatenate(histories).astype(np.int64) if lengths.sum() else np.empty(0, np.int64)
    if weights is not None and lengths.sum():
        data = np.concatenate(weights).astype(np.float32)
    else:
        data = np.ones(len(cols), np.float32)
    m = sp.csr_matrix((data, (rows, cols)), shape=(len(histories), n_items), dtype=np.float32)
    m.sum_duplicates()
    return m


def recency_weights(histories: Sequence[Array], decay: float, window: int | None = None) -> list[Array]:
    """Per history, float32 weights ``decay ** age`` (age 0 = most recent); 0 beyond ``window``."""
    out = []
    for h in histories:
        age = np.arange(len(h) - 1, -1, -1, dtype=np.float32)
        w = np.power(np.float32(decay), age)
        if window is not None:
            w[age >= window] = 0.0
        out.append(w.astype(np.float32))
    return out


# ----------------------------------------------------------------------------- interface
class Recommender(ABC):
    """Base class. Subclasses implement ``fit`` (calling ``_fit_popularity``) and ``score``."""

    name: str = "recommender"
    n_items: int = 0
    popularity: Array = np.zeros(0, dtype=np.float32)  # (n_items,) float32 in [0, 1]: count / max count

    @abstractmethod
    def fit(self, sequences: Sequence[Array], n_items: int) -> Self:
        """Learn from ``sequences`` (list of int64 item-index arrays, oldest first)."""

    @abstractmethod
    def score(self, histories: Sequence[Array]) -> Array:
        """(len(histories), n_items) float32 scores; no history masking."""

    def recommend(
        self, histories: Sequence[Array], k: int = 10, exclude_history: bool = True, batch_size: int = 1024
    ) -> tuple[Array, Array]:
        """Top-k item indexes for each history: (ids (n, k) int64, scores (n, k) float32)."""
        return recommend_batched(self.score, histories, k, exclude_history=exclude_history, batch_size=batch_size)

    def _fit_popularity(self, sequences: Sequence[Array], n_items: int) -> None:
        self.n_items = int(n_items)
        counts = np.bincount(np.concatenate(sequences), minlength=n_items) if len(sequences) else np.zeros(n_items)
        self.popularity = (counts / max(counts.max(initial=0), 1)).astype(np.float32)

    def _empty_to_popularity(self, scores: Array, histories: Sequence[Array]) -> Array:
        """Rows whose history is empty get the popularity scores (in place; returned)."""
        empty = np.fromiter((len(h) == 0 for h in histories), dtype=bool, count=len(histories))
        scores[empty] = self.popularity
        return scores


# ----------------------------------------------------------------------------- models
class Popularity(Recommender):
    """Most interacted items in the fit data, the same list for everyone."""

    name = "popularity"

    def fit(self, sequences: Sequence[Array], n_items: int) -> Self:
        self._fit_popularity(sequences, n_items)
        return self

    def score(self, histories: Sequence[Array]) -> Array:
        return np.tile(self.popularity, (len(histories), 1))


class Markov(Recommender):
    """First-order item-to-item transitions from consecutive pairs in the fit sequences.

    ``P[a, b]`` = count(a immediately followed by b) / count(a followed by anything) (with
    ``symmetric=True`` b followed by a counts as well). A history is scored as
    ``sum_j decay**j * P[h[-1-j]]`` over its last ``window`` items, plus ``pop_weight * popularity``,
    which only breaks ties and serves items (or histories) with no known transitions.
    """

    name = "markov"

    def __init__(self, window: int = 3, decay: float = 0.5, symmetric: bool = False, pop_weight: float = 1e-6):
        self.window, self.decay, self.symmetric, self.pop_weight = window, decay, symmetric, pop_weight
        self.transitions = sp.csr_matrix((0, 0), dtype=np.float32)

    def fit(self, sequences: Sequence[Array], n_items: int) -> Self:
        self._fit_popularity(sequences, n_items)
        src = np.concatenate([s[:-1] for s in sequences]) if len(sequences) else np.empty(0, np.int64)
        dst = np.concatenate([s[1:] for s in sequences]) if len(sequences) else np.empty(0, np.int64)
        if self.symmetric:
            src, dst = np.concatenate([src, dst]), np.concatenate([dst, src])
        counts = sp.csr_matrix(
            (np.ones(len(src), np.float32), (src, dst)), shape=(n_items, n_items), dtype=np.float32
        )
        counts.sum_duplicates()
        out = np.asarray(counts.sum(axis=1)).ravel()
        inv = np.divide(1.0, out, out=np.zeros_like(out), where=out > 0).astype(np.float32)
        self.transitions = sp.diags(inv).dot(counts).tocsr().astype(np.float32)
        return self

    def score(self, histories: Sequence[Array]) -> Array:
        w = history_matrix(histories, self.n_items, recency_weights(histories, self.decay, self.window))
        s = np.asarray(w.dot(self.transitions).todense(), dtype=np.float32)
        s += np.float32(self.pop_weight) * self.popularity
        return s


def _user_items(sequences: Sequence[Array], n_items: int) -> sp.csr_matrix:
    """Binary (n_users, n_items) float32 CSR of the fit sequences (repeats count once)."""
    m = history_matrix(sequences, n_items)
    m.data[:] = 1.0
    return m


class ALS(Recommender):
    """implicit's ``AlternatingLeastSquares`` (Hu, Koren & Volinsky 2008) on the binary user-item matrix.

    Histories are folded in with implicit's ``recalculate_user`` (the exact ALS least-squares user
    solve against fixed item factors), so any history can be scored, seen in training or not.
    Defaults: 64 factors, regularization 0.01, alpha 1.0, 15 iterations; seeded by ``seed``.
    """

    name = "als"

    def __init__(
        self, factors: int = 64, regularization: float = 0.01, alpha: float = 1.0, iterations: int = 15,
        seed: int = 0, num_threads: int = 0,
    ):
        from implicit.cpu.als import AlternatingLeastSquares
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1, "blas"):  # implicit warns unless BLAS is single-threaded
            self.model = AlternatingLeastSquares(
                factors=factors, regularization=regularization, alpha=alpha, iterations=iterations,
                random_state=seed, num_threads=num_threads,
            )

    def fit(self, sequences: Sequence[Array], n_items: int) -> Self:
        from threadpoolctl import threadpool_limits

        self._fit_popularity(sequences, n_items)
        with threadpool_limits(1, "blas"):
            self.model.fit(_user_items(sequences, n_items), show_progress=False)
        return self

    def score(self, histories: Sequence[Array]) -> Array:
        h = _user_items(histories, self.n_items)
        users = self.model.recalculate_user(np.arange(len(histories)), h)
        s = (users @ self.model.item_factors.T).astype(np.float32)
        return self._empty_to_popularity(s, histories)


class BPR(Recommender):
    """implicit's ``BayesianPersonalizedRanking`` (Rendle et al. 2009), CPU, single-threaded.

    One thread keeps training deterministic for a given ``seed`` (the multi-threaded SGD is
    hogwild). implicit stores an item bias in the last item-factor column; it is treated as one
    more factor here. BPR has no closed-form user solve, so histories are folded in with
    ``least_squares_fold_in`` against the fixed item factors (on Beauty validation this beat both
    BPR's own trained user factors and the mean of the history's item factors).
    Defaults: 64 factors, lr 0.01, regularization 0.01, 100 iterations.
    """

    name = "bpr"

    def __init__(
        self, factors: int = 64, learning_rate: float = 0.01, regularization: float = 0.01,
        iterations: int = 100, seed: int = 0, num_threads: int = 1, fold_in_alpha: float = 1.0,
        fold_in_reg: float = 0.1,
    ):
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        self.model = BayesianPersonalizedRanking(
            factors=factors, learning_rate=learning_rate, regularization=regularization,
            iterations=iterations, random_state=seed, num_threads=num_threads,
        )
        self.fold_in_alpha, self.fold_in_reg = fold_in_alpha, fold_in_reg
        self._gram: Array | None = None  # V'V of the item factors, cached for fold-in

    def fit(self, sequences: Sequence[Array], n_items: int) -> Self:
        self._fit_popularity(sequences, n_items)
        self.model.fit(_user_items(sequences, n_items), show_progress=False)
        self._gram = None
        return self

    def score(self, histories: Sequence[Array]) -> Array:
        items = np.asarray(self.model.item_factors, dtype=np.float32)
        if self._gram is None:
            self._gram = items.astype(np.float64).T @ items.astype(np.float64)
        users = least_squares_fold_in(
            items, histories, alpha=self.fold_in_alpha, reg=self.fold_in_reg, gram=self._gram
        )
        return self._empty_to_popularity((users @ items.T).astype(np.float32), histories)


# ----------------------------------------------------------------------------- item vectors
def text_scores(histories: Sequence[Array], item_vectors: Array, decay: float = 0.8) -> Array:
    """Zero-shot scores from item vectors (e.g. text embeddings).

    user vector = recency-decayed mean of the history's item vectors (weight ``decay ** age``, age 0
    = most recent), L2-normalised; scores = item_vectors @ user vector (cosine if rows are unit).
    item_vectors: (n_items, d) float32. Returns (len(histories), n_items) float32; empty history -> 0.
    """
    n_items = item_vectors.shape[0]
    w = history_matrix(histories, n_items, recency_weights(histories, decay))
    users = np.asarray(w.dot(item_vectors), dtype=np.float32)
    norm = np.linalg.norm(users, axis=1, keepdims=True)
    users /= np.maximum(norm, 1e-12)
    return (users @ item_vectors.T).astype(np.float32)


class VectorRecommender(Recommender):
    """Recommends from fixed item vectors with ``text_scores``; ``fit`` only learns popularity
    (the fallback for empty histories). ``item_vectors`` rows follow the item index order."""

    name = "text-zero-shot"

    def __init__(self, item_vectors: Array, decay: float = 0.8):
        self.item_vectors = np.ascontiguousarray(item_vectors, dtype=np.float32)
        self.decay = decay
        self.n_items = self.item_vectors.shape[0]
        self.popularity = np.zeros(self.n_items, dtype=np.float32)

    def fit(self, sequences: Sequence[Array], n_items: int) -> Self:
        if n_items != self.n_items:
            raise ValueError(f"item_vectors has {self.n_items} rows but the data has {n_items} items")
        self._fit_popularity(sequences, n_items)
        return self

    def score(self, histories: Sequence[Array]) -> Array:
        return self._empty_to_popularity(text_scores(histories, self.item_vectors, self.decay), histories)
