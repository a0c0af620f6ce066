"""Lexical retrieval: BM25 (the ``bm25s`` library) over item documents, in step with the ItemIndex.

Documents and queries are tokenised by ``retriever.search.tokens``.

Keeping in step: bm25s indexes are static, so :class:`LexicalIndex` is

- a *main* bm25s index over the live items at build time (doc ``j`` is item label ``main_labels[j]``),
- a *delta* of items upserted since: a small inverted list scored exactly with the same BM25
  formula and the main index's statistics (N, avgdl, df; a term the main index never saw counts its
  delta documents), so an item scores the same whether it sits in the main index or the delta,
- deletes and replaced items via the ItemIndex's live mask (``table.mask``), which also applies
  the business filters,
- a rebuild in a background thread once the delta or the dead share grows past a threshold; it
  swaps in under the index lock, keeping delta entries newer than its snapshot,
- label renumbering (``ItemIndex.compact_labels``): main and delta labels are mapped to the new
  ones; main documents of retired items map to -1 and stay masked (``_alive``) until a rebuild.

Scores are BM25 (Lucene variant, k1=1.5, b=0.75), non-negative; an item matching no query term is
not a result.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping, Sequence

import bm25s
import numpy as np

from indexer.results import empty, top_labels
from indexer.store import ItemIndex
from indexer.table import Filters

from .tokens import TITLE_WEIGHT, item_tokens, tokenize

K1, B = 1.5, 0.75
# Rebuild the main index once the delta holds this many items and this share of the main index...
REBUILD_MIN_DELTA = 256
REBUILD_DELTA_SHARE = 0.05
# ...or once this share of the main index's documents is dead (deleted or replaced).
REBUILD_DEAD_SHARE = 0.25

def bm25_idf(df: np.ndarray | float, n_docs: int) -> np.ndarray | float:
    """Lucene BM25 idf: ``log(1 + (N - df + 0.5) / (df + 0.5))`` (bm25s's "lucene" method)."""
    df = np.asarray(df, dtype=np.float64)
    return np.log(1 + (n_docs - df + 0.5) / (df + 0.5))  # log(1 + x), not log1p: bitwise like bm25s


def bm25_tf(tf: np.ndarray | float, doc_len: np.ndarray | float, avg_len: float,
            k1: float = K1, b: float = B) -> np.ndarray | float:
    """BM25 term-frequency saturation ``tf / (k1 * ((1 - b) + b * dl / avgdl) + tf)``.

    Same operation order and dtypes (float32 tf, float64 lengths) as bm25s, so scores match bitwise.
    """
    tf = np.asarray(tf, dtype=np.float32)
    return tf / (k1 * ((1 - b) + b * doc_len / np.float64(avg_len)) + tf)


class _Main:
    """One static bm25s index and the statistics the delta needs to score like it."""

    def __init__(self, labels: np.ndarray, docs: list[list[str]], cut: int, k1: float = K1, b: float = B):
        self.labels = labels  # int64 (n_docs,): item label of each bm25s document
        self._pos: np.ndarray | None = None  # label -> document position, built on first use
        self.stale = np.zeros(len(labels), dtype=bool)  # documents whose text changed since (now in the delta)
        self.cut = cut        # labels below this were considered; newer ones stay in the delta
        self.k1, self.b = k1, b
        self.n_docs = len(docs)
        self.avg_len = float(np.mean([len(d) for d in docs])) if docs else 1.0
        self.bm25: bm25s.BM25 | None = None
        self.vocab: dict[str, int] = {}
        self.df = np.zeros(0, dtype=np.int64)
        if self.n_docs and any(docs):
            self.bm25 = bm25s.BM25(k1=k1, b=b, method="lucene")
            self.bm25.index(docs, show_progress=False)
            self.vocab = self.bm25.vocab_dict
            self.df = np.diff(self.bm25.scores["indptr"]).astype(np.int64)

    def scores(self, weights: Mapping[str, float]) -> np.ndarray:
        """float32 ``(n_docs,)``: sum over terms of ``weight * BM25(term, doc)``."""
        out = np.zeros(self.n_docs, dtype=np.float32)
        if self.bm25 is None:
            return out
        s = self.bm25.scores
        for term, w in weights.items():
            col = self.vocab.get(term)
            if col is None:
                continue
            lo, hi = s["indptr"][col], s["indptr"][col + 1]
            # Each document appears once per term column, so fancy-index += is exact here.
            out[s["indices"][lo:hi]] += np.float32(w) * s["data"][lo:hi]
        return out

    def doc_freq(self, term: str) -> int:
        col = self.vocab.get(term)
        return 0 if col is None else int(self.df[col])

    def positions(self, labels: np.ndarray) -> np.ndarray:
        """int64 document position of each label; -1 for labels this index does not hold."""
        if self._pos is None:
            live = self.labels >= 0
            self._pos = np.full(int(self.labels[live].max(initial=-1)) + 1, -1, dtype=np.int64)
            self._pos[self.labels[live]] = np.flatnonzero(live)
        labels = np.asarray(labels, dtype=np.int64)
        out = np.full(len(labels), -1, dtype=np.int64)
        inside = (labels >= 0) & (labels < len(self._pos))
        out[inside] = self._pos[labels[inside]]
        return out

    def docs_with(self, term: str) -> np.ndarray:
        """int (df,) positions of the documents holding ``term``, ascending."""
        col = self.vocab.get(term)
        if col is None or self.bm25 is None:
            return np.zeros(0, dtype=np.int64)
        s = self.bm25.scores
        return s["indices"][s["indptr"][col]:s["indptr"][col + 1]]


class LexicalIndex:
    """BM25 over an :class:`ItemIndex`'s items, labels aligned with it, updated through ``subscribe``.

    ``extra_text``: more text per item id (e.g. its reviews) appended to the item's document.
    It is read at build, rebuild and upsert time, so later changes to the mapping are seen then.
    ``background_rebuild``: rebuild in a thread (service) or inline in the update call (tests,
    batch jobs). ``rebuild_min_delta``: the smallest delta that triggers a rebuild.
    """

    def __init__(self, index: ItemIndex, extra_text: Mapping[str, str] | None = None, *,
                 title_weight: int = TITLE_WEIGHT, background_rebuild: bool = True,
                 rebuild_min_delta: int = REBUILD_MIN_DELTA, k1: float = K1, b: float = B):
        self.index = index
        self.extra_text = extra_text if extra_text is not None else {}
        self.title_weight = title_weight
        self.background_rebuild = background_rebuild
        self.rebuild_min_delta = rebuild_min_delta
        self.k1, self.b = k1, b
        self._delta_postings: dict[str, dict[int, int]] = {}  # term -> {label: tf}
        self._delta_len: dict[int, int] = {}                    # label -> document length
        self._delta_terms: dict[int, frozenset[str]] = {}       # label -> its distinct terms
        self._rebuilding: threading.Thread | None = None
        self.rebuilds = 0
        with index.lock:
            self._main = self._build_main(*self._snapshot()[:3])
            index.subscribe(self._on_update)

    # ---- building ------------------------------------------------------------------------------
    def tokens_of(self, label: int, records: list[dict] | None = None) -> list[str]:
        """BM25 tokens of the item with ``label`` (any label held, live or not) in ``records``
        (default: the index's table now)."""
        rec = (self.index.table.records if records is None else records)[label]
        return item_tokens(rec, self.extra_text.get(rec["item_id"], ""), self.title_weight)

    def _snapshot(self) -> tuple[np.ndarray, int, list[dict], int]:
        """Live labels now, the label count and records they were taken at, and the index's label
        generation (call under the index lock)."""
        table = self.index.table
        return (np.flatnonzero(table.alive.view).astype(np.int64), table.n_labels, table.records,
                self.index.generation)

    def _build_main(self, labels: np.ndarray, cut: int, records: list[dict]) -> _Main:
        return _Main(labels, [self.tokens_of(int(label), records) for label in labels], cut, self.k1, self.b)

    def rebuild(self) -> None:
        """Rebuild the main index over the live items now (blocking) and empty the delta up to then."""
        with self.index.lock:
            labels, cut, records, generation = self._snapshot()
        # Records never change once written (an upsert gets a new label), so tokenising them
        # outside the lock is safe; updates meanwhile land in the delta and survive the swap.
        main = self._build_main(labels, cut, records)
        with self.index.lock:
            if generation == self.index.generation:  # else labels were renumbered: built on old ones
                self._swap(main)

    def _swap(self, main: _Main) -> None:
        self._main = main
        for label in [lb for lb in self._delta_len if lb < main.cut]:
            self._drop_delta(label)
        self.rebuilds += 1

    def wait(self) -> None:
        """Block until a background rebuild in flight (if any) has been swapped in."""
        thread = self._rebuilding
        if thread is not None:
            thread.join()

    def _alive(self, labels: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """``mask[labels]`` where label -1 (a document of an item retired before a renumbering) is False."""
        return np.append(mask, False)[labels]

    def _maybe_rebuild(self) -> None:
        main = self._main
        dead = main.n_docs - int(self._alive(main.labels, self.index.table.alive.view).sum()) if main.n_docs else 0
        big_delta = len(self._delta_len) >= max(self.rebuild_min_delta, REBUILD_DELTA_SHARE * main.n_docs)
        many_dead = main.n_docs >= self.rebuild_min_delta and dead >= REBUILD_DEAD_SHARE * main.n_docs
        if not (big_delta or many_dead) or (self._rebuilding is not None and self._rebuilding.is_alive()):
            return
        if not self.background_rebuild:
            self._swap(self._build_main(*self._snapshot()[:3]))  # we hold the index lock already
            return
        self._rebuilding = threading.Thread(target=self.rebuild, name="bm25-rebuild", daemon=True)
        self._rebuilding.start()

    def refresh(self, item_ids) -> None:
        """Re-read the text of live ``item_ids`` (their ``extra_text`` changed, e.g. enrichment
        finished): each moves to the delta, its main-index document is ignored until the next rebuild."""
        with self.index.lock:
            main = self._main
            pos = {int(lb): j for j, lb in enumerate(main.labels)}
            for item in item_ids:
                label = self.index.table.label_of.get(item)
                if label is None:
                    continue
                if label in pos:
                    main.stale[pos[label]] = True
                self._drop_delta(label)
                self._add_delta(label)

    # ---- updates (called by ItemIndex under its lock) --------------------------------------------
    def _on_update(self, op: str, labels: np.ndarray) -> None:
        if op == "relabel":
            self._relabel(labels)
            return
        if op == "upsert":
            for label in labels:
                self._add_delta(int(label))
        else:
            for label in labels:
                self._drop_delta(int(label))  # a dead main-index document is masked at query time
        self._maybe_rebuild()

    def _relabel(self, mapping: np.ndarray) -> None:
        """Follow ``ItemIndex.compact_labels``: ``mapping[old]`` is the new label (-1: retired)."""
        main = self._main
        main.cut = int((mapping[: main.cut] >= 0).sum())  # order is kept: labels below the cut stay below
        main.labels = np.where(main.labels >= 0, mapping[np.maximum(main.labels, 0)], -1)
        main._pos = None
        remap = {old: int(mapping[old]) for old in self._delta_len if mapping[old] >= 0}
        self._delta_len = {remap[old]: n for old, n in self._delta_len.items() if old in remap}
        self._delta_terms = {remap[old]: t for old, t in self._delta_terms.items() if old in remap}
        self._delta_postings = {term: moved for term, postings in self._delta_postings.items()
                                if (moved := {remap[old]: tf for old, tf in postings.items() if old in remap})}

    def _add_delta(self, label: int) -> None:
        tokens = self.tokens_of(label)
        tfs = Counter(tokens)
        self._delta_len[label] = len(tokens)
        self._delta_terms[label] = frozenset(tfs)
        for term, tf in tfs.items():
            self._delta_postings.setdefault(term, {})[label] = tf

    def _drop_delta(self, label: int) -> None:
        if self._delta_len.pop(label, None) is None:
            return
        for term in self._delta_terms.pop(label):
            postings = self._delta_postings.get(term)
            if postings is not None:
                postings.pop(label, None)
                if not postings:
                    del self._delta_postings[term]

    # ---- reads ---------------------------------------------------------------------------------
    @property
    def delta_size(self) -> int:
        return len(self._delta_len)

    def holds(self, labels: np.ndarray, terms: Sequence[str]) -> np.ndarray:
        """bool ``(len(labels), len(terms))``: whether each item's BM25 document holds each term,
        read from the postings (re-tokenising a hit's text per query cost ~100 ms per search on
        Subscription Boxes, whose documents carry every review). An item in the delta (upserted
        or refreshed since the build) answers from its delta document."""
        labels = np.asarray(labels, dtype=np.int64)
        out = np.zeros((len(labels), len(terms)), dtype=bool)
        with self.index.lock:
            main = self._main
            pos = main.positions(labels)
            for j, term in enumerate(terms):
                out[:, j] = (pos >= 0) & np.isin(pos, main.docs_with(term))
            for i, label in enumerate(labels.tolist()):
                delta = self._delta_terms.get(label)
                if delta is not None:
                    out[i] = [t in delta for t in terms]
        return out

    def doc_freq(self, term: str) -> int:
        """Documents holding ``term`` (main index at build time + live delta)."""
        return self._main.doc_freq(term) + len(self._delta_postings.get(term, ()))

    @property
    def n_docs(self) -> int:
        """Documents in the main index (the N of its idf)."""
        return self._main.n_docs

    def idf(self, term: str) -> float:
        """BM25 idf of ``term`` as scored here (an unseen term counts as a one-document term)."""
        return float(bm25_idf(max(self.doc_freq(term), 1), max(self._main.n_docs, 1)))

    def vocabulary(self) -> Counter:
        """``{term: document frequency}`` over the main index and the delta."""
        main = self._main
        out = Counter({t: int(main.df[i]) for t, i in main.vocab.items() if t})
        for term, postings in self._delta_postings.items():
            out[term] += len(postings)
        return out

    def _delta_scores(self, weights: Mapping[str, float]) -> dict[int, float]:
        main = self._main
        n_docs = max(main.n_docs, 1)
        out: dict[int, float] = {}
        for term, w in weights.items():
            postings = self._delta_postings.get(term)
            if not postings:
                continue
            df = main.doc_freq(term) or len(postings)
            idf = np.float32(bm25_idf(df, n_docs))  # bm25s keeps idf as float32
            for label, tf in postings.items():
                # float32 like the main index's precomputed scores, so an item scores bitwise the
                # same in the delta as it would in the main index under the same statistics
                s = np.float32(idf * bm25_tf(tf, self._delta_len[label], main.avg_len, main.k1, main.b))
                out[label] = out.get(label, np.float32(0)) + np.float32(w) * s
        return out

    def score_labels(self, weights: Mapping[str, float], filters: Filters | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
        """Every live item passing ``filters`` that matches: ``(labels int64 (m,), scores float32 (m,))``.

        ``weights``: ``{token: weight}`` (query tokens weigh 1, expansion terms less). Unordered.
        """
        with self.index.lock:  # mask, main index and delta from one moment
            allowed = self.index.table.mask(filters)
            main = self._main
            s = main.scores(weights)
            hit = (s > 0) & self._alive(main.labels, allowed) & ~main.stale
            labels, scores = main.labels[hit], s[hit]
            delta = self._delta_scores(weights)
        if delta:  # every delta label is below len(allowed): both were read under the lock
            d_labels = np.fromiter(delta, dtype=np.int64, count=len(delta))
            d_scores = np.fromiter(delta.values(), dtype=np.float32, count=len(delta))
            keep = (d_scores > 0) & allowed[d_labels]
            labels = np.concatenate([labels, d_labels[keep]])
            scores = np.concatenate([scores, d_scores[keep]])
        return labels, scores

    def search(self, queries: Sequence[str] | Sequence[Mapping[str, float]], k: int = 10,
               filters: Filters | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` items per query by BM25 -> ``(labels, scores)``, each ``(n_queries, k)``.

        A query is a string (tokenised here, each token weight 1) or a ``{token: weight}`` map.
        """
        out_l, out_s = empty(len(queries), k)
        for i, q in enumerate(queries):
            weights = query_weights(q) if isinstance(q, str) else q
            out_l[i], out_s[i] = top_labels(*self.score_labels(weights, filters), k)
        return out_l, out_s


def query_weights(text: str) -> dict[str, float]:
    """``{token: weight}`` of a typed query: each distinct token once, weight 1 (repeats add nothing)."""
    return dict.fromkeys(tokenize(text), 1.0)
