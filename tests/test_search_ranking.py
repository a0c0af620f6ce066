"""The learned search ranking (retriever.search.learned): the features the served engine computes
per candidate, and the order a fitted LightGBM model gives. Real MiniLM, a real booster."""

from __future__ import annotations

import numpy as np
import pytest

from indexer.build import build_index
from retriever.search.engine import SearchConfig, SearchEngine
from retriever.search.learned import FUSED, NAMES, SearchRanking

pytestmark = pytest.mark.usefixtures("one_thread")

QUERIES = ["hair dryer", "lipstick", "coffee", "camping tent", "red lipstick", "travel dryer", "coffee grinder",
           "hair straightener", "dark roast beans", "nude lipstick"]


class Recorder:
    """Ranks by the fusion and keeps what the engine handed it."""

    def __init__(self):
        self.rows = []

    def order(self, labels, features):
        self.rows.append((labels.copy(), features.copy()))
        return features[:, FUSED]


@pytest.fixture(scope="module")
def engine(tiny_catalog, embedder):
    index = build_index(tiny_catalog, embedder, kind="flat", progress=False)
    return SearchEngine.build(index, embedder, config=SearchConfig(min_relevance=0.0))


def recorded(engine, query, clicked=None):
    rec = Recorder()
    engine.ranking = rec
    try:
        result = engine.with_config(learned=True).search(query, 10, clicks=lambda vec: clicked or {})
    finally:
        engine.ranking = None
    return result, *rec.rows[0]


def test_features_are_the_candidates_evidence(engine):
    label = engine.index.table.label_of
    result, labels, x = recorded(engine, "travel hair dryer", clicked={label["dryer"]: 3.0, label["tent"]: 1.0})
    assert x.shape == (len(labels), len(NAMES)) and x.dtype == np.float32
    col = {n: x[:, j] for j, n in enumerate(NAMES)}
    at = {int(lb): j for j, lb in enumerate(labels)}
    travel, dryer = at[label["dryer-travel"]], at[label["dryer"]]
    assert col["title_coverage"][travel] == pytest.approx(1.0)  # every query word is in its title
    assert 0 < col["title_coverage"][dryer] < 1                 # "travel" is not
    assert col["bm25_rel"][travel] == pytest.approx(1.0) and col["lexical_rr"][travel] == 1.0
    assert col["cosine_rel"].max() == pytest.approx(0.0) and (col["cosine_rel"] <= 0).all()
    assert col["clicks"][dryer] == pytest.approx(1.0)
    if label["tent"] in at:
        assert col["clicks"][at[label["tent"]]] == pytest.approx(1 / 3)
    assert (col["query_terms"] == 3).all()
    # the stand-in ranked by the fusion: the engine's answer is the fused order
    assert result.labels[0] == labels[np.argmax(col["fused"])]


def fitted(engine) -> SearchRanking:
    """A real LambdaRank booster taught a perverse taste (the fusion's last candidate is the one),
    so its order is told apart from the fusion's."""
    import lightgbm

    xs, ys = [], []
    for q in QUERIES:
        _, labels, x = recorded(engine, q)
        y = np.zeros(len(labels), dtype=np.int32)
        y[np.argmin(x[:, FUSED])] = 1
        xs.append(x)
        ys.append(y)
    params = {"objective": "lambdarank", "num_leaves": 4, "min_data_in_leaf": 1, "min_sum_hessian_in_leaf": 0,
              "learning_rate": 0.3, "verbose": -1, "num_threads": 1, "deterministic": True}
    data = lightgbm.Dataset(np.concatenate(xs), np.concatenate(ys), group=[len(y) for y in ys],
                            feature_name=list(NAMES), params={"min_data_in_bin": 1})
    return SearchRanking(lightgbm.train(params, data, 30), {"test": True})


def test_the_engine_serves_the_models_order_and_a_saved_model_scores_alike(engine, tmp_path):
    model = fitted(engine)
    plain, labels, x = recorded(engine, "hair dryer")
    want = labels[np.lexsort((labels, -model.score(x)))]
    engine.ranking = SearchRanking.load(model.save(tmp_path / "m"))
    try:
        np.testing.assert_array_equal(engine.ranking.score(x), model.score(x))
        learned = engine.search("hair dryer", 10)
        off = engine.with_config(learned=False).search("hair dryer", 10)
    finally:
        engine.ranking = None
    n = min(len(want), 10)
    np.testing.assert_array_equal(learned.labels[:n], want[:n])
    assert learned.labels[0] != plain.labels[0]  # the perverse taste shows
    np.testing.assert_array_equal(off.labels, plain.labels)  # learned=False: the fusion as before
    assert learned.evidence[0].matched_terms is not None


def test_a_model_fitted_on_other_features_is_refused(engine, tmp_path):
    import lightgbm

    x = np.random.default_rng(0).random((40, 3))
    booster = lightgbm.train({"objective": "lambdarank", "verbose": -1, "min_data_in_leaf": 1},
                             lightgbm.Dataset(x, np.arange(40) % 2, group=[20, 20], feature_name=["a", "b", "c"]), 2)
    with pytest.raises(ValueError, match="evaluation.search_ltr"):
        SearchRanking(booster)


def test_a_query_no_item_passes_ranks_nothing(engine):
    from indexer.table import Filters

    engine.ranking = Recorder()
    try:
        result = engine.search("hair dryer", 10, Filters(brand="no such brand"))
    finally:
        engine.ranking = None
    assert (result.labels == -1).all()


def test_the_service_loads_the_newest_version_and_names_a_missing_one(engine, tmp_path):
    from ranker.services import build_search, load_search_ranking

    model = fitted(engine)
    model.save(tmp_path / "root" / "v0001")
    model.info["newest"] = True
    model.save(tmp_path / "root" / "v0002")
    assert load_search_ranking(tmp_path / "root").info["newest"] is True
    box = build_search(engine.index, engine.embedder, SearchConfig(min_relevance=0.0), ranking_dir=tmp_path / "root")
    assert box.engine.ranking is not None
    served = box.engine.search("hair dryer", 10).labels
    engine.ranking = model
    try:
        np.testing.assert_array_equal(served, engine.search("hair dryer", 10).labels)
    finally:
        engine.ranking = None
    with pytest.raises(ValueError, match="no search_ranking.json and no vNNNN"):
        load_search_ranking(tmp_path / "nothing")


def test_training_rows_from_headlines_fit_a_ranking_the_engine_serves(demo_catalog, embedder, tmp_path):
    """evaluation.search_ltr's rows: one group per headline whose item is among its candidates,
    exactly one positive each; a LambdaRank fit on them is a SearchRanking the engine runs."""
    from evaluation.learned import RankingConfig, fit_ranking_on
    from evaluation.search_cases import sample_cases
    from evaluation.search_eval import Corpus, run_cases
    from evaluation.search_ltr import LEARNED, training_rows

    corpus = Corpus(demo_catalog, embedder, tmp_path)
    cases = sample_cases(demo_catalog.reviews, 60, 0)
    x, y, groups = training_rows(corpus, cases, corpus.search_log(demo_catalog.reviews, {c.review_id for c in cases}))
    assert x.shape == (len(y), len(NAMES)) and groups.sum() == len(y)
    assert 30 <= len(groups) <= 60  # most demo headlines find their item among 300
    bounds = np.concatenate([[0], np.cumsum(groups)])
    assert all(y[a:b].sum() == 1 for a, b in zip(bounds[:-1], bounds[1:]))
    cfg = RankingConfig(rounds=20, check_every=10, min_data_in_leaf=20, require_gain=False)
    model, info = fit_ranking_on(x, y, groups, cfg, NAMES, SearchRanking)
    assert isinstance(model, SearchRanking) and info["rounds"] in (10, 20)
    ranks = run_cases(corpus, cases[:10], LEARNED, SearchConfig(), ranking=model)["hybrid + learned ranking"]
    assert ranks.shape == (10,) and (ranks > 0).sum() >= 3
