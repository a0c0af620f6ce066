"""Similar items: nearest neighbours of an item's own vector, minus the item and its duplicates.

Duplicates are other listings of the same product: the same normalised title
(:meth:`indexer.table.ItemTable.duplicates_of`), or near-identical text, i.e. vectors at cosine
``NEAR_DUPLICATE`` or more. Both hold against the item and among the results: of several listings of
one product only the first, closest one is kept (on Magazine 2018, without this, the other editions
of a magazine fill its list, see tests/test_realdata.py).

MiniLM figures behind the threshold: the demo's duplicate listings of one product are 0.955-0.985
apart ("Hair Dryer 1875W, Black" / "1875W - Black" 0.965), its closest distinct products 0.922
(two teas of one brand) and 0.911 (men's and women's editions of a shoe).
"""

from __future__ import annotations

import numpy as np

from indexer.store import ItemIndex
from indexer.table import Filters

NEAR_DUPLICATE = 0.95


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


def duplicates_in(labels: np.ndarray, scores: np.ndarray, vectors: np.ndarray, keys: list[str], query_key: str,
                  threshold: float) -> set[int]:
    """Labels of one ranked row ``(labels, scores)`` that duplicate the query or a higher-ranked label
    kept before them: near-identical vectors (cosine >= ``threshold``; a score is the cosine to the
    query) or an equal non-empty title key. ``vectors``: unit ``(n_labels, d)``; ``keys[label]``."""
    dropped: set[int] = set()
    kept: list[int] = []
    seen = {query_key} - {""}
    for label, score in zip(labels.tolist(), scores.tolist()):
        if label < 0:
            continue
        if (score >= threshold or keys[label] in seen
                or (kept and float(np.max(vectors[kept] @ vectors[label])) >= threshold)):
            dropped.add(label)
        else:
            kept.append(label)
            seen.add(keys[label])
    return dropped


def similar_items(index: ItemIndex, item_ids: list[str], k: int = 10, filters: Filters | None = None,
                  exclude_duplicates: bool = True, near_duplicate: float = NEAR_DUPLICATE
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` items most similar to each of ``item_ids`` -> ``(labels, scores)``, ``(n, k)``.

    The item itself is never in its own list, nor (with ``exclude_duplicates``) its duplicates (see
    the module docstring; ``near_duplicate`` > 1 turns the text test off). Scores are cosine
    similarities. KeyError names an unknown id.
    """
    with index.lock:
        labels = index.table.labels(item_ids)
        same_title = [set(index.table.duplicates_of(label)) | {int(label)} if exclude_duplicates
                      else {int(label)} for label in labels]
        queries = index.vectors.view[labels]
        # Fetching k + |same title| is exact for those; near duplicates can take more: fetch again, doubled.
        fetch = k + max(len(e) for e in same_title) if len(same_title) else k
        while True:
            found = index.search(queries, fetch, filters)
            keys = index.table.title_keys if exclude_duplicates else []
            excluded = [e | duplicates_in(row_l, row_s, index.vectors.view, keys, keys[q], near_duplicate)
                        if exclude_duplicates else e for q, e, row_l, row_s in zip(labels, same_title, *found)]
            short = [int((row >= 0).sum()) - len(e & set(row.tolist())) < k and row[-1] >= 0
                     for row, e in zip(found[0], excluded)]
            if not any(short) or fetch >= index.table.n_labels:
                return drop_labels(*found, excluded, k)
            fetch = min(2 * fetch, index.table.n_labels)
