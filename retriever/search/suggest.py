"""Search-box completions from titles, brands, categories and popular past queries.

Every completion is filed under normalised keys (:func:`key`: folded, apostrophes dropped, anything
not a letter or digit -> one space): its whole text and each word start ("Ionique Pro Ionic Hair
Dryer" is found by "ion", "hair d", "dry"...; in CJK text every character starts a word, so
"保温" finds "儿童保温杯"). Keys live in one
sorted list, so a prefix is a ``bisect`` and a scan of the matching run. Short prefixes (1-2
characters) match thousands of keys: their best completions are precomputed at build time.

Typo tolerance: when a prefix (3+ characters) has fewer than ``k`` completions, every variant one
edit away (Norvig's ``edits1``: deletes, transposes, replaces, inserts) is looked up the same way
and its completions follow, ranked lower.

Score of a completion (higher first)::

    kind prior (query 3, brand 2, category 1.5, title 1) + log1p(count) - 0.5 if matched mid-text
                                                          - 1 if matched through a typo variant

``count`` is how many distinct shoppers searched the query, or how many live items carry the brand /
category. Past queries come from :class:`QueryLog`, fed by ``/search``: per query the distinct
*sources* that searched it, each a keyed hash of a verified user id or of a client address, never
clear text, plus the distinct identified shoppers the search log in the event store counts for it
across workers (:meth:`QueryLog.replace`). A query is suggested only once ``min_query_users``
distinct sources searched it (k-anonymity, default 3): one client, however often it searches, never
plants a suggestion, and nothing one shopper typed is shown to others until several others typed it
too. Erasing a shopper takes them out of every query (:meth:`QueryLog.forget`).

The catalog side follows item updates through ``ItemIndex.subscribe``: a deleted item's title is
dropped at once (checked at query time), new titles appear after a rebuild in a background thread,
renumbered labels (``ItemIndex.compact_labels``) are mapped at once (a retired title gets label -2:
never shown).
"""

from __future__ import annotations

import bisect
import heapq
import math
import re
import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from indexer.store import ItemIndex

from .tokens import fold

PRIORS = {"query": 3.0, "brand": 2.0, "category": 1.5, "title": 1.0}
MID_PENALTY = 0.5
TYPO_PENALTY = 1.0
TITLE_WORD_STARTS = 6    # a title is findable from its first 6 words on
PRECOMPUTED_PREFIX = 2   # prefixes up to this long answer from a precomputed table
PRECOMPUTED_K = 20       # completions kept per precomputed prefix
SCAN_LIMIT = 5000        # keys read per prefix at most
TYPO_SCAN_LIMIT = 20     # keys read per typo variant of a prefix
MAX_KEY = 100            # characters of a key kept
_NON_WORD = re.compile(r"[^\w]+|_")
_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789 "
_CJK_CHAR = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")
CJK_STARTS = 24          # CJK characters of a text that may start a completion


def key(text: str) -> str:
    """Normalised lookup key: folded, apostrophes dropped, separators -> single spaces."""
    return _NON_WORD.sub(" ", re.sub("['’]", "", fold(text))).strip()[:MAX_KEY]


@dataclass(frozen=True)
class Suggestion:
    text: str
    kind: str   # "query", "brand", "category" or "title"
    score: float


MAX_SOURCES = 16  # sources kept per query: enough to pass any sane threshold and rank by popularity


class QueryLog:
    """Past queries with the distinct sources that searched them, bounded in memory.

    Per normalised query (:func:`key`): ``{source: the text as that source typed it}``, at most
    ``max_sources`` sources; at most ``max_size`` queries (those with the fewest sources go first).
    A source is an opaque, pseudonymous string (the service passes keyed hashes). A query shows as
    the text its earliest remaining source typed, so :meth:`forget` leaves nothing of a source.
    :meth:`replace` adds the counts of the search log (``EventStore.popular_queries``, every
    worker's identified shoppers): a query counts the larger of the two, never their sum, since a
    shopper can be in both.
    """

    def __init__(self, max_size: int = 10_000, max_sources: int = MAX_SOURCES):
        self.max_size, self.max_sources = max_size, max_sources
        self.sources: dict[str, dict[str, str]] = {}
        self.stored: dict[str, tuple[str, int]] = {}  # key -> (display text, distinct shoppers) from the store
        self.version = 0
        self._lock = threading.Lock()

    def add(self, query: str, source: str) -> None:
        """Record that ``source`` searched ``query``; a repeat by the same source changes nothing."""
        k = key(query)
        if not k:
            return
        with self._lock:
            seen = self.sources.get(k)
            if seen is not None and (source in seen or len(seen) >= self.max_sources):
                return
            self.sources.setdefault(k, {})[source] = " ".join(query.split())[:MAX_KEY]
            self.version += 1
            if len(self.sources) > self.max_size:
                # Drop the least shared tenth at once: amortised O(1) per add; among equals the newest
                # go first, so one-off typing never pushes out what many searched.
                keep = sorted(self.sources.items(), key=lambda kv: -len(kv[1]))[: int(self.max_size * 0.9)]
                self.sources = dict(keep)

    def forget(self, source: str) -> int:
        """Take ``source`` out of every query (erasure); a query no one else searched is dropped.
        The store's counts may hold the source too: they are dropped until the next :meth:`replace`.
        Returns how many queries it was in."""
        with self._lock:
            hit = [k for k, seen in self.sources.items() if source in seen]
            for k in hit:
                del self.sources[k][source]
                if not self.sources[k]:
                    del self.sources[k]
            if hit or self.stored:
                self.stored = {}
                self.version += 1
            return len(hit)

    def replace(self, rows: Iterable[tuple[str, str, int]]) -> None:
        """The search log's counts: ``(key, display text, distinct shoppers)`` per query."""
        rows = list(rows)[: self.max_size]
        with self._lock:
            self.stored = {k: (" ".join(text.split())[:MAX_KEY], int(n)) for k, text, n in rows}
            self.version += 1

    def _merged(self) -> dict[str, tuple[str, int]]:
        out = dict(self.stored)
        for k, seen in self.sources.items():
            n = max(len(seen), out.get(k, ("", 0))[1])
            out[k] = (next(iter(seen.values())), n)
        return out

    def counts(self) -> dict[str, int]:
        """``{key: distinct sources}`` of every logged query."""
        with self._lock:
            return {k: n for k, (_, n) in self._merged().items()}

    def snapshot(self, min_sources: int) -> list[tuple[str, str, int]]:
        """``[(key, display text, distinct sources)]`` of queries searched by at least ``min_sources``."""
        with self._lock:
            return [(k, text, n) for k, (text, n) in self._merged().items() if n >= min_sources]


class _Table:
    """Sorted keys -> entries, plus the precomputed answers for short prefixes."""

    def __init__(self, entries: list[tuple[str, str, float, int]], keyed: list[tuple[str, int, bool]]):
        self.entries = entries  # (text, kind, base score, label or -1)
        keyed.sort()
        self.keys = [k for k, _, _ in keyed]
        self.entry = [e for _, e, _ in keyed]
        self.mid = [m for _, _, m in keyed]
        self.short: dict[str, list[tuple[float, int]]] = {}
        for i, k in enumerate(self.keys):
            s = self.score(i)
            for n in range(1, min(PRECOMPUTED_PREFIX, len(k)) + 1):
                heap = self.short.setdefault(k[:n], [])
                item = (s, -self.entry[i])
                if len(heap) < PRECOMPUTED_K * 4:
                    heapq.heappush(heap, item)
                else:
                    heapq.heappushpop(heap, item)

    def score(self, i: int) -> float:
        return self.entries[self.entry[i]][2] - (MID_PENALTY if self.mid[i] else 0.0)

    def matches(self, prefix: str, limit: int = SCAN_LIMIT) -> Iterable[tuple[float, int]]:
        """``(score, entry)`` of (at most ``limit``) keys starting with ``prefix``."""
        if len(prefix) <= PRECOMPUTED_PREFIX:
            return [(s, -neg) for s, neg in self.short.get(prefix, [])]
        lo = bisect.bisect_left(self.keys, prefix)
        out = []
        for i in range(lo, min(lo + limit, len(self.keys))):
            if not self.keys[i].startswith(prefix):
                break
            out.append((self.score(i), self.entry[i]))
        return out


def _word_starts(k: str, limit: int | None = None) -> list[str]:
    """Suffixes of key ``k`` that start a word; in CJK text (no spaces) every character starts one."""
    words = k.split(" ")
    starts = [" ".join(words[i:]) for i in range(len(words) if limit is None else min(limit, len(words)))]
    cjk = [m.start() for m in _CJK_CHAR.finditer(k)][:CJK_STARTS]
    starts += [k[i:] for i in cjk if i > 0 and k[i - 1] != " "]
    return [s for s in starts if s]


class Suggester:
    """Completions for a typed prefix (see module docstring). Thread-safe."""

    def __init__(self, index: ItemIndex, queries: QueryLog | None = None, *, min_query_users: int = 3,
                 background: bool = True):
        if min_query_users < 2:
            raise ValueError("min_query_users must be at least 2: one client's queries are never suggested")
        self.index = index
        self.queries = queries if queries is not None else QueryLog()
        self.min_query_users = min_query_users
        self.background = background
        self._lock = threading.Lock()
        self._catalog = self._build_catalog()[0]
        self._query_table: _Table | None = None
        self._query_version = -1
        self._dirty = False
        self._thread: threading.Thread | None = None
        index.subscribe(self._on_update)

    # ---- building ------------------------------------------------------------------------------
    def _build_catalog(self) -> tuple[_Table, int]:
        """The catalog's completion table and the label generation its labels belong to."""
        with self.index.lock:
            live = np.flatnonzero(self.index.table.alive.view)
            records = [self.index.table.records[i] for i in live]
            generation = self.index.generation
        entries: list[tuple[str, str, float, int]] = []
        keyed: list[tuple[str, int, bool]] = []
        brands: Counter = Counter()
        cats: Counter = Counter()
        display: dict[tuple[str, str], str] = {}
        seen_titles: set[str] = set()
        for label, rec in zip(live, records):
            if rec["brand"].strip():
                brands[key(rec["brand"])] += 1
                display.setdefault(("brand", key(rec["brand"])), rec["brand"].strip())
            for c in set(rec["categories"]):
                if c.strip():
                    cats[key(c)] += 1
                    display.setdefault(("category", key(c)), c.strip())
            tk = key(rec["title"])
            if tk and tk not in seen_titles:  # duplicate listings: one completion
                seen_titles.add(tk)
                entries.append((rec["title"].strip(), "title", PRIORS["title"], int(label)))
                keyed += [(s, len(entries) - 1, j > 0) for j, s in enumerate(_word_starts(tk, TITLE_WORD_STARTS))]
        for kind, counts in (("brand", brands), ("category", cats)):
            for k, n in counts.items():
                entries.append((display[(kind, k)], kind, PRIORS[kind] + math.log1p(n), -1))
                keyed += [(s, len(entries) - 1, j > 0) for j, s in enumerate(_word_starts(k))]
        return _Table(entries, keyed), generation

    def _queries_table(self) -> _Table:
        with self._lock:
            if self._query_table is None or self._query_version != self.queries.version:
                self._query_version = self.queries.version
                snap = self.queries.snapshot(self.min_query_users)
                entries = [(text, "query", PRIORS["query"] + math.log1p(n), -1) for _, text, n in snap]
                self._query_table = _Table(entries, [(k, i, False) for i, (k, _, _) in enumerate(snap)])
            return self._query_table

    def rebuild(self) -> None:
        """Re-read titles, brands and categories from the live catalog (blocking)."""
        while True:
            table, generation = self._build_catalog()
            with self.index.lock, self._lock:
                if generation == self.index.generation:  # else labels were renumbered meanwhile: again
                    self._catalog = table
                    return

    def _relabel(self, mapping: np.ndarray) -> None:
        with self._lock:
            table = self._catalog
            table.entries = [(text, kind, score, -1 if label == -1 else int(mapping[label]) if label >= 0 and
                              mapping[label] >= 0 else -2) for text, kind, score, label in table.entries]

    def wait(self) -> None:
        """Block until a background rebuild in flight (if any) is done."""
        thread = self._thread
        if thread is not None:
            thread.join()

    def _on_update(self, op: str, labels: np.ndarray) -> None:
        if op == "relabel":
            self._relabel(labels)
            return
        if op != "upsert":
            return  # deleted titles are filtered at query time
        if not self.background:
            self._dirty = True
            return
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._rebuild_loop, name="suggest-rebuild", daemon=True)
            self._dirty = True
            self._thread.start()
        else:
            self._dirty = True  # the running loop will go round once more

    def _rebuild_loop(self) -> None:
        while self._dirty:
            self._dirty = False
            self.rebuild()

    # ---- reads ---------------------------------------------------------------------------------
    def suggest(self, prefix: str, k: int = 10) -> list[Suggestion]:
        """Up to ``k`` completions of ``prefix``, best first, each text once."""
        if self._dirty and not self.background:
            self._dirty = False
            self.rebuild()
        p = key(prefix)
        if not p:
            return []
        tables = (self._queries_table(), self._catalog)
        found = self._collect(tables, [p], 0.0, SCAN_LIMIT)
        if len(found) < k and len(p) >= 3:
            # each variant reads only a few keys: ~40 variants per character are looked up
            fuzzy = self._collect(tables, sorted(_edits1(p)), TYPO_PENALTY, TYPO_SCAN_LIMIT)
            found.update({t: v for t, v in fuzzy.items() if t not in found})
        ranked = sorted(found.values(), key=lambda s: (-s.score, s.kind, s.text))
        return ranked[:k]

    def _collect(self, tables, prefixes: Iterable[str], penalty: float, limit: int) -> dict[str, Suggestion]:
        alive = self.index.table.alive.view
        out: dict[str, Suggestion] = {}
        for p in prefixes:
            for table in tables:
                for score, e in table.matches(p, limit):
                    text, kind, _, label = table.entries[e]
                    if label < -1 or (label >= 0 and not alive[label]):  # -2: retired before a renumbering
                        continue
                    s = round(score - penalty, 4)
                    tk = text.casefold()
                    if tk not in out or out[tk].score < s:
                        out[tk] = Suggestion(text, kind, s)
        return out


def _edits1(word: str) -> set[str]:
    """Strings one edit from ``word`` (Norvig), at least 3 characters long."""
    splits = [(word[:i], word[i:]) for i in range(len(word) + 1)]
    deletes = [a + b[1:] for a, b in splits if b]
    transposes = [a + b[1] + b[0] + b[2:] for a, b in splits if len(b) > 1]
    replaces = [a + c + b[1:] for a, b in splits if b for c in _ALPHABET]
    inserts = [a + c + b for a, b in splits if b for c in _ALPHABET]  # appending = a longer prefix
    return {w for w in (*deletes, *transposes, *replaces, *inserts) if len(w.strip()) >= 3} - {word}
