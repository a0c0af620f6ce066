"""Offline evaluation harness: metrics, split protocol, baselines, batched ranking, quick Beauty run."""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from evaluation.metrics import (
    catalog_coverage,
    intra_list_diversity,
    mrr,
    ndcg_at_k,
    novelty,
    popular_share,
    rank_targets,
    recall_at_k,
)
from evaluation.protocol import leave_one_out, read_split, sequences_from_reviews, write_split
from ranker.pipeline import PipelineConfig
from retriever.collaborative import (
    ALS,
    BPR,
    Markov,
    Popularity,
    VectorRecommender,
    exclude_items,
    recommend_batched,
    target_ranks,
    text_scores,
    top_k,
)

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SEMREC_SHARED") or REPO / ".." / "shared").resolve()
BEAUTY = SHARED / "data" / "amazon-beauty-2014"

def seqs(*rows: list[int]) -> list[np.ndarray]:
    return [np.asarray(r, dtype=np.int64) for r in rows]


# ----------------------------------------------------------------------------- metrics
def test_ranking_metrics_known_values():
    ranks = np.array([0, 2, 9, 10, -1])  # rank 0 = top; -1 = target excluded
    assert recall_at_k(ranks, 10) == pytest.approx(3 / 5)
    assert recall_at_k(ranks, 1) == pytest.approx(1 / 5)
    assert ndcg_at_k(np.array([2]), 10) == pytest.approx(1 / math.log2(4))  # rank 3 -> 0.5
    assert ndcg_at_k(ranks, 10) == pytest.approx((1 + 0.5 + 1 / math.log2(11)) / 5)
    assert mrr(ranks) == pytest.approx((1 + 1 / 3 + 1 / 10 + 1 / 11) / 5)
    assert mrr(ranks, k=10) == pytest.approx((1 + 1 / 3 + 1 / 10) / 5)


def test_beyond_accuracy_known_values():
    ids = np.array([[0, 1], [1, -1]])
    assert catalog_coverage(ids, 4) == pytest.approx(0.5)
    counts = np.array([5, 1, 1, 1])  # total 8, n 4 -> p = (c + 1) / 12
    assert novelty(ids, counts) == pytest.approx(np.mean([-math.log2(6 / 12), -math.log2(2 / 12), -math.log2(2 / 12)]))
    # top 20% of 4 items = ceil(0.8) = 1 item (item 0)
    assert popular_share(ids, counts) == pytest.approx(1 / 3)
    vecs = np.array([[1, 0], [0, 1], [1, 1], [-1, 0]], dtype=np.float32)
    assert intra_list_diversity(np.array([[0, 1]]), vecs) == pytest.approx(1.0)
    assert intra_list_diversity(np.array([[0, 3]]), vecs) == pytest.approx(2.0)
    assert intra_list_diversity(np.array([[0, 2, 1]]), vecs) == pytest.approx(1 - (2 * 0.5**0.5) / 3, abs=1e-6)
    assert intra_list_diversity(np.array([[0, 1], [0, -1]]), vecs) == pytest.approx(1.0)  # 1-item list skipped


# ----------------------------------------------------------------------------- ranking
def brute_force(scores: np.ndarray, histories, k: int, exclude: bool):
    s = scores.copy()
    if exclude:
        for r, h in enumerate(histories):
            s[r, h] = -np.inf
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    vals = np.take_along_axis(s, order, 1)
    return np.where(np.isneginf(vals), -1, order), vals


@pytest.mark.parametrize("batch_size", [1, 3, 7, 1000])
@pytest.mark.parametrize("exclude", [True, False])
def test_batched_ranking_matches_argsort(batch_size, exclude):
    rng = np.random.default_rng(0)
    n, m, k = 23, 37, 10
    scores = rng.integers(0, 5, size=(n, m)).astype(np.float32)  # many ties
    histories = [rng.choice(m, size=rng.integers(0, 6), replace=False) for _ in range(n)]
    histories[0] = np.arange(m - 3)  # only 3 eligible items -> padding when excluded

    def fn(batch):
        idx = [next(i for i, h in enumerate(histories) if h is b) for b in batch]
        return scores[idx]

    ids, vals = recommend_batched(fn, histories, k, exclude_history=exclude, batch_size=batch_size)
    want_ids, want_vals = brute_force(scores, histories, k, exclude)
    assert ids.dtype == np.int64 and vals.dtype == np.float32 and ids.shape == (n, k)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_array_equal(vals, want_vals)
    if exclude:
        assert (ids[0, 3:] == -1).all() and set(ids[0, :3]) == {m - 3, m - 2, m - 1}
        for r, h in enumerate(histories):
            assert not set(ids[r].tolist()) & set(h.tolist())


def test_top_k_pads_beyond_catalog_and_target_ranks_match():
    s = np.array([[0.5, 0.9, 0.5, 0.1]], dtype=np.float32)
    ids, vals = top_k(s, 6)
    assert ids.tolist() == [[1, 0, 2, 3, -1, -1]]
    assert np.isneginf(vals[0, 4:]).all()
    assert target_ranks(s, np.array([2])).tolist() == [2]  # tie with item 0 -> after it
    masked = exclude_items(s.copy(), [np.array([1, 2])])
    assert target_ranks(masked, np.array([2])).tolist() == [-1]
    assert target_ranks(masked, np.array([3])).tolist() == [1]


def test_rank_targets_excluded_and_included():
    scores = np.array([[3, 2, 1, 0], [0, 1, 2, 3]], dtype=np.float32)
    hist = seqs([0], [3, 1])
    ex, inc = rank_targets(lambda b: scores[: len(b)] if len(b) == 2 else None, hist, np.array([2, 2]), 2,
                           batch_size=2)
    assert inc.ranks.tolist() == [2, 1] and ex.ranks.tolist() == [1, 0]
    assert ex.ids.tolist() == [[1, 2], [2, 0]] and inc.ids.tolist() == [[0, 1], [3, 2]]


# ----------------------------------------------------------------------------- protocol
def tiny_reviews() -> pd.DataFrame:
    rows = [  # user, item, timestamp
        ("u1", "c", 30.0), ("u1", "a", 10.0), ("u1", "b", 20.0), ("u1", "d", 20.0),  # tie b/d -> file order
        ("u2", "b", np.nan), ("u2", "a", np.nan), ("u2", "c", np.nan),  # NaN -> file order
        ("u3", "a", 5.0), ("u3", "e", 1.0),  # only 2 interactions -> train only
        ("u1", "e", 40.0),
    ]
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])


def test_sequences_and_leave_one_out():
    sequences, items, users = sequences_from_reviews(tiny_reviews())
    assert items.tolist() == ["a", "b", "c", "d", "e"] and users.tolist() == ["u1", "u2", "u3"]
    assert [s.tolist() for s in sequences] == [[0, 1, 3, 2, 4], [1, 0, 2], [4, 0]]
    split = leave_one_out(sequences, items, users, cold_item_frac=0, cold_user_frac=0)
    assert split.users.tolist() == [0, 1]
    assert split.valid_target.tolist() == [2, 0] and split.test_target.tolist() == [4, 2]
    assert [h.tolist() for h in split.valid_history] == [[0, 1, 3], [1]]
    assert [h.tolist() for h in split.test_history] == [[0, 1, 3, 2], [1, 0]]
    assert [s.tolist() for s in split.fit] == [[0, 1, 3], [1], [4, 0]]
    assert split.cold_users.tolist() == [False, False]
    assert split.train_counts().tolist() == [2, 2, 0, 1, 1]


def test_a_sample_of_shoppers_is_seeded_and_keeps_every_item():
    from evaluation.harness import make_split

    rng = np.random.default_rng(2)
    sequences = [rng.integers(0, 50, size=rng.integers(3, 12)) for _ in range(200)]
    items, users = np.array([f"i{i:02d}" for i in range(50)]), np.array([f"u{u:03d}" for u in range(200)])
    a = make_split(sequences, items, users, quick=False, seed=0, users=60)
    b = make_split(sequences, items, users, quick=False, seed=0, users=60)
    assert len(a.users) == 60 and np.array_equal(a.users, b.users) and a.n_items == 50
    assert len(make_split(sequences, items, users, quick=False, seed=0).users) == 200


def test_cold_splits_are_seeded_and_held_out(tmp_path):
    rng = np.random.default_rng(1)
    sequences = [rng.integers(0, 50, size=rng.integers(2, 12)) for _ in range(200)]
    items, users = np.array([f"i{i:02d}" for i in range(50)]), np.array([f"u{u:03d}" for u in range(200)])
    a = leave_one_out(sequences, items, users, seed=3)
    b = leave_one_out(sequences, items, users, seed=3)
    c = leave_one_out(sequences, items, users, seed=4)
    assert np.array_equal(a.cold_items, b.cold_items) and not np.array_equal(a.cold_items, c.cold_items)
    assert len(a.cold_items) == 5
    for s in [*a.fit, *a.valid_history, *a.test_history]:
        assert not np.isin(s, a.cold_items).any()
    simulated = [e for e, u in enumerate(a.users) if len(a.test_history[e]) <= 1 and a.cold_users[e]]
    assert a.cold_users.sum() >= round(0.1 * len(a.users)) and simulated
    sl = a.slices("test")
    assert (sl["warm"] == ~sl["cold_item"] & ~sl["cold_user"]).all()
    assert sl["cold_item"].sum() == np.isin(a.test_target, a.cold_items).sum() > 0
    write_split(a, tmp_path / "split.json")
    r = read_split(tmp_path / "split.json", users)
    assert json.loads((tmp_path / "split.json").read_text())["seed"] == 3
    assert np.array_equal(r.users, a.users) and np.array_equal(r.test_target, a.test_target)
    assert np.array_equal(r.cold_items, a.cold_items) and np.array_equal(r.cold_users, a.cold_users)
    assert all(np.array_equal(x, y) for x, y in zip(r.test_history, a.test_history, strict=True))
    assert all(np.array_equal(x, y) for x, y in zip(r.fit, a.fit, strict=True))
    assert np.array_equal(r.user_ids[r.fit_users], a.user_ids[a.fit_users])


def test_standard_protocol_has_no_cold_slices_and_drops_seen_targets():
    sequences = [np.array([0, 1, 2, 3]), np.array([4, 5, 4]), np.array([1, 2, 3, 1]), np.array([2, 3])]
    items, users = np.array([f"i{i}" for i in range(6)]), np.array(["a", "b", "c", "d"])
    split = leave_one_out(sequences, items, users, protocol="standard", cold_item_frac=0.5, cold_user_frac=0.5)
    assert len(split.cold_items) == 0 and [s.tolist() for s in split.fit] == [[0, 1], [4], [1, 2], [2, 3]]
    assert split.fit_users.tolist() == [0, 1, 2, 3]
    test = split.slices("test")
    assert list(test) == ["all"] and test["all"].tolist() == [True, False, False]  # b's 4 and c's 1 were seen
    assert split.slices("valid")["all"].tolist() == [True, True, True]
    with pytest.raises(ValueError, match="protocol"):
        leave_one_out(sequences, items, users, protocol="nope")


# ----------------------------------------------------------------------------- models
def test_popularity_and_markov_known_top_item():
    train = seqs([0, 1, 2], [0, 1, 3], [4, 1, 2], [2, 1, 2], [2])  # item 2 most popular; 1 -> 2 most often
    pop = Popularity().fit(train, 5)
    ids, scores = pop.recommend(seqs([4]), k=2)
    assert ids.tolist() == [[2, 1]] and scores.dtype == np.float32
    mk = Markov(window=1).fit(train, 5)
    ids, _ = mk.recommend(seqs([0, 1], [3]), k=1)
    assert ids[:, 0].tolist() == [2, 2]  # after 1 comes 2 (3 of 4 times); item 3 has no successor -> popular
    ids, _ = mk.recommend(seqs([0]), k=1, exclude_history=False)
    assert ids.tolist() == [[1]]
    assert mk.recommend(seqs([]), k=1)[0].tolist() == [[2]]


def test_als_and_bpr_fit_and_exclude():
    rng = np.random.default_rng(0)
    # two blocks of 10 items; each user takes 4 items from one block
    train = [rng.permutation(10)[:4] if u % 2 else rng.permutation(np.arange(10, 20))[:4] for u in range(1000)]
    for model in (ALS(factors=8, iterations=10), BPR(factors=8, iterations=50, learning_rate=0.05)):
        model.fit(train, 20)
        hist = seqs([0, 1, 2], [10, 11, 12], [])
        ids, scores = model.recommend(hist, k=5)
        assert ids.shape == (3, 5) and (ids >= 0).all() and scores.dtype == np.float32
        assert (ids[0, :3] < 10).all() and (ids[1, :3] >= 10).all()  # stays in the history's block
        assert not set(ids[0]) & {0, 1, 2} and not set(ids[1]) & {10, 11, 12}


def test_least_squares_fold_in_matches_direct_solve():
    from retriever.mf import least_squares_fold_in

    rng = np.random.default_rng(0)
    v = rng.normal(size=(30, 4)).astype(np.float32)
    hist = seqs([3, 7, 7, 1], [], [5], list(range(12)))
    got = least_squares_fold_in(v, hist, alpha=2.0, reg=0.5)
    for h, u in zip(hist, got, strict=True):
        vh = v[np.unique(h)].astype(np.float64)
        a = v.T.astype(np.float64) @ v + 0.5 * np.eye(4) + 2.0 * vh.T @ vh
        np.testing.assert_allclose(u, np.linalg.solve(a, 3.0 * vh.sum(axis=0)), rtol=1e-4, atol=1e-6)


def structured_vectors(n_clusters=4, per=25, d=16, seed=0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, d))
    cluster = np.repeat(np.arange(n_clusters), per)
    v = centres[cluster] + 0.3 * rng.normal(size=(len(cluster), d))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32), cluster


def test_ease_matches_the_closed_form():
    from retriever.collaborative import _user_items
    from retriever.ease import EASE

    train = seqs([0, 1, 2], [1, 2], [2, 3], [0, 3, 4], [4, 1])
    model = EASE(lam=2.0).fit(train, 5)
    x = _user_items(train, 5).toarray()
    p = np.linalg.inv(x.T @ x + 2.0 * np.eye(5))
    b = np.eye(5) - p / np.diag(p)[None, :]  # Steck 2019, eq. 8: diag(B) = 0
    np.testing.assert_allclose(model.weights, b, atol=1e-5)
    np.testing.assert_allclose(model.score([np.array([0, 1])]), np.array([[1, 1, 0, 0, 0]]) @ b, atol=1e-5)


def test_text_zero_shot_follows_recent_cluster():
    vecs, cluster = structured_vectors()
    hist = np.array([np.flatnonzero(cluster == 0)[0], np.flatnonzero(cluster == 2)[0],
                     np.flatnonzero(cluster == 2)[1]])
    s = text_scores([hist], vecs, decay=0.5)
    assert s.shape == (1, len(vecs)) and s.dtype == np.float32
    model = VectorRecommender(vecs, decay=0.5).fit(seqs([0, 1]), len(vecs))
    ids, _ = model.recommend([hist], k=10)
    assert (cluster[ids[0]] == 2).all() and not set(ids[0]) & set(hist.tolist())
    with pytest.raises(ValueError):
        VectorRecommender(vecs).fit(seqs([0]), len(vecs) + 1)


def test_sasrec_learns_a_cycle():
    from retriever.sasrec import SASRec

    n = 12
    train = [np.array([(s + t) % n for t in range(8)]) for s in range(n) for _ in range(10)]
    hist = [np.array([(s + t) % n for t in range(5)]) for s in range(n)]
    target = np.array([(s + 5) % n for s in range(n)])
    model = SASRec(hidden=16, n_blocks=1, dropout=0.1, lr=5e-3, max_epochs=30, eval_every=10, patience=1,
                   max_len=10, batch_size=32)
    checks = []

    def validate(m):  # hit rate of the next item: what early stopping watches
        checks.append(float((m.recommend(hist, k=1)[0][:, 0] == target).mean()))
        return checks[-1]

    model.fit(train, n, validate=validate)
    assert checks and model.history[-1]["valid"] == checks[-1]
    ids, scores = model.recommend(hist, k=1)
    assert ids.shape == (n, 1) and scores.dtype == np.float32
    assert (ids[:, 0] == target).mean() >= 0.9
    assert model.epoch_seconds and model.best_epoch > 0


# ----------------------------------------------------------------------------- quick run on Beauty
@pytest.mark.skipif(not BEAUTY.is_dir(), reason=f"shared data not found at {BEAUTY} (set SEMREC_SHARED)")
def test_quick_run_beauty(tmp_path):
    from evaluation.harness import SYSTEMS, TEXT_SYSTEM, category_vectors, run_eval

    # stand-in for text embeddings: category-path multi-hot vectors, rows in the harness item order
    served = ["semrec", "semrec-no-rerank"]  # each served system is a pass over the 2,000 shoppers
    # EASE's eigendecomposition of the item Gram matrix (~10k items here) alone takes minutes on 2
    # cores; it is tested on small data in test_contracts.py
    baselines = [s for s in SYSTEMS if s != "ease"]
    res = run_eval("beauty", str(BEAUTY), str(tmp_path), quick=True, item_vectors=category_vectors,
                   systems=[*baselines, TEXT_SYSTEM, *served])
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert set(on_disk["systems"]) == {*baselines, TEXT_SYSTEM, *served}
    for name in ("results.md", "metrics.png", "cold_vs_warm.png", "accuracy_vs_latency.png", "split.json"):
        assert (tmp_path / name).is_file()
    test = {n: r["test"]["excluded"] for n, r in res["systems"].items()}
    assert res["split"]["n_eval_users"] == 2000
    assert test["markov"]["all"]["ndcg@10"] > test["popularity"]["all"]["ndcg@10"]
    # popularity's NDCG@10, recomputed by hand from the written split: the most counted items first
    split = read_split(tmp_path / "split.json")
    counts = split.train_counts()
    order = np.lexsort((np.arange(len(counts)), -counts))
    gains = []
    for hist, target in zip(split.test_history, split.test_target):
        seen = set(hist.tolist())
        top = [i for i in order[:10 + len(seen)] if i not in seen][:10]
        gains.append(1 / math.log2(top.index(target) + 2) if target in top else 0.0)
    assert test["popularity"]["all"]["ndcg@10"] == pytest.approx(np.mean(gains), abs=1e-9)
    # cold items never reach collaborative lists; item vectors do reach them
    assert test["popularity"]["cold_item"]["recall@10"] == 0.0
    assert test[TEXT_SYSTEM]["cold_item"]["recall@10"] > 0.0
    for r in test.values():
        assert 0.0 <= r["all"]["ndcg@10"] <= r["all"]["recall@10"] <= 1.0
    # semrec is the served pipeline and its ablations are configs of it (no reranker given: MMR still runs)
    assert res["systems"]["semrec"]["config"] == asdict(PipelineConfig()) and res["reranker"] is None
    assert test["semrec"]["all"]["ndcg@10"] > test["popularity"]["all"]["ndcg@10"]
    assert test["semrec"]["all"]["ndcg@10"] != test["semrec-no-rerank"]["all"]["ndcg@10"]
    assert set(res["systems"]["semrec"]["test"]) == {"excluded", "included"}  # history-included figures too
    # No claim on cold items here: with category stand-in vectors the served lists hit no cold target
    # (recall@10 0.0 on this sample); the exploration slot has its own test,
    # test_rerank_api.py::test_the_exploration_slot_keeps_its_place.
    # every pass's target ranks are kept, so two runs (here two systems of one run) pair up per shopper
    from evaluation.compare import compare

    rows = {r["slice"]: r for r in compare(tmp_path, tmp_path, "semrec", "semrec-no-rerank")}
    assert set(rows) == set(test["semrec"]) and rows["all"]["cases"] == 2000
    assert rows["all"]["ndcg_a"] == pytest.approx(test["semrec"]["all"]["ndcg@10"])
    assert rows["cold_item"]["recall_b"] == pytest.approx(test["semrec-no-rerank"]["cold_item"]["recall@10"])
    assert compare(tmp_path, tmp_path, "markov")[0]["ci"] == (0.0, 0.0)  # a run against itself
    # the README block is generated from these results
    from evaluation.readme import update_readme

    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- results:beauty:start -->\nSTALE TABLE\n<!-- results:beauty:end -->\noutro\n")
    update_readme(readme, on_disk)
    text = readme.read_text()
    assert "STALE TABLE" not in text and text.startswith("intro") and text.endswith("outro\n")
    assert f"{test['semrec']['all']['ndcg@10']:.4f}" in text


def test_comparing_what_is_not_a_run_is_one_line_with_exit_code_2(tmp_path, capsys):
    from evaluation.compare import main

    with pytest.raises(SystemExit) as e:
        main([str(tmp_path), str(tmp_path)])
    assert e.value.code == 2 and "not a harness output folder" in capsys.readouterr().err


def test_unknown_system_is_an_error():
    from evaluation.tuning import build

    with pytest.raises(ValueError, match="unknown baseline"):
        build("nope", {}, 0)
    with pytest.raises(ValueError, match="item_vectors"):
        build("text-zero-shot", {}, 0)


def test_sasrec_padding_cut_is_exact():
    import torch

    from retriever.sequence import SequenceConfig, SequenceNet, left_pad

    torch.manual_seed(0)
    net = SequenceNet(30, SequenceConfig(max_len=12, hidden=8, n_heads=2, dropout=0.0)).eval()
    hist = [np.array([3, 4, 5]), np.array([7]), np.array([1, 2, 3, 4, 5, 6])]
    with torch.no_grad():
        full = net.last_state(torch.from_numpy(left_pad(hist, 12)))
        cut = net.last_state(torch.from_numpy(left_pad(hist, 6)))
    torch.testing.assert_close(full, cut)


@pytest.mark.slow
@pytest.mark.skipif(not BEAUTY.is_dir(), reason=f"shared data not found at {BEAUTY} (set SEMREC_SHARED)")
def test_full_beauty_baselines(tmp_path):
    """Full Beauty, the fast systems (about 3 minutes): the measured order ALS > Markov > Popularity."""
    from evaluation.harness import run_eval

    res = run_eval("beauty", str(BEAUTY), str(tmp_path), systems=["popularity", "markov", "als"])
    ndcg = {n: r["test"]["excluded"]["all"]["ndcg@10"] for n, r in res["systems"].items()}
    assert res["split"]["n_eval_users"] == 22363
    assert ndcg["als"] > ndcg["markov"] > ndcg["popularity"] > 0.005


def test_readme_table_of_a_standard_run_has_its_own_block_and_no_cold_columns(tmp_path):
    from evaluation.readme import update_readme

    metrics = {"recall@10": 0.12, "ndcg@10": 0.0687, "coverage@10": 0.5}
    system = {"test": {"excluded": {"all": metrics}, "included": {"all": {**metrics, "ndcg@10": 0.0612}}},
              "fit_seconds": 1.0, "eval_seconds": 2.0}
    results = {"dataset": "beauty", "protocol": "standard", "quick": False, "wall_seconds": 60.0,
               "split": {"n_eval_users": 10, "n_items": 5, "n_cold_items": 0, "test_slices": {"all": 9}},
               "systems": {"semrec": system}}
    readme = tmp_path / "README.md"
    readme.write_text("<!-- results:beauty:start -->\ncold\n<!-- results:beauty:end -->\n"
                      "<!-- results:beauty-standard:start -->\nold\n<!-- results:beauty-standard:end -->\n")
    update_readme(readme, results)
    text = readme.read_text()
    assert "\ncold\n" in text and "\nold\n" not in text  # the cold-protocol block is left alone
    assert "0.0687" in text and "0.0612" in text and "cold items |" not in text.split("Published")[0]
