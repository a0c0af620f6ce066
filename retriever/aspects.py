"""Review aspects with sentiment: what shoppers praise (pros) and complain about (cons), per item.

Sentence polarity (:func:`polarity`, in [-1, 1]) is VADER's compound score (Hutto & Gilbert 2014;
a lexicon with negation and intensity rules, the ``vaderSentiment`` package) with product-review
cues VADER's lexicon lacks ("broke", "flimsy", "returned it", "stopped working" ...): a sentence
holding one is negative whatever VADER says. A sentence is *positive* at polarity >= 0.3 with no
negative cue and no contrast after it ("but ..."): only positive sentences may be shown as a reason
to buy (``ranker.explain``), so a complaint is never presented as praise.

Aspects (:func:`item_aspects`): the content words an item's review sentences share (in at least
two sentences), each with the mean polarity of its sentences and the most telling sentence; those
with mean >= 0.3 are pros, <= -0.1 cons.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

POSITIVE = 0.3
NEGATIVE = -0.1
NEGATIVE_CUES = re.compile(
    r"\b(?:broke|broken|breaks|flimsy|cheaply made|returned|return(?:ing)? it|refund|stopped working|quit working|"
    r"doesn'?t work|does not work|didn'?t work|did not work|won'?t work|not work|defective|junk|waste|"
    r"disappoint\w*|fell apart|falls apart|poor quality|useless|leak\w*|cracked|rip(?:ped)? off|"
    r"stay away|do not buy|don'?t buy|not worth|worst|terrible|awful|horrible|garbage|scam|fake|missing|"
    r"too small|too big|too short|too thin|too loud|never arrived|unusable|died|dead)\b", re.IGNORECASE)
_CONTRAST = re.compile(r"\b(?:but|however|although|though|except|unfortunately|sadly)\b", re.IGNORECASE)
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
_WORD = re.compile(r"[a-z][a-z'-]+")
_GENERIC = frozenset([
    "great", "good", "nice", "love", "loved", "like", "liked", "best", "excellent", "perfect", "awesome",
    "product", "item", "thing", "things", "buy", "bought", "purchase", "purchased", "price", "one", "use",
    "used", "using", "well", "really", "much", "also", "would", "could", "get", "got", "work", "works",
    "worked", "amazon", "star", "stars", "review", "time", "quality", "recommend", "highly", "little", "bit",
    "lot", "very", "just", "even", "still", "well", "much", "more", "make", "made", "does", "did", "doing",
    "dont", "doesnt", "didnt"
])
_STOP = frozenset([
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "from", "has", "have", "i", "in", "is", "it",
    "its", "my", "of", "on", "or", "so", "that", "the", "this", "to", "was", "were", "with", "you", "your",
    "they", "them", "than", "then", "there", "these", "those", "not", "no", "too", "our", "we", "me", "he",
    "she", "his", "her", "all", "any", "can", "will"
])


@dataclass(frozen=True)
class Aspect:
    """One aspect of an item: the ``term``, its mean sentence ``score`` in [-1, 1], how many review
    sentences name it (``mentions``) and the most telling ``sentence``."""

    term: str
    score: float
    mentions: int
    sentence: str


@lru_cache(maxsize=1)
def _vader():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def polarity(sentence: str) -> float:
    """Sentiment of one sentence in [-1, 1] (see module docstring); a negative cue caps it at -0.5."""
    score = float(_vader().polarity_scores(sentence)["compound"])
    return min(score, -0.5) if NEGATIVE_CUES.search(sentence) else score


def is_positive(sentence: str, review: str = "") -> bool:
    """May this sentence be shown as a reason to buy? No complaint cue, no "but ...", and positive
    itself, or neutral (a fact: "dries my hair in minutes") within a clearly positive ``review``
    that holds no complaint cue at all."""
    if _CONTRAST.search(sentence) or NEGATIVE_CUES.search(sentence):
        return False
    p = polarity(sentence)
    if p >= POSITIVE:
        return True
    return p >= 0 and bool(review) and not NEGATIVE_CUES.search(review) and polarity(review) >= 0.5


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.split(text.strip()) if len(s.split()) >= 3]


def item_aspects(reviews: Sequence[str], max_each: int = 3) -> tuple[list[Aspect], list[Aspect]]:
    """``(pros, cons)`` of one item's review texts, each best first (see module docstring)."""
    by_term: dict[str, list[tuple[float, str]]] = defaultdict(list)
    opinion = _vader().lexicon  # opinion words ("broke", "lovely") say how, not what: never an aspect
    for review in reviews:
        for s in sentences(review):
            p = polarity(s)
            for w in {w.strip("'-") for w in _WORD.findall(s.lower())}:
                if len(w) >= 4 and w not in _GENERIC and w not in _STOP and w not in opinion and \
                        not NEGATIVE_CUES.fullmatch(w):
                    by_term[w].append((p, s))
    pros, cons = [], []
    for term, hits in by_term.items():
        if len(hits) < 2:
            continue
        mean = sum(p for p, _ in hits) / len(hits)
        if mean >= POSITIVE:
            best = max((h for h in hits if is_positive(h[1])), default=None, key=lambda h: (h[0], -len(h[1])))
            if best is not None:
                pros.append(Aspect(term, round(mean, 3), len(hits), best[1]))
        elif mean <= NEGATIVE:
            worst = min(hits, key=lambda h: (h[0], len(h[1])))
            cons.append(Aspect(term, round(mean, 3), len(hits), worst[1]))
    pros.sort(key=lambda a: (-a.mentions, -a.score, a.term))
    cons.sort(key=lambda a: (-a.mentions, a.score, a.term))
    return pros[:max_each], cons[:max_each]
