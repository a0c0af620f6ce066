"""Loaders on the real public files in $SEMREC_SHARED/data, own-format round trips, and parse errors."""

from __future__ import annotations

import gzip
import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from indexer.loaders import (
    DATASETS,
    load_amazon2018,
    load_amazon2023,
    load_beauty,
    load_catalog,
    load_dataset,
    load_own,
    read_items,
    read_reviews,
    shared_data_dir,
    write_items,
    write_reviews,
)
from indexer.schema import ITEM_COLUMNS, REVIEW_COLUMNS, Catalog, CatalogFormatError, make_items, make_reviews


def dataset_dir(name: str) -> Path:
    folder = shared_data_dir() / DATASETS[name]
    if not folder.is_dir():
        pytest.skip(f"public data {folder} not present (set SEMREC_SHARED to the shared folder)")
    return folder


_cache: dict[str, Catalog] = {}


def dataset(name: str) -> Catalog:
    if name not in _cache:
        _cache[name] = load_dataset(name, dataset_dir(name))
    return _cache[name]


def assert_schema(cat: Catalog) -> None:
    assert list(cat.items.columns) == list(ITEM_COLUMNS)
    assert list(cat.reviews.columns) == list(REVIEW_COLUMNS)
    for frame, cols in ((cat.items, ITEM_COLUMNS), (cat.reviews, REVIEW_COLUMNS)):
        for col, dtype in cols.items():
            if dtype == "str":
                assert pd.api.types.is_string_dtype(frame[col]), col
                assert not frame[col].isna().any(), col
            elif dtype != "object":
                assert frame[col].dtype == np.dtype(dtype), col
    assert all(isinstance(c, list) for c in cat.items["categories"])
    assert all(isinstance(a, dict) for a in cat.items["attributes"])
    assert cat.reviews["review_id"].is_unique


# ----------------------------------------------------------------------------- public datasets


def test_instruments_2014_without_metadata():
    cat = dataset("instruments")
    assert_schema(cat)
    r = cat.reviews
    assert (len(r), r["user_id"].nunique(), r["item_id"].nunique()) == (10_261, 1_429, 900)
    assert len(cat.items) == 900 and set(cat.items["item_id"]) == set(r["item_id"])
    assert (cat.items["title"] == "").all()  # no metadata: text comes from the reviews
    assert "no item metadata" in cat.source
    assert r["rating"].value_counts().to_dict() == {5.0: 6938, 4.0: 2084, 3.0: 772, 2.0: 250, 1.0: 217}
    assert (r["text"] == "").sum() == 7
    first = r.iloc[0]
    assert (first["user_id"], first["item_id"], first["rating"], first["title"]) == (
        "A2IBPI20UZIR0U", "1384719342", 5.0, "good")
    assert first["timestamp"] == 1393545600.0 and first["text"].startswith("Not much to write about here")
    assert r.iloc[1]["helpful_votes"] == 13  # helpful [13, 14] -> up votes


def test_magazine_2018_reviews_and_metadata():
    cat = dataset("magazine")
    assert_schema(cat)
    r = cat.reviews
    assert (len(r), r["user_id"].nunique(), r["item_id"].nunique()) == (2_375, 348, 157)
    # metadata for the whole category, kept as stored: duplicated rows and HTML titles included
    assert len(cat.items) == 3_385 and cat.items["item_id"].nunique() == 2_320
    assert len(set(r["item_id"]) & set(cat.items["item_id"])) == 151
    assert cat.items["title"].str.startswith("<span").sum() > 3000
    reason = cat.items[cat.items["item_id"] == "B00005N7NQ"].iloc[0]
    assert reason["brand"] == "Reason Magazine"
    assert reason["categories"][:2] == ["Magazine Subscriptions", "Professional & Educational Journals"]
    assert reason["attributes"]["Publisher"] == "Reason Magazine"  # "Publisher:" key cleaned
    assert reason["description"].startswith("REASON is edited for people interested in economic")
    assert math.isnan(reason["price"])  # the price field holds CSS garbage or nothing in this category
    assert cat.items["price"].isna().all()
    assert r.iloc[1]["helpful_votes"] == 3 and r["helpful_votes"].max() > 0  # vote "3" -> 3
    assert r.iloc[0]["title"] == "Cheapskates guide"  # summary -> review title


def test_subscription_boxes_2023_joined_on_parent_asin():
    cat = dataset("subscription-boxes")
    assert_schema(cat)
    r, items = cat.reviews, cat.items
    assert len(r) == 16_216 and len(items) == 641 and items["item_id"].is_unique
    assert r["item_id"].nunique() == 641 and set(r["item_id"]) <= set(items["item_id"])  # 100% join
    assert r["user_id"].nunique() == 15_237
    assert r["rating"].value_counts().to_dict() == {5.0: 8734, 1.0: 2576, 3.0: 1752, 4.0: 1663, 2.0: 1491}
    first = r.iloc[0]
    assert first["item_id"] == "B09WC47S3V"  # parent_asin, not asin B07G584SHG
    assert first["timestamp"] == pytest.approx(1602133857.705)  # ms -> s
    assert (first["title"], first["helpful_votes"], first["rating"]) == ("USELESS", 2, 1.0)
    assert r["timestamp"].between(1.48e9, 1.70e9).all()
    box = items.iloc[0]
    assert box["item_id"] == "B08W5BSH6V" and box["brand"] == "Loved Again Media"
    assert box["description"].startswith("10 gently used DVDs")  # features -> description
    assert box["attributes"]["main_category"] == "SUBSCRIPTION BOXES"
    assert (items["title"] != "").sum() == 640


def test_beauty_recbole_sequences():
    folder = dataset_dir("beauty")
    t0 = time.perf_counter()
    cat = load_beauty(folder)
    assert time.perf_counter() - t0 < 5
    assert_schema(cat)
    r, items = cat.reviews, cat.items
    assert len(items) == 12_101 and items["item_id"].is_unique
    assert (len(r), r["user_id"].nunique(), r["item_id"].nunique()) == (198_502, 22_363, 12_101)
    assert r["item_id"].head(3).tolist() == ["1", "6846", "7873"] and (r["user_id"].head(3) == "1").all()
    assert r["timestamp"].isna().all() and (r["text"] == "").all()
    one = items.set_index("item_id")
    assert one.loc["1", "title"].startswith("WAWO 15 Color") and one.loc["1", "brand"] == "COKA"
    assert one.loc["1", "price"] == 5.04 and math.isnan(one.loc["5", "price"])
    assert one.loc["3", "categories"] == ["Beauty", "Fragrance", "Women's", "Eau de Parfum"]
    assert one.loc["1", "attributes"] == {"sales_type": "Beauty", "sales_rank": "10486"}


def index_map(path: Path) -> dict[str, str]:
    """``X.item2index`` / ``X.user2index``: index -> id."""
    return {idx: key for key, idx in (line.split("\t") for line in path.read_text().split("\n") if line)}


def test_scientific_unisrec_full_sequences():
    folder = dataset_dir("scientific")
    cat = load_dataset("scientific", folder)
    assert_schema(cat)
    r, items = cat.reviews, cat.items
    assert len(items) == 4_385 and r["user_id"].nunique() == 8_442 and r["item_id"].nunique() == 4_385
    assert items.iloc[0]["item_id"] == "B0000223SI"
    assert items.iloc[0]["title"].startswith("PORTER-CABLE 740000801")
    assert (r["text"] == "").all() and r["timestamp"].isna().all()
    item_of = index_map(folder / "Scientific.item2index")
    # user 0: test row history "0 .. 12" + target 13 is the whole sequence
    seq0 = r[r["user_id"] == "ABW8NXS7SV55K"]["item_id"].tolist()
    assert seq0 == [item_of[str(i)] for i in range(14)]
    # histories are truncated to 50; the train prefixes give back the longer sequences (up to 80)
    lengths = r.groupby("user_id", sort=False).size()
    assert lengths.max() == 80 and (lengths > 51).sum() == 3 and len(r) == 59_427
    # every user's sequence ends with their test row
    tail = {}
    for line in (folder / "Scientific.test.inter").read_text().split("\n")[1:]:
        if line:
            u, hist, target = line.split("\t")
            tail[u] = hist.split() + [target]
    user_of = index_map(folder / "Scientific.user2index")
    by_user = {u: g.tolist() for u, g in r.groupby("user_id", sort=False)["item_id"]}
    for u_idx, items_idx in tail.items():
        assert by_user[user_of[u_idx]][-len(items_idx):] == [item_of[i] for i in items_idx]


def test_load_catalog_detects_every_format():
    for name, fmt in (("magazine", "amazon2018"), ("subscription-boxes", "amazon2023"),
                      ("instruments", "amazon2014"), ("scientific", "unisrec")):
        cat = load_catalog(dataset_dir(name))
        assert cat.source.startswith(fmt), (name, cat.source)
        assert len(cat.reviews) == len(dataset(name).reviews)
    assert load_catalog(dataset_dir("magazine"), format="magazine").source.startswith("amazon2018")
    reviews_file = dataset_dir("magazine") / "Magazine_Subscriptions_5.json"
    reviews_only = load_catalog(reviews_file, format="amazon2018")
    assert len(reviews_only.reviews) == 2_375 and len(reviews_only.items) == 157


def test_shared_data_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("SEMREC_SHARED", str(tmp_path))
    assert shared_data_dir() == tmp_path.resolve() / "data"
    with pytest.raises(CatalogFormatError, match="not found"):
        load_dataset("beauty")
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("no-such-set")


# ----------------------------------------------------------------------------- own formats

ITEMS = make_items([
    {"item_id": "a1", "title": "Mug, ceramic \"Große\" 350 ml", "description": "line one\nline two",
     "brand": "Acme", "categories": ["Kitchen", "Mugs|Cups"], "price": 9.5,
     "attributes": {"Color": "red", "Größe": "L"}, "in_stock": False, "created_at": 1_600_000_000.0},
    {"item_id": "a2", "title": "茶壶", "categories": [], "attributes": {}},
    {"item_id": "42", "title": "numeric id stays a string", "price": 0.0, "attributes": {"k": "v"}},
])
REVIEWS = make_reviews([
    {"review_id": "r1", "item_id": "a1", "user_id": "u1", "rating": 4.0, "title": "ok",
     "text": "fine, \"really\"", "timestamp": 1_600_000_100.5, "helpful_votes": 3},
    {"review_id": "r2", "item_id": "a2", "user_id": "u2", "text": ""},
])


@pytest.mark.parametrize("ext", [".csv", ".tsv", ".jsonl", ".json", ".parquet"])
def test_own_format_round_trip(tmp_path, ext):
    write_items(ITEMS, tmp_path / f"items{ext}")
    write_reviews(REVIEWS, tmp_path / f"reviews{ext}")
    cat = load_own(tmp_path / f"items{ext}", tmp_path / f"reviews{ext}")
    pd.testing.assert_frame_equal(cat.items, ITEMS)
    pd.testing.assert_frame_equal(cat.reviews, REVIEWS)
    assert_schema(cat)
    again = load_catalog(tmp_path)  # a folder with items.* and reviews.*
    pd.testing.assert_frame_equal(again.reviews, REVIEWS)


def test_own_csv_hand_written(tmp_path):
    (tmp_path / "items.csv").write_text(
        "item_id,title,categories,attributes,price,in_stock,created_at\n"
        'x1,Kettle,Kitchen|Kettles | Electric,'
        '"{""Volume"": ""1.7 l"", ""Watts"": 2200}",19.99,no,2021-03-04\n'
        'x2,"Two\nlines",[],,,yes,\n', encoding="utf-8")
    (tmp_path / "reviews.csv").write_text("user_id,item_id,rating\nu1,x1,5\nu2,x2,\n", encoding="utf-8")
    cat = load_catalog(tmp_path)
    x1, x2 = cat.items.iloc[0], cat.items.iloc[1]
    assert x1["categories"] == ["Kitchen", "Kettles", "Electric"]
    assert x1["attributes"] == {"Volume": "1.7 l", "Watts": "2200"}
    assert (x1["price"], bool(x1["in_stock"])) == (19.99, False)
    assert x1["created_at"] == pd.Timestamp("2021-03-04", tz="UTC").timestamp()
    assert x2["title"] == "Two\nlines" and x2["categories"] == [] and bool(x2["in_stock"])
    assert cat.reviews["review_id"].tolist() == ["u1:x1:0", "u2:x2:1"]  # derived
    assert math.isnan(cat.reviews.iloc[1]["rating"])


# ----------------------------------------------------------------------------- errors


def _err(exc: pytest.ExceptionInfo) -> CatalogFormatError:
    e = exc.value
    assert isinstance(e, CatalogFormatError)
    return e


def test_malformed_json_line_names_file_and_line(tmp_path):
    good = {"overall": 5.0, "reviewerID": "U1", "asin": "B1", "reviewText": "ok", "unixReviewTime": 1}
    path = tmp_path / "reviews.json"
    path.write_text(json.dumps(good) + "\n" + json.dumps(good) + "\n" + '{"overall": 5.0, "asin": \n')
    with pytest.raises(CatalogFormatError) as exc:
        load_amazon2018(path)
    e = _err(exc)
    assert (e.path, e.line) == (str(path), 3) and "malformed JSON" in e.reason
    assert f"{path}:3" in str(e)


@pytest.mark.parametrize("record, field", [
    ({"overall": 5.0, "asin": "B1"}, "reviewerID"),
    ({"overall": 5.0, "reviewerID": "U1", "asin": ""}, "asin"),
    ({"overall": "five", "reviewerID": "U1", "asin": "B1"}, "overall"),
    ({"overall": 5.0, "reviewerID": "U1", "asin": "B1", "vote": "a lot"}, "vote"),
])
def test_bad_field_names_line_and_field(tmp_path, record, field):
    good = {"overall": 5.0, "reviewerID": "U0", "asin": "B0", "vote": "1,234"}
    path = tmp_path / "reviews.json.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write(json.dumps(good) + "\n\n" + json.dumps(record) + "\n")
    with pytest.raises(CatalogFormatError) as exc:
        load_amazon2018(path)
    e = _err(exc)
    assert (e.line, e.field) == (3, field), str(e)
    assert f"field {field!r}" in str(e)


def test_2014_metadata_python_literals(tmp_path):
    reviews, meta = tmp_path / "reviews_X_5.json", tmp_path / "meta_X.json"
    reviews.write_text(json.dumps({"reviewerID": "u", "asin": "B1", "helpful": [1, 2], "overall": 4.0,
                                   "summary": "ok", "unixReviewTime": 5}) + "\n")
    meta.write_text("{'asin': 'B1', 'title': 'Mug', 'price': 3.5, 'salesRank': {'Kitchen': 12}, "
                    "'categories': [['Home', 'Kitchen'], ['Home', 'Mugs']], 'description': 'Nice'}\n")
    cat = load_catalog(tmp_path)
    item = cat.items.iloc[0]
    assert cat.source.startswith("amazon2014") and (item["title"], item["price"]) == ("Mug", 3.5)
    assert item["categories"] == ["Home", "Kitchen", "Mugs"]
    assert item["attributes"] == {"salesRank Kitchen": "12"}
    assert cat.reviews.iloc[0]["helpful_votes"] == 1


def test_vote_with_thousands_separator(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"overall": 5.0, "reviewerID": "U0", "asin": "B0", "vote": "1,234"}) + "\n")
    assert load_amazon2018(path).reviews.iloc[0]["helpful_votes"] == 1234


def test_2023_timestamp_and_parent_asin_errors(tmp_path):
    reviews, meta = tmp_path / "r.jsonl", tmp_path / "meta.jsonl"
    meta.write_text(json.dumps({"parent_asin": "P1", "title": "t"}) + "\n"
                    + json.dumps({"title": "no parent_asin"}) + "\n")
    reviews.write_text(json.dumps({"rating": 4, "asin": "A", "parent_asin": "P1", "user_id": "u",
                                   "timestamp": "yesterday"}) + "\n")
    with pytest.raises(CatalogFormatError) as exc:
        load_amazon2023(reviews, meta)
    assert (_err(exc).line, _err(exc).field) == (1, "timestamp")
    reviews.write_text(json.dumps({"rating": 4, "asin": "A", "parent_asin": "P1", "user_id": "u",
                                   "timestamp": 1_600_000_000_000}) + "\n")
    with pytest.raises(CatalogFormatError) as exc:
        load_amazon2023(reviews, meta)
    assert (_err(exc).path, _err(exc).line, _err(exc).field) == (str(meta), 2, "parent_asin")


def test_csv_missing_item_id_column(tmp_path):
    path = tmp_path / "items.csv"
    path.write_text("id,title\n1,Mug\n")
    with pytest.raises(CatalogFormatError) as exc:
        read_items(path)
    assert (_err(exc).line, _err(exc).field) == (1, "item_id")
    (tmp_path / "reviews.csv").write_text("item_id,rating\n1,5\n")
    with pytest.raises(CatalogFormatError) as exc:
        read_reviews(tmp_path / "reviews.csv")
    assert (_err(exc).line, _err(exc).field) == (1, "user_id")


def test_csv_bad_value_reports_exact_line(tmp_path):
    path = tmp_path / "items.csv"
    path.write_text('item_id,title,price\n1,"two\nline title",3\n2,Mug,cheap\n')
    with pytest.raises(CatalogFormatError) as exc:
        read_items(path)
    assert (_err(exc).line, _err(exc).field) == (4, "price") and "cheap" in _err(exc).reason
    path.write_text('item_id,title\n1,a\n,b\n')
    with pytest.raises(CatalogFormatError) as exc:
        read_items(path)
    assert (_err(exc).line, _err(exc).field) == (3, "item_id")
    path.write_text('item_id,categories\n1,"[""a"", oops]"\n')
    with pytest.raises(CatalogFormatError) as exc:
        read_items(path)
    assert (_err(exc).line, _err(exc).field) == (2, "categories")


def test_own_jsonl_missing_user_id(tmp_path):
    path = tmp_path / "reviews.jsonl"
    path.write_text('{"item_id": "a", "user_id": "u"}\n{"item_id": "b"}\n')
    with pytest.raises(CatalogFormatError) as exc:
        read_reviews(path)
    assert (_err(exc).line, _err(exc).field) == (2, "user_id")


@pytest.mark.parametrize("name", ["items.csv", "items.jsonl", "reviews.json.gz"])
def test_non_utf8_bytes_name_the_line(tmp_path, name):
    path = tmp_path / name
    if name.endswith(".csv"):
        data = b"item_id,title\n1,Mug\n2,Caf\xe9 cup\n"
    else:
        data = b'{"item_id": "1"}\n{"item_id": "2", "title": "Caf\xe9"}\n'
    if name.endswith(".gz"):
        data = data.replace(b'"item_id"', b'"asin"').replace(b"}", b', "reviewerID": "u"}')
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    with pytest.raises(CatalogFormatError) as exc:
        load_amazon2018(path) if name.endswith(".gz") else read_items(path)
    e = _err(exc)
    assert e.line == (3 if name.endswith(".csv") else 2) and "UTF-8" in e.reason, str(e)


def test_beauty_bad_interaction_line(tmp_path):
    (tmp_path / "item_description.csv").write_text("item_id:token\ttitle:token\n1\tMug\n")
    (tmp_path / "Beauty.txt").write_text("1 1\n1 1 extra\n")
    with pytest.raises(CatalogFormatError) as exc:
        load_beauty(tmp_path)
    assert _err(exc).line == 2 and _err(exc).path.endswith("Beauty.txt")
