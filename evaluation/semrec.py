"""semrec's own pipeline as harness systems: candidates -> fusion with the reranker -> MMR.

The offline twin of the service's recommendation path, over item indexes instead of item ids:

1. **retrieval**: the text retriever's top ``top_n`` (user vector = recency-decayed mean of the
   history's item vectors, ``retriever.collaborative.text_scores``), history excluded;
2. **+ collaborative candidates**: reciprocal-rank fusion (``1 / (rrf_k + rank)``, equal weights)
   of the text, co-visitation (Markov) and ALS top ``top_n`` lists, cut to ``top_n``;
3. **+ reranker**: the cross-encoder scores every candidate against the history's text; the final
   score is :func:`ranker.fusion.fuse` of reranker, retrieval (RRF) and popularity, with weights
   picked on the validation stage from a small grid (never on test);
4. **+ MMR**: :func:`ranker.mmr.mmr` over the fused scores and the item vectors, lambda ``mmr_lambda``.

Every system ranks only its ``top_n`` candidates: other items score -inf (a target outside the
candidates is a miss), and history items are never candidates, so "history included" equals
"excluded" for these systems.

Reranker CPU time: a list that does not contain the target scores 0 on every accuracy metric
whatever its order, so with ``targets`` given (``score(histories, targets)``) only lists that
contain the target are reranked; the others keep the order of the fusion without the reranker
(reranker weight 0). Accuracy metrics are exactly those of reranking every list; beyond-accuracy
metrics (coverage, novelty, diversity, popular share) of the reranked systems are then those of a
mix of both orders. ``rerank_all=True`` reranks every list (slower; exact on every metric).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Self

import numpy as np

from indexer.vectors import top_k
from ranker.fusion import FusionWeights, fuse, popularity_prior, sort_rows
from ranker.mmr import mmr
from ranker.model import Reranker
from ranker.pairs import history_context, popularity_counts
from retriever.collaborative import ALS, Markov, Recommender, exclude_items, text_scores

Array = np.ndarray
WEIGHT_GRID = {"retrieval": (0.25, 0.5, 1.0), "popularity": (0.0, 0.25, 0.5)}
VALID_USERS = 2000  # validation users that pick the fusion weights


@dataclass(frozen=True)
class PipelineConfig:
    """Which stages run. ``collaborative`` adds Markov + ALS candidates; ``rerank`` needs a reranker."""

    collaborative: bool = False
    rerank: bool = False
    mmr_lambda: float | None = None  # None: no MMR
    top_n: int = 50
    rrf_k: float = 60.0
    rerank_all: bool = False
    explore_slots: int = 0  # last slots of the top 10 kept for the best text match with no interactions
    explore_min_cosine: float = 0.35


class RerankScores:
    """Reranker scores of (history, item) pairs, computed once and shared between systems.

    ``full_texts`` / ``short_texts``: per item index, the candidate text and the short text used in
    contexts (``ranker.pairs.texts_by_index``).
    """

    def __init__(self, reranker: Reranker, full_texts: Sequence[str], short_texts: Sequence[str]):
        self.reranker, self.full, self.short = reranker, list(full_texts), list(short_texts)
        self.cache: dict[tuple[str, int], float] = {}
        self.pairs = 0

    def context(self, history: Array) -> str:
        return history_context(history, self.short, self.reranker.history_items)

    def scores(self, histories: Sequence[Array], labels: Array, rows: Array) -> Array:
        """(n, m) float32 scores of ``labels`` (n, m) for ``rows``; other rows and padding 0."""
        ctx = {int(r): self.context(histories[r]) for r in rows}
        todo = sorted({(ctx[int(r)], int(i)) for r in rows for i in labels[r] if i >= 0} - self.cache.keys())
        if todo:
            s = self.reranker.score_many([c for c, _ in todo], [self.full[i] for _, i in todo])
            self.cache.update(zip(todo, s.tolist()))
            self.pairs += len(todo)
        out = np.zeros(labels.shape, dtype=np.float32)
        for r in rows:
            out[r] = [self.cache[(ctx[int(r)], int(i))] if i >= 0 else 0.0 for i in labels[r]]
        return out


class SemrecPipeline(Recommender):
    """semrec's candidates, fusion, reranker and MMR as a harness ``Recommender`` (module docstring).

    item_vectors: (n_items, d) float32 unit rows in item-index order; rerank: needed when
    ``cfg.rerank``. ``score(histories, targets=None)`` -> (n, n_items) float32, -inf outside the list.
    """

    def __init__(self, item_vectors: Array, cfg: PipelineConfig = PipelineConfig(),
                 rerank: RerankScores | None = None, name: str = "semrec", seed: int = 0, quick: bool = False):
        if cfg.rerank and rerank is None:
            raise ValueError(f"{name!r} reranks: give it a reranker (--ranker)")
        self.item_vectors = np.ascontiguousarray(item_vectors, dtype=np.float32)
        self.cfg, self.rerank, self.name, self.seed = cfg, rerank, name, seed
        self.n_items = self.item_vectors.shape[0]
        self.markov = Markov(window=10, decay=0.8, symmetric=True) if cfg.collaborative else None
        factors, iterations = (32, 10) if quick else (64, 15)  # the harness's ALS settings
        self.als = ALS(factors=factors, iterations=iterations, alpha=10.0, seed=seed) if cfg.collaborative else None
        self.weights = FusionWeights(reranker=1.0 if cfg.rerank else 0.0)
        self.counts = np.zeros(self.n_items, dtype=np.float32)

    def fit(self, sequences: Sequence[Array], n_items: int, valid_history: Sequence[Array] | None = None,
            valid_target: Array | None = None) -> Self:
        if n_items != self.n_items:
            raise ValueError(f"item_vectors has {self.n_items} rows but the data has {n_items} items")
        self._fit_popularity(sequences, n_items)
        self.counts = popularity_counts(sequences, n_items)
        for model in (self.markov, self.als):
            if model is not None:
                model.fit(sequences, n_items)
        if self.cfg.rerank and valid_history is not None and valid_target is not None:
            self.weights = self.pick_weights(valid_history, valid_target)
        return self

    def text(self, histories: Sequence[Array]) -> Array:
        """(n, n_items) text retrieval scores, history excluded."""
        return exclude_items(text_scores(histories, self.item_vectors), histories)

    def candidates(self, histories: Sequence[Array], text: Array | None = None) -> tuple[Array, Array]:
        """(labels, retrieval scores), each (n, top_n): text top-N, or the RRF union with Markov + ALS.
        ``text``: :meth:`text` of ``histories`` when already computed."""
        n = self.cfg.top_n
        text = self.text(histories) if text is None else text
        if not self.cfg.collaborative:
            return top_k(text, n)
        acc = np.zeros((len(histories), self.n_items), dtype=np.float32)
        rows = np.arange(len(histories))[:, None]
        rank_gain = (1.0 / (self.cfg.rrf_k + np.arange(1, n + 1))).astype(np.float32)
        for scores in (text, exclude_items(self.markov.score(histories), histories),
                       exclude_items(self.als.score(histories), histories)):
            ids = top_k(scores, n)[0]
            np.add.at(acc, (np.broadcast_to(rows, ids.shape)[ids >= 0], ids[ids >= 0]),
                      np.broadcast_to(rank_gain, ids.shape)[ids >= 0])
        acc[acc == 0] = -np.inf
        return top_k(acc, n)

    def order(self, histories: Sequence[Array], targets: Array | None = None) -> Array:
        """(n, top_n) int64 final lists (-1 padding)."""
        text = self.text(histories)
        labels, retrieval = self.candidates(histories, text)
        if not self.cfg.rerank:
            final = labels
            relevance = np.where(labels >= 0, retrieval, -np.inf)
        else:
            w = self.weights
            rows = np.arange(len(histories))
            if targets is not None and not self.cfg.rerank_all:
                rows = np.flatnonzero((labels == np.asarray(targets)[:, None]).any(axis=1))
            rr = self.rerank.scores(histories, labels, rows)
            pop = popularity_prior(labels, self.counts)
            relevance = fuse(labels, rr, retrieval, pop, w)
            without = fuse(labels, rr, retrieval, pop, FusionWeights(0.0, w.retrieval, w.popularity, w.normalize))
            reranked = np.isin(np.arange(len(histories)), rows)[:, None]
            relevance = np.where(reranked, relevance, without)
            final, relevance = sort_rows(labels, relevance)
        if self.cfg.mmr_lambda is not None:
            final = mmr(final, relevance, self.item_vectors, self.cfg.top_n, self.cfg.mmr_lambda)[0]
        if self.cfg.explore_slots:
            final = self.explore(text, final)
        return final

    def explore(self, text: Array, final: Array, slots_from: int = 10) -> Array:
        """The service's exploration slot, offline: the ``explore_slots`` text neighbours (cosine >=
        ``explore_min_cosine``) that no one interacted with in training take the last places of the
        top ``slots_from``, so a new item reaches the shoppers it suits (``retriever.recommend``).
        ``text``: :meth:`text` scores of the lists' histories (overwritten)."""
        n = self.cfg.explore_slots
        text[:, self.counts > 0] = -np.inf
        text[text < self.cfg.explore_min_cosine] = -np.inf
        new, _ = top_k(text, n)
        out = final.copy()
        for r in range(len(final)):
            picks = [i for i in new[r] if i >= 0]
            rest = [i for i in final[r] if i >= 0 and i not in picks]
            head = rest[: slots_from - len(picks)]
            row = head + [i for i in picks if i not in head] + rest[len(head):]
            out[r] = (row + [-1] * final.shape[1])[: final.shape[1]]
        return out

    def score(self, histories: Sequence[Array], targets: Array | None = None) -> Array:
        final = self.order(histories, targets)
        out = np.full((len(histories), self.n_items), -np.inf, dtype=np.float32)
        pos = np.broadcast_to(np.arange(final.shape[1], 0, -1, dtype=np.float32), final.shape)
        keep = final >= 0
        out[np.nonzero(keep)[0], final[keep]] = pos[keep]
        return out

    def pick_weights(self, histories: Sequence[Array], targets: Array) -> FusionWeights:
        """The grid point with the best validation NDCG@10 (reranker weight 1), on a seeded sample."""
        rng = np.random.default_rng([self.seed, 61])
        pick = np.sort(rng.choice(len(histories), size=min(VALID_USERS, len(histories)), replace=False))
        hist = [histories[i] for i in pick]
        t = np.asarray(targets)[pick]
        labels, retrieval = self.candidates(hist)
        rows = np.flatnonzero((labels == t[:, None]).any(axis=1))
        if not len(rows):
            return self.weights
        labels, retrieval, t = labels[rows], retrieval[rows], t[rows]
        rr = self.rerank.scores([hist[r] for r in rows], labels, np.arange(len(rows)))
        pop = popularity_prior(labels, self.counts)

        def ndcg(w: FusionWeights) -> float:
            ranked = sort_rows(labels, fuse(labels, rr, retrieval, pop, w))[0]
            hit = ranked[:, :10] == t[:, None]
            pos = hit.argmax(axis=1)
            return float(np.where(hit.any(axis=1), 1.0 / np.log2(pos + 2.0), 0.0).sum())

        grid = [FusionWeights(1.0, r, p) for r, p in itertools.product(*WEIGHT_GRID.values())]
        return max(grid, key=ndcg)  # first of equals: the grid order is the tie-break
