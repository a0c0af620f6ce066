"""clean_catalog on a hand-made catalog with a known answer for every reason, and on real data."""

from __future__ import annotations

import json
import math

import pytest

from indexer.clean import CleaningReport, clean_catalog, clean_text
from indexer.loaders import DATASETS, load_dataset, shared_data_dir
from indexer.schema import Catalog, make_items, make_reviews


def real(name: str) -> Catalog:
    folder = shared_data_dir() / DATASETS[name]
    if not folder.is_dir():
        pytest.skip(f"public data {folder} not present (set SEMREC_SHARED to the shared folder)")
    return load_dataset(name, folder)


# ----------------------------------------------------------------------------- text


@pytest.mark.parametrize("raw, clean, had_html", [
    ('<span class="a-size-medium a-color-secondary"', "", True),  # unclosed trailing tag (Magazine titles)
    ("\n\n\n<script", "", True),
    ("<script>var x = 1;</script>Mug", "Mug", True),
    ("Great<br /><br />PROS: cheap", "Great PROS: cheap", True),
    ("<i>Maximum PC</i>'s best", "Maximum PC's best", True),
    ("Crabtree &amp; Evelyn", "Crabtree & Evelyn", True),
    ("L&#39;Oreal &amp;quot;Paris&amp;quot;", 'L\'Oreal "Paris"', True),  # double-escaped
    ("a < b and c > d, <3, <Product Name>", "a < b and c > d, <3, <Product Name>", False),
    ("Tom & Jerry", "Tom & Jerry", False),
    ("  many \t spaces\n\nand lines ", "many spaces and lines", False),
])
def test_clean_text(raw, clean, had_html):
    assert clean_text(raw) == (clean, had_html)


# ----------------------------------------------------------------------------- hand-made catalog

NAN = math.nan
ITEMS = [
    {"item_id": "A", "title": "<b>Red</b> Mug &amp; Co", "description": "  a   mug ", "brand": "Acme",
     "categories": ["Kitchen"], "price": 5.0},
    {"item_id": "A", "title": "Another A"},                                  # duplicate id
    {"item_id": "B", "description": "<p>Blue plate</p>"},                   # HTML description
    {"item_id": "C"},                                                        # text only from its review
    {"item_id": "D", "title": "   ", "categories": []},                      # no text, bare review
    {"item_id": "E", "title": "<span class=\"x\""},                           # no text once cleaned
]
REVIEWS = [
    {"review_id": "r1", "user_id": "u1", "item_id": "A", "text": "Great &amp; cheap", "timestamp": 100.0},
    {"review_id": "r1", "user_id": "u2", "item_id": "B", "text": "x", "timestamp": 101.0},     # dup id
    {"review_id": "r2", "user_id": "u1", "item_id": "A", "text": "Great & cheap", "timestamp": 100.0},  # dup
    {"review_id": "r3", "user_id": "u2", "item_id": "C", "text": "nice", "timestamp": 102.0},
    {"review_id": "r4", "user_id": "u3", "item_id": "D", "text": "", "timestamp": 103.0},    # item no text
    {"review_id": "r5", "user_id": "u3", "item_id": "Z", "text": "hello", "timestamp": 104.0},  # unknown
    {"review_id": "r6", "user_id": "u1", "item_id": "B", "text": ""},  # bare, no time: repeat purchase,
    {"review_id": "r7", "user_id": "u1", "item_id": "B", "text": " "},  # not a duplicate
    {"review_id": "r8", "user_id": "u4", "item_id": "Y", "text": "", "timestamp": 105.0},    # unknown, bare
]


def tiny() -> Catalog:
    return Catalog(make_items(ITEMS), make_reviews(REVIEWS), source="hand-made")


def test_every_reason_drop_mode():
    out, rep = clean_catalog(tiny())
    assert (rep.items_in, rep.items_out, rep.reviews_in, rep.reviews_out) == (6, 3, 9, 4)
    assert rep.items_dropped == {"duplicate_id": 1, "no_text": 2}
    assert rep.items_added == {"stub": 0}
    assert rep.items_html == {"title": 2, "description": 1, "brand": 0, "categories": 0, "attributes": 0}
    assert rep.items_titled == {"description": 1, "brand_category": 0}  # B: "Blue plate", from its description
    assert out.items.set_index("item_id").loc["B", "title"] == "Blue plate"
    assert rep.items_missing == {"title": 1, "description": 1, "brand": 2, "price": 2, "categories": 2}
    assert rep.reviews_dropped == {"duplicate_review_id": 1, "duplicate_content": 1, "unknown_item": 2,
                                   "item_dropped": 1}
    assert rep.reviews_html == {"title": 0, "text": 1}
    assert rep.reviews_flagged == {"empty_text": 2, "unknown_item_stubbed": 0}
    assert rep.examples["items.no_text"] == ["D", "E"]
    assert rep.examples["reviews.unknown_item"] == ["Z", "Y"]
    assert rep.examples["reviews.duplicate_content"] == ["r2"]
    assert out.items["item_id"].tolist() == ["A", "B", "C"]
    a = out.items.iloc[0]
    assert (a["title"], a["description"], a["brand"]) == ("Red Mug & Co", "a mug", "Acme")
    assert out.items.iloc[1]["description"] == "Blue plate"
    assert out.reviews["review_id"].tolist() == ["r1", "r3", "r6", "r7"]
    assert out.reviews.iloc[0]["text"] == "Great & cheap" and out.reviews.iloc[3]["text"] == ""


def test_every_reason_stub_mode():
    out, rep = clean_catalog(tiny(), unknown_items="stub")
    # Z gets text from its review and stays; Y's only review is bare, so Y is dropped with it
    assert rep.items_added == {"stub": 2}
    assert rep.items_dropped == {"duplicate_id": 1, "no_text": 3}
    assert (rep.items_out, rep.reviews_out) == (6 - 1 + 2 - 3, 9 - 1 - 1 - 2)
    assert rep.reviews_dropped == {"duplicate_review_id": 1, "duplicate_content": 1, "unknown_item": 0,
                                   "item_dropped": 2}
    assert rep.reviews_flagged["unknown_item_stubbed"] == 2
    assert out.items["item_id"].tolist() == ["A", "B", "C", "Z"]
    assert out.reviews["review_id"].tolist() == ["r1", "r3", "r5", "r6", "r7"]
    assert "stub item for an unknown item id" in rep.to_text()


def test_report_text_dict_and_invariant():
    _, rep = clean_catalog(tiny())
    text = rep.to_text()
    assert "hand-made" in text and "6 in ->" in text and "duplicate item id" in text
    assert "e.g. Z, Y" in text and len(text.splitlines()) > 15
    d = json.loads(json.dumps(rep.to_dict()))
    assert d["items_dropped_total"] == 3 and d["reviews_dropped_total"] == 5
    with pytest.raises(ValueError, match="do not add up"):
        CleaningReport(source="x", items_in=3, items_out=3, reviews_in=2, reviews_out=2,
                       items_dropped={"duplicate_id": 1})
    with pytest.raises(ValueError, match="unknown_items"):
        clean_catalog(tiny(), unknown_items="keep")


def test_cleaning_is_idempotent():
    once, _ = clean_catalog(tiny())
    twice, rep = clean_catalog(once)
    assert sum(rep.items_dropped.values()) == sum(rep.reviews_dropped.values()) == 0
    assert sum(rep.items_html.values()) == sum(rep.reviews_html.values()) == 0
    assert once.items.equals(twice.items) and once.reviews.equals(twice.reviews)


# ----------------------------------------------------------------------------- real data


def test_magazine_real():
    cat = real("magazine")
    out, rep = clean_catalog(cat)
    assert rep.items_dropped["duplicate_id"] == 1_065 and out.items["item_id"].is_unique
    assert rep.items_html["title"] == 2_174  # '<span class="a-size-medium ...' fragments and &amp;
    assert not out.items["title"].str.contains("<span|&amp;", regex=True).any()
    assert not out.items["description"].str.contains("<i>|&amp;", regex=True).any()
    assert rep.items_missing["title"] == 0  # most titles were nothing but a tag: all 2,163 are recovered
    assert sum(rep.items_titled.values()) == 2_163
    assert rep.reviews_dropped["unknown_item"] == 61  # 6 of the 157 reviewed asins have no metadata
    assert rep.reviews_dropped["duplicate_content"] == 44
    assert set(out.reviews["item_id"]) <= set(out.items["item_id"])
    assert rep.items_out == rep.items_in - sum(rep.items_dropped.values()) == len(out.items)
    assert rep.reviews_out == rep.reviews_in - sum(rep.reviews_dropped.values()) == len(out.reviews)
    stub_out, stub = clean_catalog(cat, unknown_items="stub")
    assert stub.items_added["stub"] == 6 and stub.reviews_flagged["unknown_item_stubbed"] == 61
    assert len(stub_out.reviews) == 2_375 - 44 and stub.items_dropped["no_text"] == 0


def test_subscription_boxes_real():
    out, rep = clean_catalog(real("subscription-boxes"))
    assert (rep.items_out, rep.reviews_out) == (641, 16_216 - 200)
    assert rep.reviews_dropped == {"duplicate_review_id": 0, "duplicate_content": 200, "unknown_item": 0,
                                   "item_dropped": 0}
    assert rep.reviews_flagged["empty_text"] == 11  # as SOURCE.md says (some were whitespace only)
    assert rep.reviews_html["text"] > 1_500 and not out.reviews["text"].str.contains("<br").any()
    assert rep.items_missing["price"] == rep.items_missing["categories"] == 641


@pytest.mark.parametrize("name, n_items, n_reviews", [
    ("beauty", 12_101, 198_502), ("scientific", 4_385, 59_427), ("instruments", 900, 10_261)])
def test_bare_interaction_sets_keep_everything(name, n_items, n_reviews):
    out, rep = clean_catalog(real(name))
    assert (len(out.items), len(out.reviews)) == (n_items, n_reviews)
    assert sum(rep.items_dropped.values()) == sum(rep.reviews_dropped.values()) == 0
    if name != "instruments":  # Beauty / Scientific: all bare interactions
        assert rep.reviews_flagged["empty_text"] == n_reviews
    else:  # items without metadata keep their text through the reviews
        assert rep.items_missing["title"] == 900 and rep.items_dropped["no_text"] == 0


def test_title_from_other_fields():
    from indexer.clean import title_from

    long = ("O, The Oprah Magazine gives confident, smart women the tools they need to explore and reach for their "
            "dreams. Every issue has more.")
    assert title_from(long, "Hearst", ["Magazines"]) == (
        "O, The Oprah Magazine gives confident, smart women the tools they need to…", "description")
    assert title_from("GQ helps you look sharp and live smart. Each issue...", "", []) == (
        "GQ helps you look sharp and live smart", "description")
    assert title_from("", "Economist", ["Magazine Subscriptions", "Finance"]) == ("Economist – Finance",
                                                                                 "brand_category")
    assert title_from("", "", ["Finance"]) == ("Finance", "brand_category")
    assert title_from("", "", []) == ("", None)
