"""Renumbering an index's labels (``ItemIndex.compact_labels``): live items 0..n-1 in fresh
structures, built from a copy, brought up to date and swapped in while no request holds labels.

Every upsert gives an item a new label and retires the old one; a retired label still holds its
vector (1.5 KB at 384-d, twice: array and FAISS) and its record, so memory grows with the number
of updates unless labels are renumbered.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pandas as pd

from .schema import ITEM_COLUMNS, make_items
from .table import GrowableArray, ItemTable
from .vectors import VectorIndex, make_index


class LabelGate:
    """Counts open :meth:`reading` blocks; :meth:`swapping` waits for them to close and holds new
    ones off while labels are swapped (milliseconds)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._pins, self._swapping = 0, False

    @contextmanager
    def reading(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._swapping)
            self._pins += 1
        try:
            yield
        finally:
            with self._cond:
                self._pins -= 1
                if self._pins == 0:
                    self._cond.notify_all()

    @contextmanager
    def swapping(self, timeout_s: float) -> Iterator[bool]:
        """Yields whether every open reading block closed within ``timeout_s`` (swap only if so)."""
        with self._cond:
            self._swapping = True
            drained = self._cond.wait_for(lambda: self._pins == 0, timeout_s)
        try:
            yield drained
        finally:
            with self._cond:
                self._swapping = False
                self._cond.notify_all()


def fresh(records: list[dict], vectors: np.ndarray, kind: str,
          dim: int) -> tuple[ItemTable, GrowableArray, VectorIndex]:
    """A table, vector array and vector index holding ``records`` with their unit ``vectors``
    float32 ``(n, dim)`` under labels 0..n-1."""
    table = ItemTable()
    table.append(make_items(pd.DataFrame(records, columns=list(ITEM_COLUMNS))))
    store = GrowableArray((dim,), np.float32, capacity=max(1024, len(vectors)))
    store.extend(vectors)
    index = make_index(kind, dim)
    if len(vectors):
        index.add(vectors)
    return table, store, index


def catch_up(old: ItemTable, old_vectors: np.ndarray, copied: np.ndarray, cut: int,
             table: ItemTable, store: GrowableArray, index: VectorIndex) -> np.ndarray:
    """Apply to the fresh structures what changed in ``old`` since labels ``copied`` (of the first
    ``cut``) were copied: items retired meanwhile, labels added meanwhile. Returns the mapping, int64
    ``(old.n_labels,)``: the new label of each old one, -1 for retired ones (call under the lock)."""
    for old_label in copied:
        if not old.alive.view[old_label]:
            table.retire(old.records[old_label]["item_id"])
    later = [lab for lab in range(cut, old.n_labels) if old.alive.view[lab]]
    if later:
        table.append(make_items([old.records[lab] for lab in later]))
        store.extend(old_vectors[later])
        index.add(old_vectors[later])
    mapping = np.full(old.n_labels, -1, dtype=np.int64)
    for item_id, label in table.label_of.items():
        mapping[old.label_of[item_id]] = label
    return mapping
