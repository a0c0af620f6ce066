"""The one catalog schema every loader produces and every later stage reads.

A catalog is two pandas DataFrames with fixed columns and dtypes:

items (one row per product, ``item_id`` unique)
    item_id      str              the shop's id (ASIN for Amazon data)
    title        str              "" when unknown
    description  str              "" when unknown
    brand        str              "" when unknown
    categories   list[str]        most general first; [] when unknown
    price        float64          in the catalog's currency; NaN when unknown
    attributes   dict[str, str]   free key/value facts ("Color": "red"); {} when none
    in_stock     bool             True unless the source says otherwise
    created_at   float64          unix seconds; NaN when unknown

reviews (one row per user-item interaction; the text may be empty)
    review_id     str             unique; loaders derive one when the source has none
    item_id       str
    user_id       str
    rating        float64         1-5 stars; NaN when unknown
    title         str             the review headline / summary; "" when none
    text          str             the review body; "" for a bare interaction
    timestamp     float64         unix seconds; NaN when unknown (then file order is the time order)
    helpful_votes int64           0 when unknown

Rows of ``reviews`` keep the source's order, so sequence data without timestamps
(e.g. Beauty.txt) stays in chronological order per user.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

ITEM_COLUMNS: dict[str, str] = {
    "item_id": "str",
    "title": "str",
    "description": "str",
    "brand": "str",
    "categories": "object",
    "price": "float64",
    "attributes": "object",
    "in_stock": "bool",
    "created_at": "float64",
}

REVIEW_COLUMNS: dict[str, str] = {
    "review_id": "str",
    "item_id": "str",
    "user_id": "str",
    "rating": "float64",
    "title": "str",
    "text": "str",
    "timestamp": "float64",
    "helpful_votes": "int64",
}

_ITEM_DEFAULTS = {
    "title": "",
    "description": "",
    "brand": "",
    "price": np.nan,
    "in_stock": True,
    "created_at": np.nan,
}
_REVIEW_DEFAULTS = {"rating": np.nan, "title": "", "text": "", "timestamp": np.nan, "helpful_votes": 0}


class CatalogFormatError(ValueError):
    """A source file cannot be read as a catalog. Names the file, the line (1-based) and the field."""

    def __init__(self, path: str, line: int | None, field: str | None, reason: str):
        self.path, self.line, self.field, self.reason = str(path), line, field, reason
        where = self.path if line is None else f"{self.path}:{line}"
        what = f" field {field!r}:" if field else ""
        super().__init__(f"{where}:{what} {reason}")


class UnknownNameError(ValueError):
    """A format, dataset, model or index kind that is not a known one. Lists the known ones."""

    def __init__(self, what: str, name: str, known: Iterable[str], also: str = ""):
        known = list(known)
        close = difflib.get_close_matches(str(name).lower(), known, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        super().__init__(f"unknown {what} {name!r}{hint}; known: {', '.join(known)}{also}")


@dataclass(frozen=True)
class Catalog:
    """Items and reviews in the schema above. ``source`` says where they came from (for reports).

    ``stock_known``: whether the source says which items are in stock. When it does not (the public
    Amazon sets), ``in_stock`` is True by default only, and the storefront must not claim stock.
    """

    items: pd.DataFrame
    reviews: pd.DataFrame = field(default_factory=lambda: empty_reviews())
    source: str = ""
    stock_known: bool = True


def _coerce(df: pd.DataFrame, columns: dict[str, str], defaults: dict) -> pd.DataFrame:
    df = df.copy()
    n = len(df)
    for col in columns:
        if col not in df.columns:
            if col == "categories":
                df[col] = [[] for _ in range(n)]
            elif col == "attributes":
                df[col] = [{} for _ in range(n)]
            else:
                df[col] = defaults[col]
    df = df[list(columns)]
    for col in ("categories", "attributes"):
        if col in df.columns:
            empty = list if col == "categories" else dict
            df[col] = [v if isinstance(v, empty) else empty() for v in df[col]]
    for col, default in defaults.items():
        if col in df.columns:
            df[col] = df[col].fillna(default) if not (isinstance(default, float) and np.isnan(default)) else df[col]
    for col, dtype in columns.items():
        if dtype == "str":
            df[col] = df[col].astype(str)
        elif dtype != "object":
            df[col] = df[col].astype(dtype)
    return df.reset_index(drop=True)


def make_items(df: pd.DataFrame | list[dict]) -> pd.DataFrame:
    """Coerce a frame (or list of records) holding at least ``item_id`` to the items schema."""
    df = pd.DataFrame(df) if not isinstance(df, pd.DataFrame) else df
    return _coerce(df, ITEM_COLUMNS, _ITEM_DEFAULTS)


def make_reviews(df: pd.DataFrame | list[dict]) -> pd.DataFrame:
    """Coerce a frame (or list of records) holding at least item_id/user_id to the reviews schema.

    A missing ``review_id`` becomes ``"{user_id}:{item_id}:{row}"`` so every row stays addressable.
    """
    df = pd.DataFrame(df) if not isinstance(df, pd.DataFrame) else df.copy()
    if "review_id" not in df.columns:
        df["review_id"] = [f"{u}:{i}:{n}" for n, (u, i) in enumerate(zip(df["user_id"], df["item_id"]))]
    return _coerce(df, REVIEW_COLUMNS, _REVIEW_DEFAULTS)


def empty_items() -> pd.DataFrame:
    return make_items(pd.DataFrame({"item_id": pd.Series([], dtype=str)}))


def empty_reviews() -> pd.DataFrame:
    return make_reviews(pd.DataFrame({"item_id": [], "user_id": [], "review_id": []}))
