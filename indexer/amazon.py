"""Readers for the public Amazon review formats, each returning a schema-coerced :class:`Catalog`.

* :func:`load_amazon2014` - 2014 "5-core" review JSON lines (+ optional 2014 metadata)
* :func:`load_amazon2018` - 2018 review JSON lines + ``meta_*.json.gz``
* :func:`load_amazon2023` - 2023 review JSONL + meta JSONL, joined on ``parent_asin``

RecBole / UniSRec processings of the same data are read by :mod:`indexer.recbole`. Loaders are
faithful: they keep what the source holds (duplicate metadata rows, HTML in titles, reviews of items
without metadata); :func:`indexer.clean.clean_catalog` fixes and counts all that. Every parse problem
raises :class:`CatalogFormatError` naming the file, the 1-based line and the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from .readers import (
    iter_json_lines,
    parse_date,
    parse_price,
    req_id,
    str_dict,
    str_list,
    text_of,
    to_count,
    to_float,
)
from .schema import Catalog, CatalogFormatError, make_items, make_reviews


def _items_from_reviews(reviews: pd.DataFrame) -> pd.DataFrame:
    return make_items(pd.DataFrame({"item_id": pd.unique(reviews["item_id"])}))


def _source(kind: str, note: str = "", **paths: Any) -> str:
    where = " ".join(f"{k}={v}" for k, v in paths.items() if v is not None)
    return f"{kind}: {where}" + (f" ({note})" if note else "")


# ----------------------------------------------------------------------------- Amazon 2014 / 2018


def _read_2014_2018_reviews(path: str | Path, year: int) -> pd.DataFrame:
    rows = []
    for n, rec in iter_json_lines(path):
        if year == 2014:
            helpful = rec.get("helpful")
            if helpful is not None and not (isinstance(helpful, list) and len(helpful) == 2):
                raise CatalogFormatError(str(path), n, "helpful", f"expected [up, total], got {helpful!r}")
            votes = to_count(helpful[0] if helpful else None, path, n, "helpful")
        else:
            votes = to_count(rec.get("vote"), path, n, "vote")
        rows.append({
            "item_id": req_id(rec, "asin", path, n),
            "user_id": req_id(rec, "reviewerID", path, n),
            "rating": to_float(rec.get("overall"), path, n, "overall"),
            "title": text_of(rec.get("summary")),
            "text": text_of(rec.get("reviewText")),
            "timestamp": to_float(rec.get("unixReviewTime"), path, n, "unixReviewTime"),
            "helpful_votes": votes,
        })
    if not rows:
        raise CatalogFormatError(str(path), None, None, "no reviews in file")
    return make_reviews(rows)


def _read_2014_2018_meta(path: str | Path) -> pd.DataFrame:
    rows = []
    for n, rec in iter_json_lines(path, python_literals=True):
        details = str_dict(rec.get("details"))
        attrs = {k: v for k, v in details.items() if k != "ASIN"}
        if isinstance(rec.get("salesRank"), dict):  # 2014: {"Beauty": 1234}
            attrs.update({f"salesRank {k}": str(v) for k, v in rec["salesRank"].items()})
        for key in ("main_cat", "tech1", "tech2"):
            if isinstance(rec.get(key), str) and rec[key].strip() and len(rec[key]) < 200:
                attrs[key] = rec[key].strip()
        rows.append({
            "item_id": req_id(rec, "asin", path, n),
            "title": text_of(rec.get("title")),
            "description": " ".join(s for s in (text_of(rec.get("description")),
                                                 text_of(rec.get("feature"))) if s),
            "brand": text_of(rec.get("brand")),
            "categories": str_list(rec.get("category", rec.get("categories"))),
            "price": parse_price(rec.get("price")),
            "attributes": attrs,
            "created_at": parse_date(rec.get("date") or details.get("Date First Available")),
        })
    return make_items(rows)


def load_amazon2014(reviews_path: str | Path, meta_path: str | Path | None = None) -> Catalog:
    """2014 5-core reviews (``reviews_X_5.json.gz``); with no metadata, items are the reviewed ASINs
    with empty text (their text has to come from the reviews)."""
    reviews = _read_2014_2018_reviews(reviews_path, 2014)
    if meta_path is None:
        return Catalog(_items_from_reviews(reviews), reviews,
                       _source("amazon2014", "no item metadata: items are the reviewed asins, text comes "
                               "from their reviews", reviews=reviews_path), stock_known=False)
    return Catalog(_read_2014_2018_meta(meta_path), reviews,
                   _source("amazon2014", reviews=reviews_path, meta=meta_path), stock_known=False)


def load_amazon2018(reviews_path: str | Path, meta_path: str | Path | None = None) -> Catalog:
    """2018 reviews (``X_5.json``) + ``meta_X.json.gz``. Items are all metadata rows as stored
    (duplicates and HTML included); without metadata, the reviewed ASINs with empty text."""
    reviews = _read_2014_2018_reviews(reviews_path, 2018)
    if meta_path is None:
        return Catalog(_items_from_reviews(reviews), reviews,
                       _source("amazon2018", "no item metadata", reviews=reviews_path), stock_known=False)
    return Catalog(_read_2014_2018_meta(meta_path), reviews,
                   _source("amazon2018", reviews=reviews_path, meta=meta_path), stock_known=False)


# ----------------------------------------------------------------------------- Amazon 2023


def load_amazon2023(reviews_path: str | Path, meta_path: str | Path | None = None) -> Catalog:
    """2023 review JSONL + meta JSONL; ``item_id`` is ``parent_asin`` (the join key), times in seconds."""
    rows = []
    for n, rec in iter_json_lines(reviews_path):
        key = "parent_asin" if rec.get("parent_asin") not in (None, "") else "asin"
        rows.append({
            "item_id": req_id(rec, key, reviews_path, n),
            "user_id": req_id(rec, "user_id", reviews_path, n),
            "rating": to_float(rec.get("rating"), reviews_path, n, "rating"),
            "title": text_of(rec.get("title")),
            "text": text_of(rec.get("text")),
            "timestamp": to_float(rec.get("timestamp"), reviews_path, n, "timestamp") / 1000.0,
            "helpful_votes": to_count(rec.get("helpful_vote"), reviews_path, n, "helpful_vote"),
        })
    if not rows:
        raise CatalogFormatError(str(reviews_path), None, None, "no reviews in file")
    reviews = make_reviews(rows)
    if meta_path is None:
        return Catalog(_items_from_reviews(reviews), reviews,
                       _source("amazon2023", "no item metadata", reviews=reviews_path), stock_known=False)
    items = []
    for n, rec in iter_json_lines(meta_path):
        details = str_dict(rec.get("details"))
        attrs = dict(details)
        if isinstance(rec.get("main_category"), str) and rec["main_category"].strip():
            attrs["main_category"] = rec["main_category"].strip()
        items.append({
            "item_id": req_id(rec, "parent_asin", meta_path, n),
            "title": text_of(rec.get("title")),
            "description": " ".join(s for s in (text_of(rec.get("description")),
                                                 text_of(rec.get("features"))) if s),
            "brand": text_of(rec.get("store")),
            "categories": str_list(rec.get("categories")),
            "price": parse_price(rec.get("price")),
            "attributes": attrs,
            "created_at": parse_date(details.get("Date First Available")),
        })
    return Catalog(make_items(items), reviews,
                   _source("amazon2023", "item_id = parent_asin", reviews=reviews_path, meta=meta_path),
                   stock_known=False)
