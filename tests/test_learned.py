"""The served pipeline's learned parts on a real Beauty slice: MF fold-in, the history encoder (a
product upserted a second ago is retrievable from its text), the learned ranking, and artifacts
that load back to the same lists."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pytest

from api.deps import attach_models
from api.settings import Settings
from evaluation.learned import LearnedConfig, RankingConfig, fit_learned, ranking_groups
from evaluation.protocol import leave_one_out, sequences_from_reviews
from evaluation.served import Replay
from ranker.artifacts import Models, ModelsLoadError, save_models
from ranker.pipeline import PipelineConfig, recommend_users
from retriever.ease import EASEConfig, EASEModel, fit_ease_rows
from retriever.mf import MFConfig, MFModel, least_squares_fold_in
from retriever.sequence import SequenceConfig

SMALL = LearnedConfig(mf=MFConfig(factors=16, iterations=5), ease_lams=(10.0, 500.0),
                      encoder=SequenceConfig(item_input="text+id", hidden=32, max_epochs=4, eval_every=2, patience=1,
                                             lr=3e-3, negatives=128, eval_users=None),
                      ranking=RankingConfig(users=None, rounds=60, min_data_in_leaf=5, require_gain=False))


@pytest.fixture(scope="module")
def learned(beauty_small, embedder, tmp_path_factory):
    catalog, vectors = beauty_small
    sequences, item_ids, user_ids = sequences_from_reviews(catalog.reviews)
    split = leave_one_out(sequences, item_ids, user_ids, seed=0, protocol="standard")
    replay = Replay.build(split, catalog.items, vectors, embedder, tmp_path_factory.mktemp("learned"), progress=False)
    record = fit_learned(replay, vectors, SMALL)
    yield replay, record, vectors
    replay.close()


def test_the_replay_clock_stands_still_so_two_runs_of_a_split_agree(learned):
    replay = learned[0]
    cfg = replace(SMALL.ranking, users=60)
    first = ranking_groups(replay, PipelineConfig(), cfg)
    time.sleep(1.5)  # the wall clock moves on; the replay's does not
    again = ranking_groups(replay, PipelineConfig(), cfg)
    assert len(first[2]) >= 10
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)  # bit for bit: time-decayed interests, ages, popularity


def test_fold_in_with_strengths_is_the_weighted_als_solve():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(6, 3))
    got = least_squares_fold_in(v, [np.array([1, 4, 4])], alpha=2.0, reg=0.5, strengths=[np.array([1.0, 0.2, 0.5])])
    c = np.ones(6)
    c[[1, 4]] = 1 + 2.0 * np.array([1.0, 0.5])  # a repeat keeps its strongest event
    p = np.zeros(6)
    p[[1, 4]] = 1.0
    want = np.linalg.solve(v.T @ (c[:, None] * v) + 0.5 * np.eye(3), v.T @ (c * p))
    np.testing.assert_allclose(got[0], want, rtol=1e-5)


def test_every_part_was_fitted_on_the_fit_data(learned):
    _, record, _ = learned
    assert set(record) == {"mf", "ease", "encoder", "ranking"}
    assert record["encoder"]["best_epoch"] >= 1 and record["ranking"]["groups"] >= 20
    trials = record["ease"]["valid_ndcg@10"]  # the lambda kept is the one validation preferred
    assert set(trials) == {"10.0", "500.0"} and trials[str(record["ease"]["config"]["lam"])] == max(trials.values())


def test_learned_parts_change_the_list_and_the_stages_say_so(learned):
    replay, _, _ = learned
    users = [str(replay.split.user_ids[u]) for u in replay.split.users[:20]]
    on = recommend_users(replay.svc, PipelineConfig(), users, 10)
    off = recommend_users(replay.svc, replace(PipelineConfig(), learned_ranking=False,
                                              candidates=replace(PipelineConfig().candidates, mf=0, encoder=0,
                                                                 ease=0)),
                          users, 10)
    assert all(s[0] == "learned" for s in on.stages) and all(s[0] == "fusion" for s in off.stages)
    assert not np.array_equal(on.labels, off.labels)
    assert any("encoder" in src for row in on.sources for src in row)
    assert any("mf" in src for row in on.sources for src in row)
    assert any("ease" in src for row in on.sources for src in row)


def test_an_item_upserted_now_is_retrievable_by_the_encoder_from_its_text(learned):
    replay, _, vectors = learned
    svc = replay.svc
    user = replay.split.valid_history[0]
    twin = int(user[-1])  # a new listing with the same text as the shopper's last item
    record = dict(svc.index.table.records[twin])
    record.update(item_id="brand-new-twin")
    from indexer.schema import make_items

    svc.index.add(make_items([record]), vectors[twin][None])
    label = svc.index.table.label_of["brand-new-twin"]
    u = svc.encoder.user_vectors([list(user)])[0]
    allowed = np.ones(svc.index.table.n_labels, dtype=bool)
    labels, _ = svc.encoder.candidates(svc.index, u, 50, allowed)
    assert label in labels.tolist()  # no interaction, no ID embedding: its text alone put it there
    assert "brand-new-twin" not in svc.mf.row_of  # MF does not know it: only the text sources can answer
    svc.index.delete("brand-new-twin")


def test_artifacts_load_back_to_the_same_lists(learned, tmp_path):
    replay, record, _ = learned
    svc = replay.svc
    path = save_models(Models(svc.mf, svc.encoder, svc.ranking, svc.ease), tmp_path / "models", {"parts": record})
    assert path.name == "v0001" and (path / "MODEL_CARD.md").is_file()
    users = [str(replay.split.user_ids[u]) for u in replay.split.users[:15]]
    before = recommend_users(svc, PipelineConfig(), users, 10).labels
    old = (svc.mf, svc.encoder, svc.ranking, svc.ease)
    svc.mf = svc.encoder = svc.ranking = svc.ease = None
    # what the server does at start-up: the newest version under SEMREC_MODELS_DIR
    loaded = attach_models(Settings(index_dir=tmp_path / "index", models_dir=tmp_path / "models"), svc)
    assert loaded.path == path and None not in (svc.mf, svc.encoder, svc.ranking, svc.ease)
    try:
        np.testing.assert_array_equal(recommend_users(svc, PipelineConfig(), users, 10).labels, before)
    finally:
        svc.mf, svc.encoder, svc.ranking, svc.ease = old


def test_mf_save_load_roundtrip(tmp_path):
    m = MFModel(["a", "b", "c"], np.arange(6, dtype=np.float32).reshape(3, 2), MFConfig(factors=2))
    m.save(tmp_path / "mf")
    back = MFModel.load(tmp_path / "mf")
    assert back.item_ids == ["a", "b", "c"] and np.array_equal(back.factors, m.factors)
    np.testing.assert_allclose(back.user_vectors([["a", "c"]], [["purchase", "view"]]),
                               m.user_vectors([["a", "c"]], [["purchase", "view"]]))


def test_a_missing_models_dir_fails_at_start_up_and_the_default_one_is_optional(learned, tmp_path):
    svc = learned[0].svc
    with pytest.raises(ModelsLoadError, match="semrec train"):
        attach_models(Settings(index_dir=tmp_path, models_dir=tmp_path / "nothing"), svc)
    assert attach_models(Settings(index_dir=tmp_path), svc) is None  # no <index>/models: served without


def test_a_ranking_no_better_than_the_fusion_is_not_served(learned):
    replay, record, _ = learned
    from evaluation.learned import fit_ranking

    never_splits = replace(SMALL.ranking, rounds=50, min_data_in_leaf=10**9, require_gain=True)
    model, info = fit_ranking(replay, PipelineConfig(), never_splits)
    assert model is None and "skipped" in info  # no split possible: a constant, the fusion's order at best


def test_ease_rows_are_the_closed_form_pruned_to_the_strongest_neighbours():
    rng = np.random.default_rng(1)
    seqs = [rng.choice(12, size=int(rng.integers(2, 6)), replace=False) for _ in range(80)]
    x = np.zeros((80, 12))
    for u, s in enumerate(seqs):
        x[u, s] = 1.0
    p = np.linalg.inv(x.T @ x + 5.0 * np.eye(12))
    b = np.eye(12) - p / np.diag(p)[None, :]
    items, pruned = fit_ease_rows(seqs, 12, EASEConfig(lam=5.0, neighbours=3))
    assert items.tolist() == list(range(12))
    dense = pruned.toarray()
    for r in range(12):
        kept = np.flatnonzero(dense[r])
        want = np.argsort(-np.where(np.arange(12) == r, -np.inf, b[r]))[:3]
        want = want[b[r, want] > 0]
        assert sorted(kept.tolist()) == sorted(want.tolist())
        np.testing.assert_allclose(dense[r, kept], b[r, kept], rtol=1e-4)


def test_ease_scores_follow_the_latest_event_and_skip_unknown_items(tmp_path):
    seqs = [np.array([0, 1]), np.array([0, 1]), np.array([2, 3]), np.array([2, 3]), np.array([1, 2])]
    items, weights = fit_ease_rows(seqs, 5, EASEConfig(lam=0.5))  # item 4: nobody touched it
    assert items.tolist() == [0, 1, 2, 3]
    model = EASEModel(["a", "b", "c", "d"], weights, EASEConfig(lam=0.5))
    before, after, none = model.user_scores([["a"], ["a", "c"], ["zzz"]])
    assert none is None  # nothing the model knows: no EASE query
    assert np.argmax(before) == 1 and after[3] > before[3]  # a new event changes the scores at once
    model.save(tmp_path / "ease")
    back = EASEModel.load(tmp_path / "ease")
    np.testing.assert_array_equal(back.user_scores([["a", "c"]])[0], after)


def test_a_running_service_swaps_in_a_newly_published_version_and_skips_a_broken_one(learned, tmp_path):
    from api.deps import Components

    replay, record, _ = learned
    svc = replay.svc
    old = (svc.mf, svc.encoder, svc.ranking, svc.ease, svc.models_path)
    users = [str(replay.split.user_ids[u]) for u in replay.split.users[:10]]
    before = recommend_users(svc, PipelineConfig(), users, 10).labels
    root = tmp_path / "models"
    c = Components(Settings(index_dir=tmp_path / "index", models_dir=root), svc)
    listeners = len(svc.index._listeners)
    try:
        first = save_models(Models(svc.mf, svc.encoder, svc.ranking, svc.ease), root, {"parts": record})
        assert c.refresh_models() and svc.models_path == first and not c.refresh_models()  # once per version
        np.testing.assert_array_equal(recommend_users(svc, PipelineConfig(), users, 10).labels, before)
        broken = save_models(Models(svc.mf, svc.encoder, svc.ranking, svc.ease), root, {"parts": record})
        (broken / "ranking" / "ranking.json").write_text("{")
        assert not c.refresh_models() and svc.models_path == first and c.skipped_models == broken
        third = save_models(Models(svc.mf, svc.encoder, svc.ranking, svc.ease), root, {"parts": record})
        assert c.refresh_models() and svc.models_path == third
        assert len(svc.index._listeners) == listeners  # one encoder follows the index: the replaced ones stopped
    finally:
        svc.encoder.detach()
        svc.mf, svc.encoder, svc.ranking, svc.ease, svc.models_path = old
        svc.index.subscribe(svc.encoder._on_update)  # the fixture's encoder follows the index again


def test_the_ranking_reads_the_rerankers_score_and_a_version_serves_the_two_together(learned, trained_split, tmp_path):
    from evaluation.learned import fit_ranking
    from ranker.model import Reranker

    replay, record, _ = learned
    svc = replay.svc
    old = (svc.mf, svc.encoder, svc.ranking, svc.ease, svc.reranker, svc.models_path)
    users = [str(replay.split.user_ids[u]) for u in replay.split.users[:15]]
    rr = Reranker(trained_split[0], variant="fp32")
    rr.attach(svc.index)
    svc.reranker = rr
    try:
        model, info = fit_ranking(replay, PipelineConfig(), SMALL.ranking)
        assert "reranker" in info["features"] and model.reads("reranker")  # its splits use the logit
        svc.ranking = model
        on = recommend_users(svc, PipelineConfig(), users, 10)
        assert all(s[:2] == ("learned", "rerank") for s in on.stages)  # scored once, as a feature
        off = recommend_users(svc, replace(PipelineConfig(), use_reranker=False), users, 10)
        assert all("rerank" not in s for s in off.stages) and not np.array_equal(on.labels, off.labels)
        path = save_models(Models(svc.mf, svc.encoder, model, svc.ease, rr), tmp_path / "models", {"parts": record})
        assert (path / "reranker" / "ranker.json").is_file()
        svc.ranking = svc.reranker = None
        loaded = attach_models(Settings(index_dir=tmp_path / "index", models_dir=tmp_path / "models"), svc)
        assert svc.reranker is loaded.reranker and loaded.reranker.attached_to(svc.index)
        np.testing.assert_array_equal(recommend_users(svc, PipelineConfig(), users, 10).labels, on.labels)
    finally:
        for part in {rr, svc.reranker} - {None}:
            part.detach()
        if svc.encoder is not old[1]:  # the loaded version's encoder replaced the fixture's
            svc.encoder.detach()
            svc.index.subscribe(old[1]._on_update)
        svc.mf, svc.encoder, svc.ranking, svc.ease, svc.reranker, svc.models_path = old
