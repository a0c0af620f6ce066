"""Item documents: the text a transformer reads for each product.

The document puts the most telling fields first (title, brand, categories, attributes, then the
description) because the embedder truncates at its token window: what is cut is the tail of the
description, never the title.

Reviews are embedded separately (see :mod:`indexer.build`); :func:`review_digest` picks which ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd


def item_document(title: str, brand: str = "", categories: Sequence[str] = (),
                  attributes: Mapping[str, str] | None = None, description: str = "") -> str:
    """One product's text, most important field first.

    >>> item_document("Hair dryer 2000W", "Breeze", ["Beauty", "Hair Care"], {"color": "black"}, "Fast.")
    'Hair dryer 2000W. Brand: Breeze. Category: Beauty > Hair Care. color: black. Fast.'
    """
    parts = [title.strip()]
    if brand:
        parts.append(f"Brand: {brand.strip()}")
    if len(categories):
        parts.append("Category: " + " > ".join(c.strip() for c in categories))
    if attributes:
        parts.append("; ".join(f"{k}: {v}" for k, v in attributes.items()))
    if description:
        parts.append(description.strip())
    return ". ".join(p for p in parts if p)


def documents(items: pd.DataFrame) -> list[str]:
    """Documents for every row of an items frame (schema of :mod:`indexer.schema`)."""
    return [item_document(t, b, c, a, d) for t, b, c, a, d in zip(
        items["title"], items["brand"], items["categories"], items["attributes"], items["description"])]


def review_text(title: str, text: str) -> str:
    """A review as embedded: headline then body."""
    return f"{title.strip()}. {text.strip()}" if title.strip() else text.strip()


def review_digest(reviews: pd.DataFrame, max_per_item: int) -> dict[str, list[str]]:
    """The reviews that speak for each item: those with text, most helpful first, then newest.

    Returns ``{item_id: [review text, ...]}`` with at most ``max_per_item`` texts per item (0: all).
    Reviews without text (bare interactions) are skipped.
    """
    has_text = reviews["text"].str.strip().str.len() > 0
    r = reviews.loc[has_text, ["item_id", "title", "text", "helpful_votes", "timestamp"]]
    if r.empty or max_per_item < 0:
        return {}
    r = r.assign(_ts=r["timestamp"].fillna(-np.inf))
    r = r.sort_values(["item_id", "helpful_votes", "_ts"], ascending=[True, False, False], kind="stable")
    if max_per_item:
        r = r.groupby("item_id", sort=False).head(max_per_item)
    texts = [review_text(t, x) for t, x in zip(r["title"], r["text"])]
    out: dict[str, list[str]] = {}
    for item_id, text in zip(r["item_id"], texts):
        out.setdefault(item_id, []).append(text)
    return out
