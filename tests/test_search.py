"""The search box's library: BM25 in step with updates, fusion, typo tolerance, suggestions, the
hybrid engine with its hooks, and Chinese search. Real MiniLM / USE, real small data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from indexer.build import build_index
from indexer.schema import Catalog, make_items
from indexer.store import ItemIndex
from indexer.table import Filters
from retriever.fusion import minmax, rrf, weighted_fusion
from retriever.search.engine import SearchConfig, SearchEngine
from retriever.search.lexical import LexicalIndex
from retriever.search.suggest import QueryLog, Suggester
from retriever.search.tokens import tokenize
from retriever.search.typo import TypoIndex, respell, sound_key

from .conftest import TINY_ITEMS, shared_data

EXTRA_ITEMS = [
    {"item_id": "ionique", "title": "Ionic hair dryer 2200W, cool shot", "brand": "Ionique Pro",
     "categories": ["Beauty", "Hair Care", "Hair Dryers"], "price": 89.0},
    {"item_id": "loreal", "title": "L'Oréal Paris Elvive repair shampoo", "brand": "L'Oréal",
     "categories": ["Beauty", "Hair Care", "Shampoo"], "price": 6.0},
    {"item_id": "monitor", "title": "Studio monitor headphones SM-50", "brand": "Sonora",
     "categories": ["Electronics", "Audio"], "price": 99.0},
]


def bare_index(records: list[dict]) -> ItemIndex:
    """An item index with placeholder vectors: enough for everything that reads only text."""
    items = make_items(records)
    index = ItemIndex(model="none", dim=4)
    index.add(items, np.eye(4, dtype=np.float32)[np.arange(len(items)) % 4])
    return index


def ids(index: ItemIndex, labels: np.ndarray) -> list[str]:
    return [i for i in index.table.ids(np.atleast_2d(labels))[0] if i is not None]


pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


@pytest.fixture(scope="module")
def engine(embedder):
    catalog = Catalog(make_items(TINY_ITEMS + EXTRA_ITEMS), source="tiny+")
    # No relevance cut-off: these tests check retrieval and fusion on 9 items (the cut-off: test_relevance.py).
    return SearchEngine.build(build_index(catalog, embedder, kind="flat", progress=False), embedder,
                              config=SearchConfig(min_relevance=0.0))


# ---- tokens ----------------------------------------------------------------------------------------
def test_tokenize_latin_and_chinese():
    assert tokenize("L'Oréal Paris shampoos") == tokenize("loreal paris shampoo") == ["loreal", "paris", "shampoo"]
    assert tokenize("the batteries for my glass") == ["battery", "glass"]
    assert tokenize("洗发水去屑") == ["洗发", "发水", "水去", "去屑"]
    assert tokenize("Thermalia 保温杯 500ml") == ["thermalia", "保温", "温杯", "500ml"]


# ---- BM25 in step with the item index ----------------------------------------------------------------
def test_bm25_known_answer_and_filters():
    index = bare_index(TINY_ITEMS)
    lex = LexicalIndex(index)
    assert set(ids(index, lex.search(["red lipstick"], 2)[0])) == {"lipstick-red", "lipstick-red-2"}
    assert ids(index, lex.search(["lipstick"], 5, Filters(in_stock=False))[0]) == ["lipstick-nude"]
    assert ids(index, lex.search(["coffee"], 5, Filters(max_price=22))[0]) == ["espresso"]  # grinder: no price
    labels, scores = lex.search(["unicorn saddle"], 3)
    assert (labels == -1).all() and np.isneginf(scores).all()


def test_bm25_follows_upserts_and_deletes():
    index = bare_index(TINY_ITEMS)
    lex = LexicalIndex(index, background_rebuild=False)
    index.add(make_items([{"item_id": "kettle", "title": "Gooseneck pour-over kettle", "brand": "Bean & Co"}]),
              np.ones((1, 4), np.float32) / 2)
    assert lex.delta_size == 1
    assert ids(index, lex.search(["gooseneck kettle"], 3)[0]) == ["kettle"]
    # replacing an item: its old words stop matching, the new ones match
    index.add(make_items([{"item_id": "tent", "title": "Hammock with mosquito net", "brand": "Trail"}]),
              np.ones((1, 4), np.float32) / 2)
    assert ids(index, lex.search(["camping tent"], 3)[0]) == []
    assert ids(index, lex.search(["hammock"], 3)[0]) == ["tent"]
    index.delete("kettle")
    index.delete("espresso")
    assert ids(index, lex.search(["kettle"], 3)[0]) == []
    assert ids(index, lex.search(["espresso dark roast"], 3)[0]) == []
    assert lex.delta_size == 1 and lex.rebuilds == 0


def test_holds_reads_each_document_as_tokenised_main_and_delta():
    index = bare_index(TINY_ITEMS)
    lex = LexicalIndex(index, background_rebuild=False)
    index.add(make_items([{"item_id": "kettle", "title": "Gooseneck pour-over kettle", "brand": "Bean & Co"}]),
              np.ones((1, 4), np.float32) / 2)
    index.add(make_items([dict(TINY_ITEMS[0], title="Quiet travel fan")]), np.ones((1, 4), np.float32) / 2)
    labels = np.flatnonzero(index.table.alive.view)
    terms = ["dryer", "kettle", "gooseneck", "quiet", "espresso", "fan", "nothing-like-it"]
    want = np.array([[t in set(lex.tokens_of(int(lab))) for t in terms] for lab in labels])
    assert want.any(axis=0)[:6].all()  # every term but the last is somewhere
    np.testing.assert_array_equal(lex.holds(labels, terms), want)
    assert not lex.holds(np.array([index.table.n_labels + 5]), ["dryer"]).any()  # no such label


def test_delta_scores_like_the_main_index():
    index = bare_index(TINY_ITEMS)
    lex = LexicalIndex(index, background_rebuild=False)
    twin = dict(TINY_ITEMS[0], item_id="dryer-twin")  # same text, now in the delta
    index.add(make_items([twin]), np.ones((1, 4), np.float32) / 2)
    labels, scores = lex.search(["ionic hair dryer diffuser"], 3)
    assert ids(index, labels)[:2] == ["dryer", "dryer-twin"] and scores[0, 0] == scores[0, 1] > scores[0, 2]


@pytest.mark.parametrize("background", [False, True])
def test_rebuild_matches_a_fresh_index(background):
    index = bare_index(TINY_ITEMS)
    lex = LexicalIndex(index, background_rebuild=background, rebuild_min_delta=4)
    new = [{"item_id": f"mug-{n}", "title": f"Stoneware coffee mug {n}", "categories": ["Kitchen"]} for n in range(5)]
    for rec in new:
        index.add(make_items([rec]), np.ones((1, 4), np.float32) / 2)
    index.delete("grinder")
    lex.wait()
    assert lex.rebuilds >= 1 and lex.delta_size < 4
    fresh = LexicalIndex(index)
    queries = ["coffee mug", "coffee", "stoneware 3", "hair dryer"]
    for q in queries:  # same items in the same order; scores differ only by the statistics' age
        assert ids(index, lex.search([q], 8)[0]) == ids(index, fresh.search([q], 8)[0]), q
    lex.rebuild()
    assert lex.delta_size == 0
    for q in queries:
        a, b = lex.search([q], 8), fresh.search([q], 8)
        assert ids(index, a[0]) == ids(index, b[0]) and np.array_equal(a[1], b[1]), q


# ---- fusion ------------------------------------------------------------------------------------------
def run(labels, scores):
    return np.array([labels], dtype=np.int64), np.array([scores], dtype=np.float32)


def test_rrf_known_answer():
    a = run([10, 20, 30], [9.0, 5.0, 1.0])
    b = run([30, 40, -1], [0.9, 0.8, -np.inf])
    labels, scores = rrf([a, b], 4)
    assert labels.tolist() == [[30, 10, 20, 40]]
    assert np.allclose(scores, [[1 / 63 + 1 / 61, 1 / 61, 1 / 62, 1 / 62]])
    labels, _ = rrf([a, b], 2, weights=[0.0, 1.0])  # only b counts
    assert labels.tolist() == [[30, 40]]
    labels, scores = rrf([run([-1, -1], [-np.inf] * 2)], 3)
    assert labels.tolist() == [[-1, -1, -1]] and np.isneginf(scores).all()


def test_weighted_fusion_known_answer():
    a = run([1, 2, 3], [10.0, 6.0, 2.0])  # normalised 1, .5, 0
    b = run([2, 3, -1], [0.8, 0.4, -np.inf])  # normalised 1, 0
    labels, scores = weighted_fusion([a, b], 3, weights=[0.5, 0.5])
    assert labels.tolist() == [[2, 1, 3]] and np.allclose(scores, [[0.75, 0.5, 0.0]])
    labels, scores = weighted_fusion([a, b], 3, weights=[0.9, 0.1])
    assert labels.tolist() == [[1, 2, 3]] and np.allclose(scores, [[0.9, 0.55, 0.0]])
    assert np.allclose(minmax(np.array([[3.0, 3.0, -np.inf]])), [[1.0, 1.0, np.nan]], equal_nan=True)


def test_fused_ties_go_to_the_lower_label():
    labels, _ = rrf([run([7, 5], [1, 1]), run([5, 7], [1, 1])], 2)
    assert labels.tolist() == [[5, 7]]


# ---- typos -------------------------------------------------------------------------------------------
def test_typo_index():
    typo = TypoIndex({"ionique": 3, "ionic": 5, "shampoo": 9, "sneaker": 4, "type": 2, "take": 2, "tame": 1})
    assert sound_key("ionik") == sound_key("ionique")
    assert set(typo.alternatives("ionik")) == {"ionic", "ionique"}
    assert typo.alternatives("shampo") == ["shampoo"] and typo.alternatives("sneekers") == ["sneaker"]
    assert typo.alternatives("tape") == []  # three words one edit away: a word the catalog lacks
    assert typo.alternatives("shampoo") == [] and typo.alternatives("xyzzy") == []
    known = {"loreal", "shampoo"}.__contains__
    assert respell(["l", "oreal", "shampo"], known, typo) == {"l": ["loreal"], "oreal": ["loreal"],
                                                             "shampo": ["shampoo"]}


@pytest.mark.parametrize("query,top", [("ionik", "ionique"), ("loreal shampoo", "loreal"),
                                       ("l'oreal", "loreal"), ("L OREAL", "loreal"), ("shampo", "loreal"),
                                       ("SM-50", "monitor")])
def test_engine_tolerates_typos_and_spellings(engine, query, top):
    res = engine.search(query, 3)
    assert ids(engine.index, res.labels)[0] == top
    assert res.evidence[0].lexical_rank == 1


# ---- the hybrid engine -------------------------------------------------------------------------------
def test_hybrid_finds_what_either_retriever_finds(engine):
    res = engine.search("something to brew coffee at home", 3)
    assert set(ids(engine.index, res.labels)[:2]) == {"espresso", "grinder"}
    ev = res.evidence[0]
    assert ev.retrievers and ({"coffee", "brew"} & set(ev.matched_terms))
    lexical_only = engine.with_config(retrievers=("lexical",)).search("SM-50", 3)
    assert ids(engine.index, lexical_only.labels) == ["monitor"]
    assert engine.search("coffee", 5, Filters(brand="trail")).labels[0] == engine.index.table.label_of["tent"]


def test_rerank_and_personal_hooks(engine):
    price = {lb: rec["price"] for lb, rec in enumerate(engine.index.table.records)}

    def cheapest_first(query: str, labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
        assert scores.shape == labels.shape and np.all(np.diff(scores) <= 0)  # the fused order
        return np.array([-price[int(lb)] for lb in labels], dtype=np.float32)

    reranked = engine.with_config(rerank_depth=5)
    reranked.rerank = cheapest_first
    res = reranked.search("hair dryer", 3)
    got = [price[int(lb)] for lb in res.labels]
    assert got == sorted(got) and res.evidence[0].rerank_score == -got[0]
    assert engine.rerank is None  # with_config copies: the shared engine is untouched
    tent = engine.index.vectors_of(["tent"])[0]
    personal = engine.with_config(personal_weight=5.0).search("waterproof", 3, user_vector=tent)
    assert ids(engine.index, personal.labels)[0] == "tent" and personal.evidence[0].personal_score > 0.99
    two = np.stack([tent, engine.index.vectors_of(["espresso"])[0]])  # several interests: the closest counts
    assert ids(engine.index, engine.with_config(personal_weight=5.0).search("dark", 2, user_vector=two).labels
               )[0] in {"tent", "espresso"}


def test_expansion_is_grounded_and_labelled(engine):
    res = engine.search("espresso", 5, expand=True)
    assert {e.source for e in res.expansion} <= {"catalog", "feedback", "typo"}
    assert res.expansion and all(engine.vocabulary.lookup(e.term) is not None or e.term in engine.vocabulary.words
                                 for e in res.expansion)
    assert engine.search("espresso", 5, expand=False).expansion == []
    rocchio = engine.with_config(dense_feedback=0.3).search("espresso", 5, expand=True)
    assert ids(engine.index, rocchio.labels)[0] == "espresso"


@pytest.mark.parametrize("fusion", ["rrf", "weighted"])
def test_complete_scores_rescore_the_union(engine, fusion):
    plain = engine.with_config(fusion=fusion).search("coffee grinder", 6)
    complete = engine.with_config(fusion=fusion, complete_scores=True).search("coffee grinder", 6)
    assert ids(engine.index, complete.labels)[0] == ids(engine.index, plain.labels)[0] == "grinder"
    # every result carries both ranks: BM25 rank when it matches a query word, always a dense rank
    assert all(ev.dense_rank is not None for ev in complete.evidence)
    assert complete.evidence[0].lexical_rank == 1 and len(set(complete.labels)) == 6


# ---- suggestions -------------------------------------------------------------------------------------
def test_suggest_prefix_typo_queries_and_updates():
    index = bare_index(TINY_ITEMS + EXTRA_ITEMS)
    log = QueryLog(max_size=100)
    sug = Suggester(index, log, background=False)
    first = sug.suggest("ion", 5)
    assert first[0].text == "Ionique Pro" and first[0].kind == "brand"
    assert "Ionic hair dryer 2200W, cool shot" in [s.text for s in first]
    assert [s.text for s in sug.suggest("hair dr", 3)][0] == "Hair Dryers"
    assert "Ionique Pro" in [s.text for s in sug.suggest("ionik", 5)]      # typo
    for typed in ("l'or", "lor", "L’OR"):
        assert "L'Oréal" in [s.text for s in sug.suggest(typed, 5)]
    log.add("burr grinder for espresso", "shopper-1")
    log.add("Burr grinder  for espresso", "shopper-1")
    log.add("burr grinder for espresso", "shopper-2")
    assert "burr grinder for espresso" not in [s.text for s in sug.suggest("burr", 5)]  # two shoppers only
    log.add("BURR grinder for espresso", "shopper-3")
    assert sug.suggest("burr", 5)[0] == sug.suggest("BURR G", 5)[0]
    assert sug.suggest("burr", 5)[0].text == "burr grinder for espresso"  # as its earliest searcher typed it
    assert sug.suggest("burr", 5)[0].kind == "query"
    index.delete("grinder")
    assert "Burr coffee grinder" not in [s.text for s in sug.suggest("burr", 5)]
    index.add(make_items([{"item_id": "thermos", "title": "暖居 儿童保温杯 400ml"}]), np.ones((1, 4), np.float32) / 2)
    assert [s.text for s in sug.suggest("保温", 3)] == ["暖居 儿童保温杯 400ml"]
    assert sug.suggest("", 3) == [] and sug.suggest("!!!", 3) == []


def test_query_log_is_bounded():
    log = QueryLog(max_size=50, max_sources=16)
    for n in range(200):
        log.add("popular query", f"shopper-{n}")
        log.add(f"one-off {n}", f"shopper-{n}")
    counts = log.counts()
    assert len(counts) <= 50 and counts["popular query"] == 16  # sources kept per query are capped too


def test_suggestions_need_several_distinct_shoppers_and_forget_an_erased_one():
    index = bare_index(TINY_ITEMS + EXTRA_ITEMS)
    log = QueryLog()
    sug = Suggester(index, log, background=False, min_query_users=3)
    for _ in range(50):  # one client, however often, plants nothing
        log.add("visit evil-pharma.example for cheap pills", "client-a")
    log.add("visit evil-pharma.example for cheap pills", "client-b")
    assert all(s.kind != "query" for s in sug.suggest("vis", 10))
    log.add("visit evil-pharma.example for cheap pills", "client-c")
    assert sug.suggest("vis", 10)[0].kind == "query"
    assert log.forget("client-b") == 1
    assert all(s.kind != "query" for s in sug.suggest("vis", 10))
    log.forget("client-a"), log.forget("client-c")
    assert log.counts() == {}
    with pytest.raises(ValueError):
        Suggester(index, log, min_query_users=1)


def test_query_log_merges_the_search_logs_counts_without_adding_them():
    """``replace`` loads every worker's distinct shoppers from the store; a query counts the larger of
    the store's count and this worker's sources (a shopper in both counts once); an erasure drops the
    store's counts until the next load."""
    log = QueryLog()
    log.replace([("burr grinder", "Burr grinder", 3), ("tent", "tent", 1)])
    log.add("burr grinder", "s1")
    log.add("tent", "s1"), log.add("tent", "s2")
    assert log.counts() == {"burr grinder": 3, "tent": 2}
    assert [(k, n) for k, _, n in log.snapshot(3)] == [("burr grinder", 3)]
    assert log.snapshot(3)[0][1] == "burr grinder"  # this worker's text (the store's is its first typed)
    log.forget("s2")
    assert log.counts() == {"burr grinder": 1, "tent": 1}


# ---- Chinese -----------------------------------------------------------------------------------------
CHINESE_QUERIES = {"书籍": "这本书值得一读", "水果": "新鲜水果 很甜", "洗发水": "洗发水 去屑",
                   "酒店": "酒店 房间 早餐", "热水器": "热水器 安装 加热", "蒙牛": "蒙牛牛奶",
                   "衣服": "衣服 尺码 面料", "计算机": "笔记本电脑 键盘"}


@pytest.fixture(scope="module")
def chinese_catalog():
    """Items built from real Chinese reviews: per category, two items of 6 reviews each; no title
    or category text names the category, so only the review text can find it."""
    df = pd.read_csv(shared_data("chinese-online-shopping-reviews") / "online_shopping_10_cats.zip")
    rows = []
    for cat, group in df.groupby("cat", sort=True):
        texts = [str(t) for t in group["review"].head(12)]
        for j in range(2):
            rows.append({"item_id": f"{cat}-{j}", "title": f"商品 {len(rows)}",
                         "description": "。".join(texts[6 * j: 6 * (j + 1)])})
    return Catalog(make_items(rows), source="chinese-online-shopping-reviews sample")


def test_chinese_query_finds_the_chinese_category_lexically(chinese_catalog):
    index = bare_index(chinese_catalog.items.to_dict("records"))
    lex = LexicalIndex(index)
    hits = sum(ids(index, lex.search([q], 1)[0])[0].startswith(cat) for cat, q in CHINESE_QUERIES.items())
    assert hits >= 7, hits  # 8 of 8 when written


def test_chinese_query_with_the_multilingual_embedder(chinese_catalog):
    from indexer.embed import load_embedder

    use = load_embedder("use-multilingual")
    index = build_index(chinese_catalog, use, kind="flat", progress=False)
    engine = SearchEngine(index, use, config=SearchConfig())
    dense = engine.with_config(retrievers=("dense",))
    dense_hits = sum(ids(index, dense.search(q, 1).labels)[0].startswith(c) for c, q in CHINESE_QUERIES.items())
    hybrid_hits = sum(ids(index, engine.search(q, 1).labels)[0].startswith(c) for c, q in CHINESE_QUERIES.items())
    assert dense_hits >= 7 and hybrid_hits >= 7, (dense_hits, hybrid_hits)  # 8 and 8 when written
