"""MemoryIndex: the catalog in memory (item table, unit vectors, a vector index, review texts and
pools): upserts, deletes, filtered vector search and label renumbering. ``indexer.store.ItemIndex``
adds persistence (snapshots, the write-ahead log, a shared catalog feed) on top.

Every update is described by a log entry (a JSON-able dict, :meth:`MemoryIndex._log`), which
``ItemIndex`` writes before applying it and which :meth:`MemoryIndex._apply_entry` applies again.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager

import numpy as np
import pandas as pd

from . import pools as review_pools
from . import relabel
from .pools import ReviewPool
from .results import top_k
from .schema import make_items
from .snapshot import Manifest, fingerprint
from .table import Filters, GrowableArray, ItemTable
from .vectors import VectorIndex, make_index

# On an approximate index (HNSW, IVF), filters that leave at most this many items are answered by an
# exact scan of just those rows: a graph walk under a very selective filter may come back short.
# Larger subsets go through the index with an ID selector (copying them per query would cost more).
EXACT_SUBSET_MAX = 5_000
REVIEWS_KEPT = 3      # review texts kept per item, for explanations (the vectors use more)
REVIEW_CHARS = 600


class MemoryIndex:
    """The searchable catalog in memory. Thread-safe: one lock orders readers and writers."""

    def __init__(self, *, model: str, dim: int, kind: str = "flat", build: dict | None = None):
        self.model, self.dim, self.kind = model, dim, kind
        self.build_info = dict(build or {})
        self.created_at = time.time()
        self.table = ItemTable()
        self.vectors = GrowableArray((dim,), np.float32)
        self.index: VectorIndex = make_index(kind, dim)
        self.lock = threading.RLock()
        self.generation = 0  # bumped when compact_labels renumbers labels
        self._gate = relabel.LabelGate()  # reading() blocks vs. a relabel swap
        self._listeners: list[Callable[[str, np.ndarray], None]] = []
        self.reviews: dict[str, list[str]] = {}  # item_id -> a few review texts, for explanations
        self.pools: dict[str, ReviewPool] = {}  # item_id -> all its pooled review vectors (see build)

    def __len__(self) -> int:
        return len(self.table)

    # ---- hooks for persistence (indexer.store) ---------------------------------------------------
    def _log(self, entry: dict) -> None:
        """Record the update ``entry`` before it applies (called under the lock); here: nothing."""

    def _refresh(self) -> None:
        """Bring in others' updates before a delete decides whether the item exists; here: nothing."""

    # ---- updates -------------------------------------------------------------------------------
    def subscribe(self, listener: Callable[[str, np.ndarray], None]) -> None:
        """Call ``listener(op, labels)`` after every update, under the index lock.

        ``op`` is "upsert" (``labels``: the new labels), "delete" (the retired label) or "relabel"
        (:meth:`compact_labels`; ``labels``: int64 ``(old n_labels,)``, the new label of each old
        one, -1 for retired). Secondary indexes (BM25, caches) use it to stay in step.
        """
        self._listeners.append(listener)

    def unsubscribe(self, listener: Callable[[str, np.ndarray], None]) -> None:
        """Stop calling ``listener`` (a replaced model's tables); unknown listeners are ignored."""
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _notify(self, op: str, labels: np.ndarray) -> None:
        for listener in self._listeners:
            listener(op, labels)

    def add(self, items: pd.DataFrame, vectors: np.ndarray, reviews: Sequence[Sequence[str]] | None = None,
            pools: Sequence[ReviewPool | None] | None = None) -> None:
        """Upsert ``items`` (items schema) with their unit vectors, float32 ``(len(items), dim)``.

        ``reviews``: per item, its review texts; the first ``REVIEWS_KEPT`` (cut to
        ``REVIEW_CHARS``) are kept for explanations. ``pools``: per item, its review pool (None: no
        reviews). An upsert replaces both: :func:`indexer.build.upsert_items` merges new reviews.
        """
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.shape != (len(items), self.dim):
            raise ValueError(f"vectors have shape {vectors.shape}, expected ({len(items)}, {self.dim})")
        kept = [[t[:REVIEW_CHARS] for t in r[:REVIEWS_KEPT]] for r in (reviews or [()] * len(items))]
        pools = list(pools or [None] * len(items))
        with self.lock:
            entry = {"op": "upsert", "items": _records_json(items), "vectors": _b64(vectors)}
            if any(kept):
                entry["reviews"] = kept
            if any(p is not None for p in pools):
                entry["pools"] = [review_pools.to_json(p) for p in pools]
            self._log(entry)
            retired = [self.table.label_of[i] for i in items["item_id"] if i in self.table.label_of]
            for item_id, texts, pool in zip(items["item_id"], kept, pools):
                self.reviews.pop(item_id, None)
                self.pools.pop(item_id, None)
                if texts:
                    self.reviews[item_id] = texts
                if pool is not None and pool.count:
                    self.pools[item_id] = pool
            labels = self.table.append(items)
            self.vectors.extend(vectors)
            self.index.add(vectors)
            if retired:
                self._notify("delete", np.asarray(retired, dtype=np.int64))
            self._notify("upsert", labels)

    def delete(self, item_id: str) -> bool:
        """Delete ``item_id``; False if it was not in the index."""
        with self.lock:
            self._refresh()  # another worker may have just added it
            if item_id not in self.table.label_of:
                return False
            self._log({"op": "delete", "item_id": item_id})
            if item_id not in self.table.label_of:  # another worker's change, applied in _log, deleted it
                return False
            label = self.table.label_of[item_id]
            self.table.retire(item_id)
            self.reviews.pop(item_id, None)
            self.pools.pop(item_id, None)
            self._notify("delete", np.asarray([label], dtype=np.int64))
            return True

    def _apply_entry(self, entry: dict, where: str) -> None:
        """Apply a log entry (from :meth:`_log`, read back from a log or feed)."""
        if entry["op"] == "upsert":
            pools = [review_pools.from_json(p) for p in entry.get("pools") or []]
            self.add(make_items(entry["items"]), _unb64(entry["vectors"], self.dim), entry.get("reviews"),
                     pools or None)
        elif entry["op"] == "delete":
            self.delete(entry["item_id"])
        else:
            raise ValueError(f"{where}: unknown op {entry['op']!r}")

    # ---- reads -----------------------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int, filters: Filters | None = None,
               allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` live items for unit ``queries (n, dim)`` -> ``(labels, scores)``, each ``(n, k)``.

        ``allowed``: optional bool ``(n_labels,)`` mask, combined with ``filters`` (e.g. to leave out
        what the shopper already bought).
        """
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        with self.lock:
            mask = self.table.mask(filters)
            if allowed is not None:
                mask &= allowed[: len(mask)]
            n_allowed = int(mask.sum())
            approximate = self.index.kind in ("hnsw", "ivf", "milvus")
            if approximate and n_allowed <= EXACT_SUBSET_MAX and n_allowed < self.table.n_labels:
                return _exact_subset(self.vectors.view, queries, k, np.flatnonzero(mask))
            if self.index.kind == "milvus":  # filters run in Milvus as expressions; deleted rows are gone there
                return self.index.search(queries, k, None if allowed is None else mask, filters=filters)
            return self.index.search(queries, k, None if n_allowed == self.table.n_labels else mask)

    def vectors_of(self, item_ids: list[str]) -> np.ndarray:
        """Unit vectors of live ``item_ids`` (KeyError on an unknown id)."""
        with self.lock:
            return self.vectors.view[self.table.labels(item_ids)].copy()

    def manifest(self) -> Manifest:
        return Manifest(model=self.model, dim=self.dim, count=len(self), index_kind=self.kind,
                        created_at=self.created_at, catalog_fingerprint=self.fingerprint(),
                        build=self.build_info)

    def fingerprint(self) -> str:
        """sha256 over live items' ids and documents, in id order: equal catalogs, equal prints."""
        return fingerprint(self.table.live_frame())

    # ---- memory compaction (indexer.relabel) ------------------------------------------------------
    def reading(self) -> AbstractContextManager[None]:
        """Hold labels across calls: labels read inside this block keep naming the same items until
        it exits (the service wraps every request in one). Only :meth:`compact_labels` renumbers
        labels, and it waits for every open block to close; while it swaps (milliseconds) a new
        block waits."""
        return self._gate.reading()

    def retired_labels(self) -> int:
        """Labels of replaced or deleted items still held (memory that :meth:`compact_labels` frees)."""
        return self.table.n_labels - len(self.table)

    def can_relabel(self) -> bool:
        """Whether labels may be renumbered: not while Milvus holds the vectors (keyed by label)."""
        return self.index.kind != "milvus"

    def compact_labels(self, timeout_s: float = 2.0) -> bool:
        """Renumber the live items 0..n-1 in a fresh table, vector array and vector index and swap
        them in, so retired labels stop holding memory. The fresh structures are built outside the
        lock from a copy (copy-on-write); updates made meanwhile are applied to them before the swap.
        Listeners get ``("relabel", mapping)``. Returns False (nothing changed) when open
        :meth:`reading` blocks did not close within ``timeout_s``, or when labels must not change
        (:meth:`can_relabel`). Review texts and pools are keyed by item id: they stay as they are."""
        if not self.can_relabel():
            return False
        with self.lock:
            cut, live = self.table.n_labels, np.flatnonzero(self.table.alive.view)
            records = [self.table.records[i] for i in live]
            vectors = self.vectors.view[live].copy()
        table, store, index = relabel.fresh(records, vectors, self.kind, self.dim)
        with self._gate.swapping(timeout_s) as drained:
            if not drained:
                return False
            with self.lock:
                mapping = relabel.catch_up(self.table, self.vectors.view, live, cut, table, store, index)
                self.table, self.vectors, self.index = table, store, index
                self.generation += 1
                self._notify("relabel", mapping)
            return True


def _exact_subset(vectors, queries, k, subset):
    labels, scores = top_k(queries @ vectors[subset].T, k)
    if len(subset) == 0:  # nothing passes the filters: all padding (indexing subset would fail)
        return labels, scores
    return np.where(labels >= 0, subset[np.maximum(labels, 0)], -1), scores


def _records_json(items: pd.DataFrame) -> list[dict]:
    recs = make_items(items).to_dict("records")
    return [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()} for r in recs]


def _b64(x: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(x, dtype=np.float32).tobytes()).decode()


def _unb64(s: str, dim: int) -> np.ndarray:
    return np.frombuffer(base64.b64decode(s), dtype=np.float32).reshape(-1, dim)
