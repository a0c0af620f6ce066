"""Free-text search over the item index (semantic: the query embedded with the catalog's embedder)."""

from __future__ import annotations

import numpy as np

from indexer.embed import Embedder
from indexer.store import ItemIndex
from indexer.table import Filters


def dense_search(index: ItemIndex, embedder: Embedder, queries: list[str], k: int = 10,
                 filters: Filters | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` items per query by cosine similarity -> ``(labels, scores)``, ``(n_queries, k)``."""
    return index.search(embedder.encode(queries), k, filters)
