"""The item table: product metadata per label, with the masks that business filters need.

A label is an item's row in the vector index. Upserting an item gives it a fresh label and retires
the old one (``alive`` false), so labels are never reused and readers never see a row change under
them. Filters become boolean masks over labels, which every index kind accepts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .schema import ITEM_COLUMNS, make_items


@dataclass(frozen=True)
class Filters:
    """Business filters. Text matches are case-insensitive; a category matches any level of the path."""

    category: str | None = None
    brand: str | None = None
    min_price: float | None = None
    max_price: float | None = None
    in_stock: bool | None = None

    def is_empty(self) -> bool:
        return all(v is None for v in (self.category, self.brand, self.min_price, self.max_price,
                                       self.in_stock))


class GrowableArray:
    """A numpy array that appends in amortised O(1) (capacity doubling); ``view`` is the filled part."""

    def __init__(self, shape_tail: tuple[int, ...], dtype, capacity: int = 1024):
        self._data = np.zeros((capacity, *shape_tail), dtype=dtype)
        self._n = 0

    def extend(self, rows: np.ndarray) -> None:
        rows = np.asarray(rows, dtype=self._data.dtype)
        need = self._n + len(rows)
        if need > len(self._data):
            grown = np.zeros((max(need, 2 * len(self._data)), *self._data.shape[1:]), self._data.dtype)
            grown[: self._n] = self._data[: self._n]
            self._data = grown
        self._data[self._n: need] = rows
        self._n = need

    @property
    def view(self) -> np.ndarray:
        return self._data[: self._n]


def title_key(title: str) -> str:
    """Normalised title used to spot duplicate listings ("Red Lipstick " == "red  lipstick")."""
    return re.sub(r"\s+", " ", title).strip().casefold()


class ItemTable:
    """Item records by label, an id -> label map of live items, and per-field lookup structures."""

    def __init__(self) -> None:
        self.records: list[dict] = []
        self.label_of: dict[str, int] = {}
        self.alive = GrowableArray((), bool)
        self.price = GrowableArray((), np.float64)
        self.in_stock = GrowableArray((), bool)
        self.created_at = GrowableArray((), np.float64)
        self._by_brand: dict[str, list[int]] = {}
        self._by_category: dict[str, list[int]] = {}
        self._by_title: dict[str, list[int]] = {}
        self.title_keys: list[str] = []  # per label: title_key of its title, "" when it has none

    def __len__(self) -> int:
        return len(self.label_of)

    @property
    def n_labels(self) -> int:
        return len(self.records)

    def append(self, items: pd.DataFrame) -> np.ndarray:
        """Add rows (items schema); an id already present is retired first. Returns the new labels."""
        items = make_items(items)
        start = len(self.records)
        records = items.to_dict("records")
        for offset, rec in enumerate(records):
            label = start + offset
            old = self.label_of.get(rec["item_id"])
            if old is not None:
                self.alive.view[old] = False
            self.label_of[rec["item_id"]] = label
            self.records.append(rec)
            self._by_brand.setdefault(rec["brand"].casefold(), []).append(label)
            for cat in set(c.casefold() for c in rec["categories"]):
                self._by_category.setdefault(cat, []).append(label)
            key = title_key(rec["title"])
            self.title_keys.append(key)
            if key:
                self._by_title.setdefault(key, []).append(label)
        self.alive.extend(np.ones(len(records), bool))
        self.price.extend(items["price"].to_numpy(np.float64))
        self.in_stock.extend(items["in_stock"].to_numpy(bool))
        self.created_at.extend(items["created_at"].to_numpy(np.float64))
        return np.arange(start, start + len(records), dtype=np.int64)

    def retire(self, item_id: str) -> bool:
        """Mark ``item_id`` deleted. Returns False if it was not live."""
        label = self.label_of.pop(item_id, None)
        if label is None:
            return False
        self.alive.view[label] = False
        return True

    def get(self, item_id: str) -> dict | None:
        label = self.label_of.get(item_id)
        return None if label is None else self.records[label]

    def labels(self, item_ids: Iterable[str]) -> np.ndarray:
        """Labels of live ``item_ids``; raises KeyError naming the first unknown id."""
        out = []
        for item_id in item_ids:
            if item_id not in self.label_of:
                raise KeyError(item_id)
            out.append(self.label_of[item_id])
        return np.asarray(out, dtype=np.int64)

    def ids(self, labels: np.ndarray) -> list[list[str | None]]:
        """Item ids for a ``(n, k)`` label array; -1 padding becomes None."""
        return [[self.records[i]["item_id"] if i >= 0 else None for i in row] for row in labels]

    def duplicates_of(self, label: int) -> list[int]:
        """Labels of listings with the same (normalised, non-empty) title, ``label`` included."""
        title = self.records[label]["title"]
        return self._by_title.get(title_key(title), [label]) if title.strip() else [label]

    def mask(self, filters: Filters | None = None) -> np.ndarray:
        """bool ``(n_labels,)``: live items passing ``filters``."""
        m = self.alive.view.copy()
        if filters is None or filters.is_empty():
            return m
        if filters.brand is not None:
            m &= self._member(self._by_brand.get(filters.brand.casefold(), []))
        if filters.category is not None:
            m &= self._member(self._by_category.get(filters.category.casefold(), []))
        price = self.price.view
        if filters.min_price is not None:
            m &= price >= filters.min_price  # unknown (NaN) prices never pass a price filter
        if filters.max_price is not None:
            m &= price <= filters.max_price
        if filters.in_stock is not None:
            m &= self.in_stock.view == filters.in_stock
        return m

    def _member(self, labels: list[int]) -> np.ndarray:
        m = np.zeros(self.n_labels, dtype=bool)
        m[labels] = True
        return m

    def live_frame(self) -> pd.DataFrame:
        """Live items in label order, items schema plus a ``label`` column."""
        alive = np.flatnonzero(self.alive.view)
        df = pd.DataFrame([self.records[i] for i in alive], columns=list(ITEM_COLUMNS))
        df["label"] = alive
        return df
