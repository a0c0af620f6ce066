"""A reason for each recommended item, from the evidence that put it in the list (``ranker.explain``):
the source that contributed most to its place and, for the dense and co-visitation sources, the
stated interest or history item behind it (named with what the shopper did: viewed, added to
cart, bought, rated); else the source's generic sentence ("popular with shoppers now", "new in the
catalog") or "picked for you". Never a made-up one."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from indexer.store import ItemIndex
from retriever.profiles import Profile
from retriever.state import InteractionState

from .explain import Reason, covisit_reason, dense_reason, pick
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
                 state: InteractionState | None = None) -> list[Reason]:
    """A reason per live label of ``labels`` (k,); ``sources[i]``: the candidate sources of the i-th
    live label, strongest contribution first (``ranker.pipeline``). ``state``: the co-visitation
    counts behind "covisit" (None: co-visits name nothing)."""
    live = [int(lab) for lab in labels if lab >= 0]
    if not live:
        return []
    with index.lock:
        vectors = index.vectors.view[live].copy()
        items = [index.table.records[lab]["item_id"] for lab in live]
        recent = [i for i in evidence.history if i in index.table.label_of][::-1][:HISTORY_FOR_REASONS]
        recent = list(dict.fromkeys(recent))
        hist_vecs = index.vectors.view[index.table.labels(recent)].copy() if recent else None
        titles = {i: index.table.get(i)["title"] for i in dict.fromkeys(evidence.history) if i in index.table.label_of}
    verbs = {i: VERBS.get(evidence.actions.get(i, "view"), "viewed") for i in titles}
    padded = list(sources) + [[]] * (len(live) - len(sources))
    out = []
    for item, vec, src in zip(items, vectors, padded):
        found: dict[str, Reason | None] = {}
        if "dense" in src and item in titles:  # its own vector proposed it
            found["dense"] = Reason("history", f"you {verbs[item]} it recently", titles[item], 1.0)
        elif "dense" in src:
            found["dense"] = dense_reason(
                vec, history_vectors=hist_vecs, history_titles=[titles[i] for i in recent],
                history_verbs=[verbs[i] for i in recent], interest_vectors=evidence.interest_vectors,
                interests=list(evidence.interests))
        if "covisit" in src and state is not None:
            with state.lock:
                found["covisit"] = covisit_reason(item, evidence.history, titles, verbs, state.covisit.counts,
                                                  state.covisit.totals)
        out.append(pick(src, found))
    return out
