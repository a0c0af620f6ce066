"""A learned model's item rows mapped to the index's labels, and the two reads every row-scored
source does: the best allowed rows of a score vector, and the scores of given labels.

MF (``retriever.mf``) and EASE (``retriever.ease``) score the items they were fitted on, one row
each; the index numbers its items by label, and an upsert gives an item a new label (compaction
renumbers all). ``ItemRows`` keeps the mapping, rebuilt only when the index changes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from indexer.results import top_labels
from indexer.store import ItemIndex

Array = np.ndarray


class ItemRows:
    """State: ``item_ids`` (n_rows,) of a model and their labels in the index, cached per index version."""

    def __init__(self, item_ids: Sequence[str]):
        self.item_ids = [str(i) for i in item_ids]
        self.row_of = {item: r for r, item in enumerate(self.item_ids)}
        # ((generation, n_labels), label of each row, row of each label)
        self._cache: tuple[tuple[int, int], Array, Array] | None = None

    def __len__(self) -> int:
        return len(self.item_ids)

    def mapping(self, index: ItemIndex) -> tuple[Array, Array]:
        """(label of each row (n_rows,) int64, -1: not in the index; row of each label (n_labels,), -1: none)."""
        version = (index.generation, index.table.n_labels)
        if self._cache is None or self._cache[0] != version:
            lab = np.array([index.table.label_of.get(i, -1) for i in self.item_ids], dtype=np.int64)
            row = np.full(index.table.n_labels, -1, dtype=np.int64)
            row[lab[lab >= 0]] = np.flatnonzero(lab >= 0)
            self._cache = (version, lab, row)
        return self._cache[1], self._cache[2]

    def rows_of(self, items: Sequence[str]) -> Array:
        """int64 rows of the ``items`` the model knows (unknown ones left out), first occurrence order."""
        seen = dict.fromkeys(self.row_of[i] for i in items if i in self.row_of)
        return np.fromiter(seen, np.int64, len(seen))


def top_rows(rows: ItemRows, index: ItemIndex, row_scores: Array, n: int, allowed: Array) -> tuple[Array, Array]:
    """The ``n`` best allowed items by ``row_scores`` (n_rows,) -> (labels, scores), best first, no padding."""
    labels = rows.mapping(index)[0]
    ok = labels >= 0
    ok[ok] = allowed[labels[ok]]
    if not ok.any():
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    scores = np.where(ok, row_scores, -np.inf).astype(np.float32)
    top = np.argpartition(-scores, min(n, len(scores) - 1))[:n] if n < len(scores) else np.arange(len(scores))
    out_l, out_s = top_labels(labels[top], scores[top], n)  # -inf (not allowed) becomes padding
    live = out_l >= 0
    return out_l[live], out_s[live]


def scores_at(rows: ItemRows, index: ItemIndex, score_rows, labels: Array) -> Array:
    """float32 (m,) scores of ``labels`` from ``score_rows(rows int64) -> (r,)``; NaN for items the
    model does not know."""
    row_of_label = rows.mapping(index)[1]
    labels = np.asarray(labels, dtype=np.int64)
    at = np.full(len(labels), -1, dtype=np.int64)
    valid = (labels >= 0) & (labels < len(row_of_label))
    at[valid] = row_of_label[labels[valid]]
    out = np.full(len(labels), np.nan, dtype=np.float32)
    known = at >= 0
    if known.any():
        out[known] = score_rows(at[known])
    return out
