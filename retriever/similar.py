"""Similar items: nearest neighbours of an item's own vector, minus the item and its duplicates."""

from __future__ import annotations

import numpy as np

from indexer.store import ItemIndex
from indexer.table import Filters


def drop_labels(labels: np.ndarray, scores: np.ndarray, excluded: list[set[int]], k: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """Remove ``excluded[i]`` from row ``i`` of ``(labels, scores)`` and keep the first ``k``.

    Rows keep their order; the result is padded with -1 / -inf to shape ``(n, k)``.
    """
    out_l = np.full((len(labels), k), -1, dtype=np.int64)
    out_s = np.full((len(labels), k), -np.inf, dtype=np.float32)
    for i, (row_l, row_s) in enumerate(zip(labels, scores)):
        keep = [j for j, label in enumerate(row_l) if label >= 0 and label not in excluded[i]][:k]
        out_l[i, : len(keep)] = row_l[keep]
        out_s[i, : len(keep)] = row_s[keep]
    return out_l, out_s


def similar_items(index: ItemIndex, item_ids: list[str], k: int = 10, filters: Filters | None = None,
                  exclude_duplicates: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` items most similar to each of ``item_ids`` -> ``(labels, scores)``, ``(n, k)``.

    The item itself is never in its own list, nor (with ``exclude_duplicates``) other listings with
    the same normalised title. Scores are cosine similarities. KeyError names an unknown id.
    """
    with index.lock:
        labels = index.table.labels(item_ids)
        excluded = [set(index.table.duplicates_of(label)) | {int(label)} if exclude_duplicates
                    else {int(label)} for label in labels]
        queries = index.vectors.view[labels]
        # Fetching k + |excluded| is exact: at most |excluded| of those can be dropped.
        fetch = k + max(len(e) for e in excluded) if len(excluded) else k
        found = index.search(queries, fetch, filters)
    return drop_labels(*found, excluded, k)
