"""Short, evidence-based reasons for each recommended item.

Evidence, in the order it is weighed:

1. the onboarding interest closest to the item (cosine of their vectors): "matches your interest in …";
2. the history item closest to the item: "because you viewed …" (the verb says what the shopper
   did with it: viewed, added to your cart, bought, rated);
   the higher similarity of 1 and 2 wins if it reaches ``min_similarity`` (an interest wins a tie:
   the shopper stated it);
3. otherwise, a *positive* review sentence of the item (``retriever.aspects.is_positive``: no
   complaint, no "but …") sharing the most content words with the context (search query,
   interests, history titles): 'shoppers say: "…"'. A negative sentence is never a reason to buy;
4. otherwise no reason (kind "none", empty text): better silent than a made-up reason.

Everything is a pure function of vectors and texts, so reasons are cheap and testable.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from retriever.aspects import is_positive

Array = np.ndarray

_STOP = frozenset([
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "from", "has", "have", "i", "in", "is", "it",
    "its", "my", "of", "on", "or", "so", "that", "the", "this", "to", "was", "were", "with", "you", "your", "very",
    "just", "not", "no", "too", "also", "our", "they", "them", "than", "then", "there", "these", "those",
])
_WORD = re.compile(r"[a-z0-9]+")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class Reason:
    kind: str       # "interest" | "history" | "review" | "none"
    text: str       # the sentence shown to the shopper ("" for "none")
    evidence: str   # the interest, history title or review sentence it rests on
    score: float    # cosine similarity (interest/history) or shared content words (review)


def content_words(text: str) -> set[str]:
    """Lower-case alphanumeric words of 3+ characters that are not stop words."""
    return {w for w in _WORD.findall(text.lower()) if len(w) >= 3 and w not in _STOP}


def shorten(text: str, words: int) -> str:
    """``text`` cut to ``words`` words, with an ellipsis when cut."""
    parts = text.split()
    return " ".join(parts[:words]) + ("…" if len(parts) > words else "")


def review_snippet(reviews: Sequence[str], context: str, words: int = 14) -> tuple[str, int]:
    """The positive review sentence sharing most content words with ``context`` -> (snippet, shared
    count). Ties go to the shorter sentence, then the earlier one. ("", 0) when nothing is shared.
    """
    want = content_words(context)
    best, best_key = "", (0, 0)
    for review in reviews:
        for sentence in _SENTENCE.split(review.strip()):
            shared = len(content_words(sentence) & want)
            key = (shared, -len(sentence.split()))
            if shared and key > best_key and is_positive(sentence, review):
                best, best_key = sentence.strip(), key
    return (shorten(best, words), best_key[0]) if best else ("", 0)


def explain(item_vector: Array, *, history_vectors: Array | None = None, history_titles: Sequence[str] = (),
            history_verbs: Sequence[str] = (), interest_vectors: Array | None = None,
            interests: Sequence[str] = (), reviews: Sequence[str] = (),
            context: str = "", min_similarity: float = 0.35, title_words: int = 8) -> Reason:
    """The reason for one item (see module docstring).

    item_vector: (d,) unit vector; history_vectors: (h, d) unit rows aligned with ``history_titles``
    and ``history_verbs`` (default "viewed");
    interest_vectors: (i, d) unit rows aligned with ``interests``; reviews: the item's review texts;
    context: text the review snippet should match (query, interests, history titles).
    """
    item = np.asarray(item_vector, dtype=np.float32)
    best = Reason("none", "", "", 0.0)
    if interest_vectors is not None and len(interests):
        sims = np.asarray(interest_vectors, dtype=np.float32) @ item
        j = int(np.argmax(sims))
        if sims[j] >= min_similarity:
            best = Reason("interest", f"matches your interest in {interests[j]}", interests[j], float(sims[j]))
    if history_vectors is not None and len(history_titles):
        sims = np.asarray(history_vectors, dtype=np.float32) @ item
        j = int(np.argmax(sims))
        if sims[j] >= min_similarity and sims[j] > best.score:
            title = shorten(history_titles[j], title_words)
            verb = history_verbs[j] if j < len(history_verbs) else "viewed"
            best = Reason("history", f"because you {verb} {title}", history_titles[j], float(sims[j]))
    if best.kind != "none":
        return best
    snippet, shared = review_snippet(reviews, context)
    if shared:
        return Reason("review", f'shoppers say: "{snippet}"', snippet, float(shared))
    return best


def explain_list(item_vectors: Array, *, history_vectors: Array | None = None, history_titles: Sequence[str] = (),
                 history_verbs: Sequence[str] = (), interest_vectors: Array | None = None,
                 interests: Sequence[str] = (),
                 reviews: Sequence[Sequence[str]] | None = None, context: str = "",
                 min_similarity: float = 0.35) -> list[Reason]:
    """:func:`explain` for each row of ``item_vectors`` (n, d); ``reviews[i]`` are item i's reviews."""
    reviews = reviews if reviews is not None else [()] * len(item_vectors)
    return [explain(v, history_vectors=history_vectors, history_titles=history_titles, history_verbs=history_verbs,
                    interest_vectors=interest_vectors, interests=interests, reviews=r, context=context,
                    min_similarity=min_similarity)
            for v, r in zip(item_vectors, reviews)]
