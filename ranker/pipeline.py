"""The one pipeline per use. The HTTP routes, the CLI and the evaluation harness call these and
nothing else, so what is measured is what is served.

    recommend_users(svc, cfg, user_ids, k)            personal recommendations
    recommend_session(svc, cfg, recent_items, text, k) an anonymous session, from inline context
    similar(svc, cfg, item_id, k)                     similar items (a product page)
    search(svc, cfg, query, k)                        the search box: the query parsed into filters and
                                                      boosts (retriever.search.parse), then the engine

A personal list, step by step (``cfg`` decides each step; ablations are configs, not code paths):

1. profile: the shopper's latest events and onboarding answers -> interest vectors (``retriever.personal``);
2. candidates: dense per interest, co-visitation, popular, trending (``retriever.candidates``), and
   with learned parts loaded (``ranker.artifacts``, ``semrec train``) MF with a per-request fold-in
   of the latest events (``retriever.mf``), EASE item-item weights summed over the history
   (``retriever.ease``) and the text-aware history encoder (``retriever.encoder``);
   each restricted to live items passing the filters (in stock, by default), without what the
   shopper already bought;
3. fusion: weighted reciprocal rank over the sources (``retriever.fusion``); with a learned ranking
   loaded (``ranker.ltr``) and a shopper with a history, its LambdaRank score over the candidates'
   features (``ranker.features``) orders them instead;
4. reranking (``cfg.use_reranker`` and a loaded reranker): the reranker's score of the first
   candidates is a feature of the learned ranking (step 3 ranks once), or else fused with retrieval
   and popularity (``ranker.rerank``); then MMR (also without a reranker, over the order so far);
5. exploration: when the list shows fewer than ``explore_slots`` new items (no interactions yet),
   the best new items close to an interest take its last places; a new item the ranking placed
   higher keeps its place;
6. reasons (``ranker.reasons``);
7. merchandising rules of the placement (``ranker.rules``): pins, boosts, buries, blocks. Every
   pipeline function ends with this step.

A shopper with nothing known (no history, no onboarding) gets the popular list spread over
top-level categories. Every function returns the one result shape (``indexer.results``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from indexer.results import empty, top_labels
from indexer.table import Filters
from retriever.aspects import Aspect
from retriever.aspects import item_aspects as review_aspects
from retriever.candidates import CandidateConfig, allowed_mask, gather, new_item_mask
from retriever.fusion import as_run, fuse
from retriever.personal import session_profile, user_profile
from retriever.profiles import Profile, ProfileConfig
from retriever.search import SearchResult
from retriever.search.evidence import Evidence as SearchEvidence
from retriever.search.expand import ExpandResult
from retriever.search.expansion import Expansion
from retriever.similar import similar_items

from .assembly import by_contribution, cold_list, explore_slots, out_explored
from .explain import Reason
from .features import NAMES, candidate_features
from .reasons import Evidence, context_text, evidence_of, list_reasons
from .rerank import RerankConfig, cross_scores, feature_positions, rerank_list
from .rules import Ranked, apply_to, carry, depths, enough, live_rules
from .services import Services
from .sources import user_queries

FEATURED = Reason("featured", "featured by the shop", "", 0.0)  # a pinned item the ranking did not choose


@dataclass(frozen=True)
class PipelineConfig:
    """Everything that decides a list. The service's defaults are these defaults (``api.settings``
    builds one from its settings; a test holds them equal)."""

    profile: ProfileConfig = field(default_factory=ProfileConfig)
    candidates: CandidateConfig = field(default_factory=CandidateConfig)
    rerank: RerankConfig = field(default_factory=RerankConfig)
    use_reranker: bool = True      # the A/B switch: False skips the reranking stage (fusion + MMR)
    learned_ranking: bool = True   # rank candidates with the learned model (``ranker.ltr``) when one is loaded
    exclude_purchased: bool = True  # leave out what the shopper bought or rated
    in_stock_only: bool = True     # personal feeds leave out-of-stock items out (unless a request filters on stock)
    merchandising: bool = True     # apply the merchandising rules (``ranker.rules``); an A/B variant may hold out
    # changes to the search box's SearchConfig, as (field, value) pairs (an A/B variant's search settings)
    search: tuple[tuple[str, float | bool], ...] = ()
    # The A/B variant served: rules naming variants apply in theirs only. A label, not a setting: two
    # configs that rank alike are equal whatever variant serves them (the harness runs no variant).
    variant: str = field(default="", compare=False)


@dataclass
class Recommendations:
    """``labels`` int64 / ``scores`` float32 ``(n, k)``; per row and live slot its candidate
    ``sources`` (strongest first), ``reasons`` and the ids of the merchandising ``rules`` applied;
    per row the ``stages`` that ran, in order, and how many last places the exploration filled."""

    labels: np.ndarray
    scores: np.ndarray
    sources: list[list[list[str]]]
    reasons: list[list[Reason]]
    stages: list[tuple[str, ...]]
    rules: list[list[list[int]]] = field(default_factory=list)
    explored: list[int] = field(default_factory=list)


@dataclass
class _Row:
    labels: np.ndarray
    scores: np.ndarray
    sources: list[list[str]]
    stages: tuple[str, ...]
    explored: int = 0


def recommend_users(svc: Services, cfg: PipelineConfig, user_ids: Sequence[str], k: int,
                    filters: Filters | None = None, *, now: float | None = None,
                    exclude_purchased: bool | None = None, reasons: bool = True) -> Recommendations:
    """Personal lists for stored shoppers (their events and onboarding answers as of ``now``).
    An unknown shopper is a cold start, never an error. ``reasons=False`` skips the reasons."""
    if svc.events is None:
        raise ValueError("personal recommendations need an event store")
    now = time.time() if now is None else now
    drop = cfg.exclude_purchased if exclude_purchased is None else exclude_purchased
    profiles = [user_profile(svc.events, svc.index, svc.embedder, u, cfg.profile, now) for u in user_ids]
    filters = stock_filter(cfg, filters)
    excludes = [p.purchased if drop else frozenset() for p in profiles]
    rules = live_rules(svc.rules, "home", cfg.variant, cfg.merchandising, now)
    for depth in depths(rules, k):
        recs = rank_profiles(svc, cfg, profiles, depth, filters, excludes, now, reasons)
        out = merchandise(svc, cfg, recs, rules, k, filters, excludes)
        if all(enough(a, k, b, depth) for a, b in zip(out.labels, recs.labels)):
            break
    return out


def recommend_session(svc: Services, cfg: PipelineConfig, recent_items: Sequence[str], text: str, k: int,
                      filters: Filters | None = None) -> Recommendations:
    """An anonymous session's list from its recent items (oldest first) and free text; the recent
    items themselves are left out. Unknown item ids are a KeyError (validate first)."""
    profile = session_profile(svc.index, svc.embedder, list(recent_items), text, cfg.profile)
    filters, excludes = stock_filter(cfg, filters), [frozenset(recent_items)]
    rules = live_rules(svc.rules, "home", cfg.variant, cfg.merchandising, time.time())
    for depth in depths(rules, k):
        recs = rank_profiles(svc, cfg, [profile], depth, filters, excludes)
        out = merchandise(svc, cfg, recs, rules, k, filters, excludes)
        if enough(out.labels[0], k, recs.labels[0], depth):
            break
    return out


def stock_filter(cfg: PipelineConfig, filters: Filters | None) -> Filters | None:
    """``filters`` with ``in_stock=True`` when ``cfg.in_stock_only`` and the request says nothing about stock."""
    if not cfg.in_stock_only or (filters is not None and filters.in_stock is not None):
        return filters
    return replace(filters or Filters(), in_stock=True)


def merchandise(svc: Services, cfg: PipelineConfig, recs: Recommendations, rules: list, k: int,
                filters: Filters | None, excludes: Sequence[frozenset[str]]) -> Recommendations:
    """Step 7 for personal lists: ``rules`` (``ranker.rules``) on each row of ``recs`` (ranked
    ``2k`` deep when a rule may remove or lift items), cut to ``k``. The exploration slots stay
    last; a pinned item keeps its sources and reason when the ranking had it, else it is "featured"."""
    n = len(recs.labels)
    if not rules:
        return replace(recs, rules=[[[] for _ in src] for src in recs.sources])
    labels, scores = empty(n, k)
    sources, why, applied, stages = [], [], [], []
    for i in range(n):
        live = recs.labels[i][recs.labels[i] >= 0]
        tail = min(recs.explored[i], len(live)) if recs.explored else 0  # the exploration's places
        head = len(live) - tail
        allowed = allowed_mask(svc.index, filters, excludes[i])
        ranked = apply_to(svc.index, live[:head], recs.scores[i][:head], rules, max(k - tail, 0), allowed)
        kept = np.array(ranked.labels[ranked.labels >= 0].tolist() + live[head:].tolist(), dtype=np.int64)
        labels[i, :len(kept)] = kept
        scores[i, :len(kept)] = np.concatenate([ranked.scores[: len(kept) - tail], recs.scores[i][head:len(live)]])
        sources.append(carry(live, kept, recs.sources[i], ["pinned"]))
        why.append(carry(live, kept, recs.reasons[i], FEATURED) if recs.reasons[i] else [])
        applied.append(ranked.rules + [[] for _ in range(tail)])
        stages.append(recs.stages[i] + (("rules",) if any(ranked.rules) else ()))
    return Recommendations(labels, scores, sources, why, stages, applied, list(recs.explored))


def rank_profiles(svc: Services, cfg: PipelineConfig, profiles: Sequence[Profile], k: int,
                  filters: Filters | None, excludes: Sequence[frozenset[str]], now: float | None = None,
                  reasons: bool = True) -> Recommendations:
    """Steps 2-6 of the module docstring for each profile (``reasons=False`` skips step 6, which
    changes no ranking: the harness does not read reasons)."""
    labels, scores = empty(len(profiles), k)
    sources, why, stages, explored = [], [], [], []
    queries = user_queries(svc, cfg.candidates, profiles)
    for i, (profile, exclude) in enumerate(zip(profiles, excludes)):
        row = _rank_one(svc, cfg, profile, k, filters, exclude, now, queries[i])
        labels[i], scores[i] = row.labels, row.scores
        sources.append(row.sources)
        why.append(list_reasons(svc.index, row.labels, evidence_of(profile), row.sources, svc.state) if reasons else [])
        stages.append(row.stages)
        explored.append(row.explored)
    return Recommendations(labels, scores, sources, why, stages, explored=explored)


@dataclass
class _Candidates:
    """One shopper's candidate stage: ``labels`` (m,) best first by ``scores`` (the fusion of the
    sources, or once ordered the learned ranking's), the sources' ``runs``, the ``fresh`` mask;
    ``learned``: the learned ranking orders them (:func:`learned_order`)."""

    labels: np.ndarray
    scores: np.ndarray
    runs: dict[str, tuple[np.ndarray, np.ndarray]]
    fresh: np.ndarray | None
    allowed: np.ndarray
    learned: bool = False


def candidates_for(svc: Services, cfg: PipelineConfig, profile: Profile, filters: Filters | None,
                   exclude: frozenset[str], now: float | None, queries: dict[str, np.ndarray],
                   features: bool = False) -> tuple[_Candidates, np.ndarray | None]:
    """Every source's run, fused, with the candidates' feature rows (``ranker.features``, the
    reranker column still NaN) when the learned ranking will order them or ``features`` (training
    reads them). Callers hold the locks; the reranker and the learned model run after them
    (:func:`rerank_feature`, :func:`learned_order`), so requests score in parallel."""
    index, state, c = svc.index, svc.state, cfg.candidates
    allowed = allowed_mask(index, filters, exclude)
    runs = gather(index, state, profile, c, allowed)
    for name, query in queries.items():
        runs[name] = getattr(svc, name).candidates(index, query, c.per_source, allowed)  # svc.mf / encoder / ease
    weights = c.weights()
    labels, scores = (a[0] for a in empty(1, 0))
    if runs:
        union = len(set(np.concatenate([r[0] for r in runs.values()]).tolist()))
        labels, scores = fuse([as_run(*run) for run in runs.values()], max(union, 1), "rrf",
                              weights=[weights[name] for name in runs], rrf_k=c.rrf_k)
        live = labels[0] >= 0
        labels, scores = labels[0][live], scores[0][live]
    fresh = new_item_mask(index, state, allowed, c.new_days, now) if c.explore_slots else None
    # The model was fitted on shoppers with a history; a text-only profile (onboarding interests)
    # keeps the fusion: on the demo the model put a brow pencil and a laundry hamper first for
    # "vegan skincare for dry skin".
    learned = cfg.learned_ranking and svc.ranking is not None and len(labels) > 0 and bool(profile.history)
    rows = None
    if learned or features:
        rows = candidate_features(index, state, profile, labels, scores, runs, fresh,
                                  learned={name: getattr(svc, name).scores_of(index, q, labels)
                                           for name, q in queries.items()},
                                  popular_days=c.popular_days, trending_days=c.trending_days, now=now)
    return _Candidates(labels, scores, runs, fresh, allowed, learned), rows


def rerank_feature(svc: Services, cfg: PipelineConfig, profile: Profile, cand: _Candidates,
                   rows: np.ndarray) -> bool:
    """Fill the "reranker" column of ``rows`` (m, len(NAMES)) with the reranker's logits against the
    shopper's context at ``ranker.rerank.feature_positions``, when a reranker is loaded and
    ``cfg.use_reranker`` (the A/B switch). Returns whether it scored."""
    if svc.reranker is None or not cfg.use_reranker or not len(cand.labels):
        return False
    picked = feature_positions(cand.labels, cand.fresh, cfg.rerank.top_n)
    context = context_text(svc.reranker, svc.index, evidence_of(profile))
    rows[picked, NAMES.index("reranker")] = cross_scores(svc.reranker, svc.index, cand.labels[picked], context)
    return True


def learned_order(svc: Services, cand: _Candidates, rows: np.ndarray) -> _Candidates:
    """``cand`` ordered by the learned ranking's scores of its feature ``rows``."""
    labels, scores = top_labels(cand.labels, svc.ranking.score(rows), len(cand.labels))
    return replace(cand, labels=labels, scores=scores)


def _rank_one(svc: Services, cfg: PipelineConfig, profile: Profile, k: int, filters: Filters | None,
              exclude: frozenset[str], now: float | None, queries: dict[str, np.ndarray]) -> _Row:
    index, state, c = svc.index, svc.state, cfg.candidates
    cold = profile.is_empty and not profile.history  # a history decayed to zero weight still counts
    staged = cfg.use_reranker and not cold
    depth = max(k, cfg.rerank.top_n, c.per_source) if staged else max(k, c.per_source)
    with index.lock, state.lock:
        cand, rows = candidates_for(svc, cfg, profile, filters, exclude, now, queries)
    # With a learned ranking the reranker's logit is one of its features (it ranks once, with the
    # other evidence); without one (a text-only profile) the reranking stage fuses it after retrieval.
    featured = cand.learned and svc.ranking.reads("reranker") and rerank_feature(svc, cfg, profile, cand, rows)
    if cand.learned:
        cand = learned_order(svc, cand, rows)
    labels, scores, runs, fresh = cand.labels[:depth], cand.scores[:depth], cand.runs, cand.fresh
    members = {name: {lab: rank for rank, lab in enumerate(run[0].tolist(), 1)} for name, run in runs.items()}
    with index.lock, state.lock:
        if cold:
            return _Row(*cold_list(svc.index, labels, scores, members, cand.allowed, k), ("cold",))
        kept = explore_slots(svc.index, profile, labels, scores, fresh, c)
        counts = state.counts([index.table.records[lab]["item_id"] for lab in labels]).astype(np.float64)
    steps: tuple[str, ...] = ("learned",) if cand.learned else ("fusion",)
    if staged:
        second = None if featured else svc.reranker  # a reranker already ranked as a feature is not fused twice
        context = context_text(second, index, evidence_of(profile)) if second is not None else ""
        out_l, out_s = rerank_list(index, labels, scores, k, reranker=second, context=context, counts=counts,
                                   cfg=cfg.rerank)
        steps += (("rerank",) if svc.reranker is not None else ()) + (("mmr",) if cfg.rerank.mmr_lambda < 1 else ())
    else:
        out_l, out_s = labels[:k], scores[:k]
    live = out_l >= 0
    final_l, final_s, explored = out_explored(out_l[live], out_s[live], kept, fresh, c.explore_slots, k)
    if explored:
        steps += ("explore",)
    labels_k, scores_k = (a[0] for a in empty(1, k))
    labels_k[: len(final_l)], scores_k[: len(final_l)] = final_l[:k], final_s[:k]
    srcs = [by_contribution(lab, members, c) + (["new"] if fresh is not None and fresh[lab] else [])
            for lab in labels_k[labels_k >= 0].tolist()]
    return _Row(labels_k, scores_k, srcs, steps, min(explored, int((labels_k >= 0).sum())))


def similar(svc: Services, cfg: PipelineConfig, item_id: str, k: int, filters: Filters | None = None,
            now: float | None = None) -> Ranked:
    """Items most like ``item_id`` -> :class:`Ranked` (k,): nearest neighbours without the item and
    its duplicates; reranked against the product when ``cfg.rerank.similar`` (no MMR: similar
    should stay similar); then the "similar" merchandising rules. KeyError for an unknown id."""
    rules = live_rules(svc.rules, "similar", cfg.variant, cfg.merchandising, time.time() if now is None else now)
    with svc.index.lock:
        allowed = allowed_mask(svc.index, filters, frozenset({item_id}))
        allowed[svc.index.table.duplicates_of(svc.index.table.label_of[item_id])] = False
    for depth in depths(rules, k):
        labels, scores = _similar_ranked(svc, cfg, item_id, depth, filters)
        out = apply_to(svc.index, labels, scores, rules, k, allowed)
        if enough(out.labels, k, labels, depth):
            break
    return out


def _similar_ranked(svc: Services, cfg: PipelineConfig, item_id: str, k: int, filters: Filters | None
                    ) -> tuple[np.ndarray, np.ndarray]:
    staged = cfg.use_reranker and cfg.rerank.similar and svc.reranker is not None
    labels, scores = similar_items(svc.index, [item_id], max(k, cfg.rerank.top_n) if staged else k, filters)
    labels, scores = labels[0], scores[0]
    if not staged:
        return labels, scores
    context = context_text(svc.reranker, svc.index, Evidence(history=[item_id]))
    with svc.index.lock, svc.state.lock:
        counts = svc.state.counts([svc.index.table.records[lab]["item_id"] if lab >= 0 else "" for lab in labels]
                                  ).astype(np.float64)
    return rerank_list(svc.index, labels, scores, k, reranker=svc.reranker, context=context, counts=counts,
                       cfg=replace(cfg.rerank, mmr_lambda=1.0))


def search(svc: Services, cfg: PipelineConfig, query: str, k: int, filters: Filters | None = None, *,
           user_id: str | None = None, expand: bool | None = None, llm: bool | None = None,
           query_vec: np.ndarray | None = None, explain: bool = True,
           terms: list[Expansion] | None = None) -> tuple[SearchResult, bool]:
    """The search box's answer for ``query`` and whether it was personalised: with ``user_id`` of a
    shopper with a profile, their interest vectors lightly boost what is close to them
    (``SearchConfig.personal_weight``). ``expand`` / ``llm``: None = the service's defaults.
    ``query_vec``: the query's embedding when already computed (batch evaluation); ``explain``:
    False skips the per-result evidence; ``terms``: BM25 terms added (an ``expand`` answer)."""
    if svc.search is None:
        raise ValueError("these services were opened without a search box")
    engine = svc.search.engine.with_config(**dict(cfg.search)) if cfg.search else svc.search.engine
    user_vector = None
    if user_id is not None and svc.events is not None:
        profile = user_profile(svc.events, svc.index, svc.embedder, user_id, cfg.profile)
        user_vector = None if profile.is_empty else profile.interests
    parsed, text = None, query
    if engine.config.understand:
        parsed = svc.search.parser.parse(query)
        if parsed.has_constraints:
            text, filters = parsed.text or query, parsed.filters(filters)
            query_vec = query_vec if text == query else None
    rules = live_rules(svc.rules, "search", cfg.variant, cfg.merchandising, time.time())
    clicks = (lambda vec: svc.search.clicked(text, vec, engine.config)) if engine.config.click_weight else None
    for depth in depths(rules, k):
        result = engine.search(text, depth, filters, expand=expand, use_llm=(expand is not False) and llm,
                               user_vector=user_vector, query_vec=query_vec, explain=explain, parsed=parsed,
                               terms=terms, clicks=clicks)
        ranked = apply_to(svc.index, result.labels, result.scores, rules, k, allowed_mask(svc.index, filters))
        if enough(ranked.labels, k, result.labels, depth):
            break
    evidence = carry(result.labels, ranked.labels, result.evidence, SearchEvidence(None, None, [])) if explain else []
    relevance = carry(result.labels, ranked.labels, result.relevance.tolist(), np.nan)
    result = replace(result, labels=ranked.labels, scores=ranked.scores, evidence=evidence,
                     relevance=np.asarray(relevance + [np.nan] * (k - len(relevance)), dtype=np.float32),
                     rules=ranked.rules)
    return result, user_vector is not None


def expand(svc: Services, cfg: PipelineConfig, query: str, *, llm: bool = False, budget_s: float | None = None,
           query_vec: np.ndarray | None = None) -> ExpandResult:
    """Query expansion for a shop's own lexical engine (``GET /expand``): weighted, grounded terms
    with their provenance, spelling fixes, brand / category hints (``retriever.search.expand``)."""
    if svc.search is None:
        raise ValueError("these services were opened without a search box")
    return svc.search.expander.expand(query, llm=llm, budget_s=budget_s, query_vec=query_vec)


def item_aspects(svc: Services, item_id: str) -> tuple[list[Aspect], list[Aspect], list[str]]:
    """Pros, cons and synthetic shopper queries of ``item_id`` (``GET /items/{id}``): from its
    enrichment (``semrec enrich``) when it has one, else the aspects of the reviews the index holds,
    computed now (~1 ms), and no queries."""
    stored = svc.search.enrichment.get(item_id) if svc.search is not None and svc.search.enrichment else None
    if stored is not None:
        return list(stored.pros), list(stored.cons), list(stored.queries)
    pros, cons = review_aspects(svc.index.reviews.get(item_id, []))
    return pros, cons, []


__all__ = ["PipelineConfig", "Recommendations", "Services", "expand", "item_aspects", "rank_profiles",
           "recommend_session", "recommend_users", "search", "similar"]
