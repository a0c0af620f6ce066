"""Reasons for recommended items, each naming the evidence that put the item in the list.

An item reaches a personal list through candidate sources (``retriever.candidates``); a reason is
read from the source that contributed most to its place, falling to the next one when that source
has nothing nameable:

- ``dense``: the stated interest or the history item closest to the item, if close enough
  ("matches your interest in …", "because you rated …"; the verb is what the shopper did);
- ``covisit``: the history item whose co-visits proposed the item, if enough of them did
  ("because you bought …: other shoppers chose both");
- ``popular`` / ``trending`` / ``new``: "popular with shoppers now", "trending now", "new in the catalog";
- ``catalog`` (a cold start with no events at all): "from across the catalog".

Sources with no nameable evidence (``mf``, ``encoder``, a ``dense`` hit with nothing close enough)
give the honest generic "picked for you". Everything here is a pure function of vectors, counts and
texts.

Thresholds, measured on the demo catalog (MiniLM, all 44,850 item pairs): 1.2% of pairs from
different top-level categories reach cosine 0.45 (2.7% reach 0.35, the old threshold, which let
"a dog harness because you rated running shoes", cosine 0.36, through), while 78% of pairs in one
leaf category do. A stated interest is a short text, whose cosines to items run lower: 0.35.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

Array = np.ndarray

HISTORY_MIN_COSINE = 0.45
INTEREST_MIN_COSINE = 0.35
# Co-visit weight (``retriever.covisit``: event type weight / distance) the named history item must
# have sent to the item: 12 = two adjacent purchases or ratings, more than one shopper's pair gives.
COVISIT_MIN_COUNT = 12.0
GENERIC = {
    "popular": "popular with shoppers now",
    "trending": "trending now",
    "new": "new in the catalog",
    "catalog": "from across the catalog",
}
PERSONAL = "picked for you"


@dataclass(frozen=True)
class Reason:
    kind: str       # "interest" | "history" | "covisit" | "popular" | "trending" | "new" | "catalog" | "personal"
    text: str       # the sentence shown to the shopper
    evidence: str   # the interest or history title it rests on ("" for a generic reason)
    score: float    # cosine (interest, history) or co-visit weight (covisit); 0 for a generic reason


def shorten(text: str, words: int) -> str:
    """``text`` cut to ``words`` words, with an ellipsis when cut."""
    parts = text.split()
    return " ".join(parts[:words]) + ("…" if len(parts) > words else "")


def closest(item: Array, vectors: Array | None, min_cosine: float) -> tuple[int, float]:
    """Row of unit ``vectors`` (n, d) closest to unit ``item`` (d,) -> (row, cosine); (-1, 0) when
    none reaches ``min_cosine``."""
    if vectors is None or not len(vectors):
        return -1, 0.0
    sims = np.asarray(vectors, dtype=np.float32) @ np.asarray(item, dtype=np.float32)
    j = int(np.argmax(sims))
    return (j, float(sims[j])) if sims[j] >= min_cosine else (-1, 0.0)


def dense_reason(item: Array, *, history_vectors: Array | None = None, history_titles: Sequence[str] = (),
                 history_verbs: Sequence[str] = (), interest_vectors: Array | None = None,
                 interests: Sequence[str] = (), title_words: int = 8) -> Reason | None:
    """The closer of the closest stated interest (cosine >= ``INTEREST_MIN_COSINE``) and the closest
    history item (>= ``HISTORY_MIN_COSINE``); an interest wins a tie (the shopper stated it). None
    when neither is close enough. ``history_vectors`` (h, d) align with titles and verbs."""
    i, si = closest(item, interest_vectors, INTEREST_MIN_COSINE)
    h, sh = closest(item, history_vectors, HISTORY_MIN_COSINE)
    if i >= 0 and si >= sh:
        return Reason("interest", f"matches your interest in {interests[i]}", interests[i], si)
    if h >= 0:
        verb = history_verbs[h] if h < len(history_verbs) else "viewed"
        return Reason("history", f"because you {verb} {shorten(history_titles[h], title_words)}", history_titles[h], sh)
    return None


def covisit_reason(item_id: str, history: Sequence[str], titles: Mapping[str, str], verbs: Mapping[str, str],
                   counts: Mapping[str, Mapping[str, float]], totals: Mapping[str, float], decay: float = 0.7,
                   title_words: int = 8) -> Reason | None:
    """The history item (``history`` oldest first, its last 10 counted as ``CoVisitation.neighbours``
    scores them) that sent the item the largest share of co-visits, weighted by recency; None when
    its co-visit weight to the item is under ``COVISIT_MIN_COUNT``."""
    best, best_share = None, 0.0
    for age, h in enumerate(reversed(list(history)[-10:])):
        total = totals.get(h, 0.0)
        count = counts.get(h, {}).get(item_id, 0.0) if total > 0 else 0.0
        share = decay**age * count / total if count else 0.0
        if share > best_share:
            best, best_share = h, share
    if best is None or counts[best][item_id] < COVISIT_MIN_COUNT or best not in titles:
        return None
    text = f"because you {verbs.get(best, 'viewed')} {shorten(titles[best], title_words)}: other shoppers chose both"
    return Reason("covisit", text, titles[best], float(counts[best][item_id]))


def pick(sources: Sequence[str], found: Mapping[str, Reason | None]) -> Reason:
    """The reason of the first source in ``sources`` (strongest contribution first) that has one:
    ``found`` holds the nameable evidence of "dense" and "covisit" (None: nothing close enough);
    popular, trending, new and catalog have their generic sentence; else "picked for you"."""
    for s in sources:
        if found.get(s) is not None:
            return found[s]
        if s in GENERIC:
            return Reason(s, GENERIC[s], "", 0.0)
    return Reason("personal", PERSONAL, "", 0.0)
