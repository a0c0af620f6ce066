"""A reason for each recommended item, from the evidence the list rests on (``ranker.explain``):
the stated interest or the history item closest to it (named with what the shopper did: viewed,
clicked, added to cart, bought, rated), a review sentence matching the context, or its source
("popular with shoppers now", "new in the catalog"); never a made-up one."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from indexer.store import ItemIndex
from retriever.profiles import Profile

from .explain import Reason, explain_list
from .model import Reranker

Array = np.ndarray
HISTORY_FOR_REASONS = 20  # most recent history items an explanation may point to
VERBS = {"view": "viewed", "click": "viewed", "add_to_cart": "added to your cart", "purchase": "bought",
         "rating": "rated"}


@dataclass(frozen=True)
class Evidence:
    """What a list is about: history item ids (oldest first) with what the shopper did with each,
    stated interests with their unit vectors ``(len(interests), dim)`` float32, and a search query."""

    history: Sequence[str] = ()
    actions: Mapping[str, str] = field(default_factory=dict)  # item id -> strongest event type
    interests: Sequence[str] = ()
    interest_vectors: Array | None = None
    query: str = ""


def evidence_of(profile: Profile) -> Evidence:
    """What a profile rests on (history, stated interests with their vectors), for contexts and reasons."""
    stated = profile.evidence.get("stated", [])
    return Evidence(history=profile.history, actions=profile.actions, interests=[t for t, _ in stated],
                    interest_vectors=np.array([v for _, v in stated], dtype=np.float32) if stated else None)


def context_text(reranker: Reranker, index: ItemIndex, evidence: Evidence) -> str:
    """The reranker's context for ``evidence``, built as in training (newest items first)."""
    with index.lock:
        records = [r for r in (index.table.get(i) for i in evidence.history) if r is not None]
    return reranker.context_for(records, list(evidence.interests), evidence.query)


def list_reasons(index: ItemIndex, labels: Array, evidence: Evidence, sources: Sequence[Sequence[str]],
                 min_similarity: float = 0.35) -> list[Reason]:
    """A reason per live label of ``labels`` (k,); ``sources[i]``: the candidate sources of the i-th
    live label. When no evidence fits, the source says it."""
    live = [int(lab) for lab in labels if lab >= 0]
    if not live:
        return []
    with index.lock:
        vectors = index.vectors.view[live].copy()
        recent = [i for i in evidence.history if i in index.table.label_of][::-1][:HISTORY_FOR_REASONS]
        recent = list(dict.fromkeys(recent))
        hist_vecs = index.vectors.view[index.table.labels(recent)].copy() if recent else None
        hist_titles = [index.table.get(i)["title"] for i in recent]
        reviews = [index.reviews.get(index.table.records[lab]["item_id"], []) for lab in live]
    verbs = [VERBS.get(evidence.actions.get(i, "view"), "viewed") for i in recent]
    context = " ".join([evidence.query, *evidence.interests, *hist_titles[:5]])
    out = explain_list(vectors, history_vectors=hist_vecs, history_titles=hist_titles, history_verbs=verbs,
                       interest_vectors=evidence.interest_vectors, interests=list(evidence.interests),
                       reviews=reviews, context=context, min_similarity=min_similarity)
    padded = list(sources) + [[]] * (len(out) - len(sources))
    return [r if r.kind != "none" else _from_sources(src) for r, src in zip(out, padded)]


def _from_sources(sources: Sequence[str]) -> Reason:
    if "new" in sources:
        return Reason("new", "new in the catalog", "", 0.0)
    if "trending" in sources or "popular" in sources:
        return Reason("popular", "popular with shoppers now", "", 0.0)
    return Reason("none", "", "", 0.0)
