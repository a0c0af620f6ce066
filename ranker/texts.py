"""The texts the cross-encoder reads, built the same way in training and at serving time: an item
(title, brand, most specific category) and a shopper's context (a query, stated interests, then the
most recent items, newest first, each cut to a few words)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

Array = np.ndarray


def item_text(title: str, brand: str = "", categories: Sequence[str] = (), max_words: int | None = None) -> str:
    """The short text the reranker reads for one item: title, brand, most specific category.

    ``max_words`` cuts the title (the brand and category are kept: they are short and telling).

    >>> item_text("Matte red lipstick long lasting", "Rouge", ["Beauty", "Makeup", "Lips"], max_words=3)
    'Matte red lipstick | Rouge | Lips'
    """
    words = title.split()
    t = " ".join(words[:max_words]) if max_words is not None else " ".join(words)
    parts = [t, brand.strip(), categories[-1].strip() if len(categories) else ""]
    return " | ".join(p for p in parts if p)


def item_texts(items: pd.DataFrame, item_ids: Sequence[str], max_words: int | None = None) -> list[str]:
    """:func:`item_text` for each of ``item_ids`` (an items frame in the catalog schema).

    Ids missing from ``items`` get the id itself as text, so the lists stay aligned.
    """
    by_id = {str(i): (t, b, c) for i, t, b, c in zip(items["item_id"], items["title"], items["brand"],
                                                       items["categories"])}
    return [item_text(*by_id[i], max_words=max_words) if i in by_id else str(i) for i in map(str, item_ids)]


def context_text(history_texts: Sequence[str], interests: Sequence[str] = (), query: str = "") -> str:
    """The shopper's side of a pair. ``history_texts`` newest first, already cut per item.

    >>> context_text(["red lipstick | Rouge", "lip liner"], ["vegan makeup"], "gloss")
    'search: gloss | interests: vegan makeup | recent: red lipstick | Rouge ; lip liner'
    """
    parts = []
    if query.strip():
        parts.append(f"search: {query.strip()}")
    if len(interests):
        parts.append("interests: " + ", ".join(i.strip() for i in interests))
    if len(history_texts):
        parts.append("recent: " + " ; ".join(history_texts))
    return " | ".join(parts)


def history_context(history: Array, short_texts: Sequence[str], n_items: int, interests: Sequence[str] = (),
                    query: str = "") -> str:
    """Context of an item-index history (oldest first): its last ``n_items`` short texts, newest first."""
    recent = [short_texts[i] for i in np.asarray(history)[::-1][:n_items]]
    return context_text(recent, interests, query)
