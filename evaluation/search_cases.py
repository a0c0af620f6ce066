"""The search protocol's cases: review headlines as queries for the reviewed item (see
``evaluation.search_eval``), drawn deterministically, and the reviews each case holds out."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

AUTO_SUMMARY = re.compile(r"^\s*(one|two|three|four|five|[1-5])\s+stars?\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Case:
    review_id: str
    item_id: str
    query: str
    fold: int


def query_pool(reviews: pd.DataFrame) -> pd.DataFrame:
    """Reviews whose title can be a query (non-empty, 3+ characters, not an auto summary)."""
    t = reviews["title"].str.strip()
    return reviews[(t.str.len() >= 3) & ~t.str.match(AUTO_SUMMARY)]


def sample_cases(reviews: pd.DataFrame, n: int, seed: int, exclude: frozenset[str] = frozenset()) -> list[Case]:
    """``n`` cases, round-robin over items in a seeded order (the protocol: ``evaluation.search_eval``)."""
    pool = query_pool(reviews)
    pool = pool[~pool["review_id"].isin(exclude)]
    rng = np.random.default_rng(seed)
    pool = pool.iloc[rng.permutation(len(pool))]
    pool = pool.assign(_round=pool.groupby("item_id", sort=False).cumcount())
    item_order = {item: i for i, item in enumerate(pd.unique(pool["item_id"]))}
    pool = pool.assign(_item=pool["item_id"].map(item_order)).sort_values(["_round", "_item"], kind="stable")
    return [Case(r, i, q.strip(), int(f)) for r, i, q, f in
            zip(pool["review_id"][:n], pool["item_id"][:n], pool["title"][:n], pool["_round"][:n])]


def test_and_dev(reviews: pd.DataFrame, n_test: int, n_dev: int, seed: int) -> tuple[list[Case], list[Case]]:
    """A test and a dev sample from one draw of ``n_test + n_dev`` cases, split at random: the two
    come from the same distribution. (Drawing dev after test, from the reviews test left, gave dev
    the better-reviewed items: hybrid / BM25 MRR@10 was 1.31x on that dev and 1.04x / 1.09x on test.)"""
    cases = sample_cases(reviews, n_test + n_dev, seed)
    is_dev = np.zeros(len(cases), dtype=bool)
    is_dev[np.random.default_rng([seed, 61]).permutation(len(cases))[:n_dev]] = True
    return [c for c, d in zip(cases, is_dev) if not d], [c for c, d in zip(cases, is_dev) if d]


def twins(reviews: pd.DataFrame) -> dict[str, tuple[str, ...]]:
    """review id -> the ids of its twins: reviews of the same item with the same headline and body
    (Subscription Boxes has 396 reviews in such groups, posted twice by one shopper)."""
    key = reviews["title"].str.strip().str.lower() + "\0" + reviews["text"].str.strip().str.lower()
    dup = reviews.assign(_key=key)[key.duplicated(keep=False)]
    return {r: tuple(g["review_id"]) for _, g in dup.groupby(["item_id", "_key"], sort=False) for r in g["review_id"]}


def with_twins(held_out: set[str], twin_map: dict[str, tuple[str, ...]]) -> set[str]:
    """``held_out`` and every twin of its reviews: a held-out review's copy must leave the item too,
    or the query finds its own text."""
    return set(held_out).union(*(twin_map.get(r, ()) for r in held_out))
