"""Typo tolerance for catalog words (brands, title words): "ionik" -> "ionique", "shampo" -> "shampoo".

Two cheap steps, both over precomputed dictionaries:

1. :func:`sound_key` folds spellings that sound alike onto one key (``que``/``ck``/``c`` before a, o, u
   -> ``k``, ``ph`` -> ``f``, doubled letters once, ...), so "ionik" and "ionique" share the key
   ``ionik`` exactly.
2. A SymSpell index (Garbe 2012) of every key with one character deleted finds keys within edit
   distance 2 of a query key in a few dict lookups; candidates are checked with the true
   Damerau-Levenshtein distance (at most 1 for words under 8 letters, 2 from 8 on). A search uses
   a correction only when it sounds the same or is the only candidate (:meth:`TypoIndex.alternatives`).

Only Latin words of 4+ letters are corrected, and the first letter must agree: short words and
first-letter changes are where corrections go wrong. Ties go to the more frequent catalog word.
Apostrophes and accents never matter: :func:`retriever.search.tokens.tokenize` already maps "l'oreal",
"L'Oréal" and "loreal" to the same token.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence

MIN_LEN = 4
LONG_WORD = 8  # from this length on, two edits are tolerated

_SOUND_RULES = [
    (re.compile(r"que$"), "k"), (re.compile(r"qu"), "k"), (re.compile(r"ph"), "f"),
    (re.compile(r"ck"), "k"), (re.compile(r"c(?=[aou]|$)"), "k"), (re.compile(r"q"), "k"),
    (re.compile(r"x"), "ks"), (re.compile(r"z"), "s"), (re.compile(r"y"), "i"),
    (re.compile(r"(.)\1+"), r"\1"),
]
_LATIN = re.compile(r"^[a-z]+$")


def sound_key(word: str) -> str:
    """A spelling-insensitive key for a lower-case Latin word ("ionique" -> "ionik", "shampoo" -> "shampo")."""
    for pattern, repl in _SOUND_RULES:
        word = pattern.sub(repl, word)
    return word


def damerau_levenshtein(a: str, b: str) -> int:
    """Edit distance with insertions, deletions, substitutions and adjacent transpositions (OSA)."""
    if a == b:
        return 0
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        cur = [i] + [0] * len(b)
        for j, cb in enumerate(b, start=1):
            cost = 0 if ca == cb else 1
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        prev2, prev = prev, cur
    return prev[-1]


def _deletes(key: str) -> set[str]:
    return {key[:i] + key[i + 1:] for i in range(len(key))}


class TypoIndex:
    """Corrections toward a fixed vocabulary: ``{word: frequency}`` (e.g. BM25 document frequencies)."""

    def __init__(self, words: Mapping[str, int]):
        self.freq = {w: int(f) for w, f in words.items() if len(w) >= MIN_LEN and _LATIN.match(w)}
        self._by_key: dict[str, list[str]] = {}
        for w in self.freq:
            self._by_key.setdefault(sound_key(w), []).append(w)
        self._by_delete: dict[str, list[str]] = {}
        for key in self._by_key:
            for d in _deletes(key):
                self._by_delete.setdefault(d, []).append(key)

    def __contains__(self, word: str) -> bool:
        return word in self.freq

    def correct(self, word: str, n: int = 1) -> list[str]:
        """Up to ``n`` vocabulary words ``word`` may be a misspelling of, best first; [] if none.

        Order: sound-key distance, then spelling distance, then catalog frequency. A word already
        in the vocabulary, shorter than 4 letters or not plain Latin is left alone.
        """
        if word in self.freq or len(word) < MIN_LEN or not _LATIN.match(word):
            return []
        key = sound_key(word)
        max_dist = 2 if len(word) >= LONG_WORD else 1
        keys = {key} | set(self._by_delete.get(key, ()))
        for d in _deletes(key):
            keys.add(d)
            keys.update(self._by_delete.get(d, ()))
        scored: list[tuple[int, int, str]] = []
        for k in keys:
            for w in self._by_key.get(k, ()):
                if w[0] != word[0]:
                    continue
                spelled = damerau_levenshtein(word, w)
                dist = min(damerau_levenshtein(key, k), spelled)
                if dist <= max_dist:
                    scored.append((dist, spelled, -self.freq[w], w))
        return [c[-1] for c in sorted(scored)[:n]]

    def alternatives(self, word: str, n: int = 3) -> list[str]:
        """Corrections of ``word`` confident enough to search for (up to ``n``), best first.

        Words that *sound* the same (equal :func:`sound_key`) all qualify: "ionik" -> "ionic",
        "ionique". Otherwise only a single candidate qualifies: "tape" near "type", "take" and
        "tame" is more likely a word the catalog lacks than a typo, and is left alone.
        """
        found = self.correct(word, n + 1)
        key = sound_key(word)
        same = [w for w in found if sound_key(w) == key]
        if same:
            return same[:n]
        return found if len(found) == 1 else []


def respell(words: Sequence[str], known: Callable[[str], bool], typo: TypoIndex) -> dict[str, list[str]]:
    """Corrections for a query's tokens: ``{original: [replacement, ...]}``.

    ``words``: the query's tokens in order; ``known(token)``: is it in the catalog already?
    Two adjacent tokens, one unknown, whose concatenation is known are joined ("l oreal" ->
    "loreal"); then each remaining unknown token gets :meth:`TypoIndex.alternatives`, if any.
    """
    out: dict[str, list[str]] = {}
    for a, b in zip(words, words[1:]):
        if not (known(a) and known(b)) and known(a + b):
            out[a], out[b] = [a + b], [a + b]
    for w in words:
        if w in out or known(w):
            continue
        fix = typo.alternatives(w)
        if fix:
            out[w] = fix
    return out
