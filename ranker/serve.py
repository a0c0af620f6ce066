"""Serving-time reranking of one candidate list, and a reason for each item.

    labels, scores = rerank_list(index, labels, retrieval, k, reranker=..., context=..., counts=..., cfg=...)
    reasons = list_reasons(index, labels, evidence)

:func:`rerank_list` takes the first ``cfg.top_n`` candidates of a retrieval stage, scores them with
the cross-encoder against the context text (the shopper's recent items, stated interests and/or a
query), fuses reranker, retrieval and popularity (:func:`ranker.fusion.fuse`, the same weights as
offline), and diversifies the fused order with MMR (:func:`ranker.mmr.mmr`, lambda
``cfg.mmr_lambda``; 1 keeps the fused order). Without a reranker only MMR runs, over the retrieval
order. Labels are :class:`indexer.store.ItemIndex` labels; nothing here touches HTTP.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from indexer.store import ItemIndex
from retriever.profiles import Profile

from .explain import Reason, explain_list
from .fusion import FusionWeights, fuse, popularity_prior, sort_rows
from .mmr import mmr
from .model import Reranker

Array = np.ndarray
HISTORY_FOR_REASONS = 20  # most recent history items an explanation may point to


@dataclass(frozen=True)
class RerankConfig:
    """``top_n`` candidates are reranked (the rest dropped); ``weights`` fuse the evidence."""

    top_n: int = 50
    weights: FusionWeights = FusionWeights()
    mmr_lambda: float = 0.8


@dataclass(frozen=True)
class Evidence:
    """What a list is about: history item ids (oldest first), stated interests with their unit
    vectors ``(len(interests), dim)`` float32, and a search query."""

    history: Sequence[str] = ()
    interests: Sequence[str] = ()
    interest_vectors: Array | None = None
    query: str = ""
    sources: Sequence[Sequence[str]] = field(default_factory=list)  # per candidate, for fallback reasons


def context_text(reranker: Reranker, index: ItemIndex, evidence: Evidence) -> str:
    """The reranker's context for ``evidence``, built as in training (newest items first)."""
    records = [r for r in (index.table.get(i) for i in evidence.history) if r is not None]
    return reranker.context_for(records, list(evidence.interests), evidence.query)


def rerank_list(index: ItemIndex, labels: Array, retrieval: Array, k: int, *, reranker: Reranker | None,
                context: str, counts: Array, cfg: RerankConfig = RerankConfig()) -> tuple[Array, Array]:
    """One list, reranked and diversified.

    labels: (m,) int64 candidate labels, best first (-1 padding); retrieval: (m,) float their scores;
    counts: (m,) interaction counts of the candidates (the popularity prior). Returns ``(labels,
    scores)``, each (k,), padded with -1 / -inf; scores are the fused scores (retrieval scores without
    a reranker) of the items in their final order.
    """
    n = min(cfg.top_n, len(labels))
    cand = np.asarray(labels[:n], dtype=np.int64)[None]
    retr = np.where(cand >= 0, np.asarray(retrieval[:n], dtype=np.float32)[None], -np.inf)
    relevance = retr
    if reranker is not None and (cand >= 0).any():
        with index.lock:
            texts = reranker.texts_for([index.table.records[lab] if lab >= 0 else {} for lab in cand[0]])
        rr = np.zeros(cand.shape, dtype=np.float32)
        live = np.flatnonzero(cand[0] >= 0)
        rr[0, live] = reranker.score(context, [texts[i] for i in live])
        # counts come per candidate: index them by column, padding stays -1
        pop = popularity_prior(np.where(cand >= 0, np.arange(n), -1), np.asarray(counts[:n]))
        relevance = fuse(cand, rr, np.where(cand >= 0, retr, 0.0), pop, cfg.weights)
        cand, relevance = sort_rows(cand, relevance)
    if cfg.mmr_lambda < 1.0:
        with index.lock:
            vectors = index.vectors.view
            out_l, _ = mmr(cand, relevance, vectors, min(k, n), cfg.mmr_lambda)
        pos = {int(lab): j for j, lab in enumerate(cand[0])}
        out_s = np.array([relevance[0, pos[int(lab)]] if lab >= 0 else -np.inf for lab in out_l[0]], np.float32)
        cand, relevance = out_l, out_s[None]
    out_l = np.full(k, -1, dtype=np.int64)
    out_s = np.full(k, -np.inf, dtype=np.float32)
    m = min(k, cand.shape[1])
    out_l[:m], out_s[:m] = cand[0, :m], relevance[0, :m]
    return out_l, out_s


def query_rerank_hook(reranker: Reranker, index: ItemIndex, weights: FusionWeights = FusionWeights()
                      ) -> Callable[[str, Array, Array], Array]:
    """The search engine's rerank hook (``retriever.search.engine``): ``(query, labels (m,), retrieval scores
    (m,)) -> (m,)`` final scores, the cross-encoder's (query, item text) score fused with the
    retrieval score (``weights.popularity`` is not used: search answers what was asked)."""
    w = FusionWeights(weights.reranker, weights.retrieval, 0.0, weights.normalize)

    def rerank(query: str, labels: Array, scores: Array) -> Array:
        with index.lock:
            texts = reranker.texts_for([index.table.records[lab] for lab in labels])
        rr = reranker.score(reranker.context_for([], query=query), texts)
        return fuse(labels[None], rr[None], np.asarray(scores, dtype=np.float32)[None], np.zeros((1, len(labels))),
                    w)[0]

    return rerank


def rerank_keeping(index: ItemIndex, labels: Array, retrieval: Array, keep: Array, k: int, *,
                   reranker: Reranker | None, context: str, counts: Array,
                   cfg: RerankConfig = RerankConfig()) -> tuple[Array, Array]:
    """:func:`rerank_list` over the candidates not marked in ``keep`` (m,) bool; the marked ones (an
    exploration slot for a new item) follow at the end of the ``k`` in their own order."""
    keep = np.asarray(keep, dtype=bool) & (np.asarray(labels) >= 0)
    kept = np.flatnonzero(keep)[:k]
    head, head_s = rerank_list(index, labels[~keep], retrieval[~keep], k - len(kept), reranker=reranker,
                               context=context, counts=np.asarray(counts)[~keep], cfg=cfg)
    live = head >= 0
    out_l = np.full(k, -1, dtype=np.int64)
    out_s = np.full(k, -np.inf, dtype=np.float32)
    n = int(live.sum())
    out_l[:n], out_s[:n] = head[live], head_s[live]
    out_l[n:n + len(kept)], out_s[n:n + len(kept)] = labels[kept], retrieval[kept]
    return out_l, out_s


def evidence_of(profile: Profile) -> Evidence:
    """What a profile rests on (history, stated interests with their vectors), for contexts and reasons."""
    stated = profile.evidence.get("stated", [])
    return Evidence(history=profile.history, interests=[t for t, _ in stated],
                    interest_vectors=np.array([v for _, v in stated], dtype=np.float32) if stated else None)


def list_reasons(index: ItemIndex, labels: Array, evidence: Evidence, min_similarity: float = 0.35) -> list[Reason]:
    """A reason per live label of ``labels`` (k,) (:func:`ranker.explain.explain`); when no evidence
    fits, the candidate's source says it ("popular with shoppers now", "new in the catalog")."""
    labels = [int(lab) for lab in labels if lab >= 0]
    if not labels:
        return []
    with index.lock:
        vectors = index.vectors.view[labels].copy()
        recent = [i for i in evidence.history if i in index.table.label_of][::-1][:HISTORY_FOR_REASONS]
        hist_vecs = index.vectors.view[index.table.labels(recent)].copy() if recent else None
        hist_titles = [index.table.get(i)["title"] for i in recent]
        records = [index.table.records[lab] for lab in labels]
        reviews = [index.reviews.get(r["item_id"], []) for r in records]
    context = " ".join([evidence.query, *evidence.interests, *hist_titles[:5]])
    out = explain_list(vectors, history_vectors=hist_vecs, history_titles=hist_titles,
                       interest_vectors=evidence.interest_vectors, interests=list(evidence.interests),
                       reviews=reviews, context=context, min_similarity=min_similarity)
    sources = list(evidence.sources) + [[]] * (len(out) - len(evidence.sources))
    return [r if r.kind != "none" else _from_sources(src) for r, src in zip(out, sources)]


def _from_sources(sources: Sequence[str]) -> Reason:
    if "new" in sources:
        return Reason("new", "new in the catalog", "", 0.0)
    if "trending" in sources or "popular" in sources:
        return Reason("popular", "popular with shoppers now", "", 0.0)
    return Reason("none", "", "", 0.0)


__all__ = ["Evidence", "RerankConfig", "context_text", "evidence_of", "list_reasons", "query_rerank_hook",
           "rerank_keeping", "rerank_list"]
