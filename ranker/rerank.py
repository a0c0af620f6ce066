"""The reranking stage: a fine-tuned reranker (cross-encoder or split, ``ranker.model``) over a
list's first candidates, fused with the retrieval score and a popularity prior, then MMR for diversity.

For one candidate list (labels best first, with retrieval scores)::

    final = w_rerank * z(cross-encoder(context, item)) + w_retrieval * z(retrieval)
            + w_popularity * z(log(1 + interactions))            (retriever.fusion, method "z")

over the first ``top_n`` candidates (the rest are dropped), ``z`` a per-list standardisation; then
MMR (``ranker.mmr``, lambda ``mmr_lambda``; 1 keeps the fused order). Without a reranker only MMR
runs, over the retrieval order. Labels are :class:`indexer.store.ItemIndex` labels; nothing here
touches HTTP.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from indexer.results import empty
from indexer.store import ItemIndex
from retriever.fusion import fuse, popularity_prior

from .mmr import mmr
from .model import Reranker

Array = np.ndarray


@dataclass(frozen=True)
class FusionWeights:
    """Weights of the z-scored evidence. Defaults: what Beauty validation picked (reranker v0003)."""

    reranker: float = 1.0
    retrieval: float = 1.0
    popularity: float = 0.5
    normalize: str = "z"  # "z", "rank" or "minmax" (retriever.fusion)


@dataclass(frozen=True)
class RerankConfig:
    """``top_n`` candidates are reranked (the rest dropped); ``weights`` fuse the evidence.
    ``similar`` / ``search``: also rerank similar-item lists and search results."""

    top_n: int = 50
    weights: FusionWeights = field(default_factory=FusionWeights)
    mmr_lambda: float = 0.8
    similar: bool = False
    search: bool = False


def fused_scores(labels: Array, reranker: Array | None, retrieval: Array, counts: Array,
                 weights: FusionWeights, k: int) -> tuple[Array, Array]:
    """The fusion above for one list: ``labels`` (m,) int64 (-1 padding), ``reranker`` / ``retrieval``
    / ``counts`` (m,) aligned with them (``reranker`` None: weight 0) -> ``(labels, scores)``, (k,)."""
    run = np.atleast_2d(labels)
    pop = popularity_prior(np.where(run >= 0, np.arange(run.shape[1]), -1), np.asarray(counts, np.float64))
    runs = [(run, np.atleast_2d(retrieval)), (run, pop)]
    w = [weights.retrieval, weights.popularity]
    if reranker is not None:
        runs.append((run, np.atleast_2d(reranker)))
        w.append(weights.reranker)
    out_l, out_s = fuse(runs, k, weights.normalize, weights=w)
    return out_l[0], out_s[0]


def cross_scores(reranker: Reranker, index: ItemIndex, labels: Array, context: str) -> Array:
    """float32 (m,) reranker scores of ``labels`` (m,) against ``context``; 0 at padding.

    A split reranker attached to ``index`` (``Reranker.attach``) scores from its precomputed item
    states (``score_items``); otherwise the items' texts are read and scored (``score``).
    """
    out = np.zeros(len(labels), dtype=np.float32)
    live = np.flatnonzero(np.asarray(labels) >= 0)
    if not len(live):
        return out
    cand = np.asarray(labels, dtype=np.int64)[live]
    if reranker.attached_to(index):
        try:
            out[live] = reranker.score_items(context, cand)
            return out
        except KeyError:  # an upsert retired a candidate during this request: score its texts, as below
            pass
    with index.lock:  # a retired label keeps its record until labels are renumbered (between requests)
        texts = reranker.texts_for([index.table.records[int(lab)] for lab in cand])
    out[live] = reranker.score(context, texts)
    return out


def feature_positions(labels: Array, fresh: Array | None, top_n: int) -> Array:
    """int64 positions in ``labels`` (m,) (best first) that the reranker scores as a feature of the
    learned ranking: the first ``top_n``, and up to ``top_n`` new items after them (``fresh``: bool
    mask by label, or None), since text is all there is to judge a new item by."""
    picked = np.arange(min(top_n, len(labels)))
    if fresh is None:
        return picked
    new = np.flatnonzero(fresh[labels])
    return np.concatenate([picked, new[new >= top_n][:top_n]])


def rerank_list(index: ItemIndex, labels: Array, retrieval: Array, k: int, *, reranker: Reranker | None,
                context: str, counts: Array, cfg: RerankConfig = RerankConfig()) -> tuple[Array, Array]:
    """One list, reranked and diversified.

    labels: (m,) int64 candidate labels, best first (-1 padding); retrieval: (m,) their scores;
    counts: (m,) interaction counts of the candidates. Returns ``(labels, scores)``, each (k,): the
    fused scores (retrieval scores without a reranker) of the items in their final order.
    """
    n = min(cfg.top_n, len(labels))
    cand = np.asarray(labels[:n], dtype=np.int64)
    relevance = np.where(cand >= 0, np.asarray(retrieval[:n], dtype=np.float32), -np.inf)
    if reranker is not None and (cand >= 0).any():
        cand, relevance = fused_scores(cand, cross_scores(reranker, index, cand, context), relevance,
                                       counts[:n], cfg.weights, n)
    if cfg.mmr_lambda < 1.0 and (cand >= 0).any():
        with index.lock:
            picked, _ = mmr(cand[None], relevance[None], index.vectors.view, min(k, n), cfg.mmr_lambda)
        score_of = dict(zip(cand.tolist(), relevance.tolist()))
        cand = picked[0]
        relevance = np.array([score_of.get(int(lab), -np.inf) for lab in cand], dtype=np.float32)
    out_l, out_s = (a[0] for a in empty(1, k))
    m = min(k, len(cand))
    out_l[:m], out_s[:m] = cand[:m], relevance[:m]
    return out_l, out_s


def query_rerank_hook(reranker: Reranker, index: ItemIndex, weights: FusionWeights = FusionWeights()
                      ) -> Callable[[str, Array, Array], Array]:
    """The search engine's rerank hook (``retriever.search.engine``): ``(query, labels (m,), retrieval
    scores (m,)) -> (m,)`` final scores, the cross-encoder's (query, item text) score fused with the
    retrieval score (popularity is not used: search answers what was asked)."""
    w = FusionWeights(weights.reranker, weights.retrieval, 0.0, weights.normalize)

    def rerank(query: str, labels: Array, scores: Array) -> Array:
        context = reranker.context_for([], query=query)
        fused_l, fused_s = fused_scores(labels, cross_scores(reranker, index, labels, context),
                                        np.asarray(scores, np.float32), np.zeros(len(labels)), w, len(labels))
        score_of = dict(zip(fused_l.tolist(), fused_s.tolist()))
        return np.array([score_of[int(lab)] for lab in labels], dtype=np.float32)

    return rerank


__all__ = ["FusionWeights", "RerankConfig", "cross_scores", "feature_positions", "fused_scores", "query_rerank_hook",
           "rerank_list"]
