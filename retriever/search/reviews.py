"""Review match: how close a query is to what an item's own reviews say, one review at a time.

The index vector of an item pools its description and all its reviews into one vector; a review
headline used as a query is often closest to one or two reviews and lost in the mean. For each
search candidate, ``match = mean of its best ``top`` review cosines`` (the reviews the index keeps
for explanations, ``ItemIndex.reviews``); the engine adds ``review_weight * minmax(match)`` to the
max-normalised fused score (``SearchConfig.review_weight``).

Vectors: the kept review texts embedded once (cached on disk by content, like the vocabulary) and
kept in step with upserts: a new item's reviews are embedded in a background thread (until then it
has no review match, as an item without reviews).
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from indexer.embed import Embedder
from indexer.store import ItemIndex

from .expansion import embed_cached


class ReviewVectors:
    """``item_id -> float32 (n_reviews, dim)`` unit rows of the item's kept reviews."""

    def __init__(self, index: ItemIndex, embedder: Embedder, cache_dir: str | Path | None = None,
                 vectors: dict[str, np.ndarray] | None = None, background: bool = True):
        self.index, self.embedder, self.cache_dir, self.background = index, embedder, cache_dir, background
        self.vectors: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()
        self._pending: list[str] = []
        self._thread: threading.Thread | None = None
        if vectors is not None:
            self.vectors = dict(vectors)
        else:
            with index.lock:
                ids = list(index.table.label_of)
                texts = {i: list(index.reviews.get(i, [])) for i in ids}
            self._embed(texts)
        index.subscribe(self._on_update)

    def _embed(self, texts: dict[str, list[str]]) -> None:
        flat = [t for ts in texts.values() for t in ts]
        vecs = embed_cached(self.embedder, flat, self.cache_dir) if flat else np.zeros((0, self.embedder.dim))
        out, start = {}, 0
        for item, ts in texts.items():
            out[item] = np.asarray(vecs[start:start + len(ts)], dtype=np.float32)
            start += len(ts)
        with self._lock:
            self.vectors.update(out)

    def _on_update(self, op: str, labels: np.ndarray) -> None:
        ids = [self.index.table.records[int(lb)]["item_id"] for lb in labels]
        with self._lock:
            for i in ids:
                self.vectors.pop(i, None)  # replaced or deleted: its old reviews no longer count
        if op != "upsert":
            return
        with self._lock:
            self._pending += ids
            start = self._thread is None or not self._thread.is_alive()
        if not self.background:
            self._drain()
        elif start:
            self._thread = threading.Thread(target=self._drain, name="review-vectors", daemon=True)
            self._thread.start()

    def _drain(self) -> None:
        while True:
            with self._lock:
                ids, self._pending = self._pending, []
            if not ids:
                return
            with self.index.lock:
                texts = {i: list(self.index.reviews.get(i, [])) for i in ids if i in self.index.table.label_of}
            self._embed(texts)

    def wait(self) -> None:
        thread = self._thread
        if thread is not None:
            thread.join()

    def match(self, item_ids: list[str], query_vec: np.ndarray, top: int = 3) -> np.ndarray:
        """float32 ``(len(item_ids),)``: mean of each item's ``top`` best review cosines to the unit
        ``query_vec`` (0 for an item without reviews)."""
        q = np.asarray(query_vec, dtype=np.float32)
        out = np.zeros(len(item_ids), dtype=np.float32)
        with self._lock:
            rows = [self.vectors.get(i) for i in item_ids]
        for j, v in enumerate(rows):
            if v is not None and len(v):
                sims = v @ q
                out[j] = np.sort(sims)[-top:].mean()
        return out
