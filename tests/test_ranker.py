"""Pure parts of the reranker: fusion, MMR, explanations, texts and list metrics (known answers)."""

from __future__ import annotations

import numpy as np
import pytest

from indexer.results import top_labels
from ranker.assembly import out_explored
from ranker.explain import HISTORY_MIN_COSINE, Reason, closest, dense_reason, pick
from ranker.mmr import mmr
from ranker.rerank import FusionWeights, fused_scores
from ranker.texts import context_text, history_context, item_text
from ranker.train import list_loss, list_ranks
from retriever.fusion import fuse, popularity_prior, rank_normalize, zscore


# ----------------------------------------------------------------------------- fusion
def test_zscore_and_rank_normalize_known_answers():
    x = np.array([[1.0, 2.0, 3.0, -np.inf]])  # -inf: padding, no evidence
    z, r = zscore(x), rank_normalize(x)
    np.testing.assert_allclose(z[0, :3], [-np.sqrt(1.5), 0.0, np.sqrt(1.5)], rtol=1e-6)
    np.testing.assert_allclose(r[0, :3], [0.0, 0.5, 1.0])
    assert np.isnan(z[0, 3]) and np.isnan(r[0, 3])
    # constant rows carry no evidence; ties share the better rank
    assert np.all(zscore(np.array([[5.0, 5.0]])) == 0)
    np.testing.assert_allclose(rank_normalize(np.array([[2.0, 2.0, 1.0]])), [[1.0, 1.0, 0.0]])


def test_fusion_is_weighted_sum_of_normalised_components():
    labels = np.array([[10, 11, 12, -1]])
    rerank = np.array([[0.0, 1.0, 2.0, 7.0]])
    retrieval = np.array([[2.0, 1.0, 0.0, 7.0]])
    counts = np.zeros(13)
    counts[[10, 11, 12]] = [0, np.e - 1, np.e ** 2 - 1]  # log1p -> 0, 1, 2
    pop = popularity_prior(labels, counts)
    np.testing.assert_allclose(pop[0, :3], [0.0, 1.0, 2.0], atol=1e-6)
    assert np.isneginf(pop[0, 3])
    # rank-normalised: 10 -> 0 + 1 + 0, 11 -> .5 + .5 + .25, 12 -> 1 + 0 + .5; padding never comes back
    out, s = fuse([(labels, rerank), (labels, retrieval), (labels, pop)], 4, "rank", weights=[1.0, 1.0, 0.5])
    assert out.tolist() == [[12, 11, 10, -1]]
    np.testing.assert_allclose(s[0, :3], [1.5, 1.25, 1.0])
    assert np.isneginf(s[0, 3])
    aligned = counts[np.maximum(labels[0], 0)]
    ranked, _ = fused_scores(labels[0], rerank[0], retrieval[0], aligned, FusionWeights(1.0, 0.0, 0.0), 4)
    assert ranked.tolist() == [12, 11, 10, -1]
    ranked, _ = fused_scores(labels[0], rerank[0], retrieval[0], aligned, FusionWeights(0.0, 1.0, 0.0), 2)
    assert ranked.tolist() == [10, 11]
    assert rerank.tolist() == [[0.0, 1.0, 2.0, 7.0]]  # pure: inputs untouched
    with pytest.raises(ValueError):
        fuse([(labels, rerank)], 4, "nope")


def test_top_labels_breaks_ties_by_label_and_pads_last():
    labels, scores = top_labels(np.array([[1, 3, 2, -1]]), np.array([[0.5, 0.5, 0.9, -np.inf]]), 5)
    assert labels.tolist() == [[2, 1, 3, -1, -1]] and np.isneginf(scores[0, 3:]).all()


# ----------------------------------------------------------------------------- MMR
def _near_duplicates():
    # items 0,1,2 are near-duplicates (shades of one lipstick); 3 and 4 point elsewhere
    v = np.array([[1.0, 0.0, 0.0], [0.99, 0.141, 0.0], [0.98, 0.199, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    labels = np.array([[0, 1, 2, 3, 4, -1]])
    relevance = np.array([[1.0, 0.95, 0.9, 0.6, 0.5, 0.0]])
    return labels, relevance, v.astype(np.float32)


def test_mmr_lambda_one_is_relevance_order():
    labels, relevance, v = _near_duplicates()
    out, scores = mmr(labels, relevance, v, k=5, lam=1.0)
    assert out.tolist() == [[0, 1, 2, 3, 4]]
    assert np.all(np.diff(scores[0]) <= 0)
    out, _ = mmr(labels, relevance, v, k=7, lam=1.0)  # padding never picked
    assert out.tolist() == [[0, 1, 2, 3, 4, -1, -1]]


def test_mmr_small_lambda_breaks_up_near_duplicates():
    labels, relevance, v = _near_duplicates()
    out, _ = mmr(labels, relevance, v, k=3, lam=0.3)
    assert out.tolist() == [[0, 3, 4]]  # the best item, then the two unlike it, not its shades
    out, _ = mmr(labels, relevance, v, k=5, lam=0.3)
    assert out[0, :3].tolist() == [0, 3, 4] and sorted(out[0, 3:].tolist()) == [1, 2]
    with pytest.raises(ValueError):
        mmr(labels, relevance, v, k=3, lam=1.5)


# ----------------------------------------------------------------------------- explanations
def _unit(*rows):
    a = np.array(rows, dtype=np.float32)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def test_dense_reason_names_the_closest_history_item_above_the_threshold():
    history = _unit([1, 0, 0], [0, 1, 0])
    titles = ["Argan oil shampoo", "Volume mascara waterproof black extra long lashes in two shades"]
    r = dense_reason(_unit([0.1, 1, 0])[0], history_vectors=history, history_titles=titles,
                     history_verbs=["viewed", "rated"])
    assert r.kind == "history" and r.evidence.startswith("Volume mascara")
    assert r.text == "because you rated Volume mascara waterproof black extra long lashes in…"
    assert r.score == pytest.approx(float(_unit([0.1, 1, 0])[0, 1]))
    far = _unit([1, 0, 0], [0, 0, 1])  # cosine 0.40 to the item: under HISTORY_MIN_COSINE, nothing is named
    item = _unit([0.4, np.sqrt(1 - 0.16), 0])[0]
    assert float(far[0] @ item) < HISTORY_MIN_COSINE
    assert dense_reason(item, history_vectors=far, history_titles=["Shampoo", "Tent"]) is None


def test_dense_reason_prefers_a_closer_interest_and_an_interest_wins_ties():
    item = _unit([1, 1, 0])[0]
    history = _unit([1, 0, 0])
    interests = _unit([1, 1, 0.1])
    r = dense_reason(item, history_vectors=history, history_titles=["Shampoo"], interest_vectors=interests,
                     interests=["vegan skin care"])
    assert r.kind == "interest" and r.text == "matches your interest in vegan skin care"
    tie = dense_reason(item, history_vectors=history, history_titles=["Shampoo"], interest_vectors=history,
                       interests=["hair care"])
    assert tie.kind == "interest"


def test_pick_reads_the_sources_in_order_and_falls_back_to_a_generic_sentence():
    named = Reason("history", "because you rated X", "X", 0.8)
    assert pick(["dense", "popular"], {"dense": named}) is named
    assert pick(["dense", "popular"], {"dense": None}).text == "popular with shoppers now"
    assert pick(["covisit", "trending"], {"covisit": None}).kind == "trending"
    assert pick(["new"], {}).text == "new in the catalog"
    assert pick(["mf", "encoder"], {}).text == "picked for you"
    assert pick([], {}).kind == "personal"
    assert closest(_unit([1, 0])[0], None, 0.1) == (-1, 0.0)


# ----------------------------------------------------------------------------- texts and list metrics
def test_texts_are_newest_first_and_cut():
    assert item_text("A very long product title here", "Brand", ["Beauty", "Skin"], max_words=2) == \
        "A very | Brand | Skin"
    short = ["oldest", "middle", "newest"]
    assert history_context(np.array([0, 1, 2]), short, 2) == "recent: newest ; middle"
    assert context_text([], ["hair"], "dryer") == "search: dryer | interests: hair"


def test_list_ranks_and_loss():
    s = np.array([[0.1, 0.9, 0.5], [1.0, 1.0, 0.0]])
    assert list_ranks(s, np.array([2, 1])).tolist() == [1, 1]  # ties: earlier column first
    assert list_loss(np.zeros((1, 4)), np.array([0])) == pytest.approx(np.log(4))


def test_exploration_takes_the_last_place_only_when_the_list_has_no_new_item():
    fresh = np.zeros(10, dtype=bool)
    fresh[[3, 7]] = True
    kept = (np.array([7, 3]), np.array([0.5, 0.4], dtype=np.float32))
    labels, scores = np.array([3, 0, 1, 2, 4]), np.arange(5, 0, -1).astype(np.float32)
    # a new item the ranking placed first keeps first place; nothing is appended
    out, _, n = out_explored(labels, scores, kept, fresh, 1, 4)
    assert out.tolist() == [3, 0, 1, 2] and n == 0
    # two slots: the one new item shown counts, the best new item missing takes the last place
    out, s, n = out_explored(labels, scores, kept, fresh, 2, 4)
    assert out.tolist() == [3, 0, 1, 7] and n == 1 and s[-1] == np.float32(0.5)
    # no new item in the ranking: the best kept one replaces the last place
    out, _, n = out_explored(np.array([0, 1, 2, 4, 5]), scores, kept, fresh, 1, 4)
    assert out.tolist() == [0, 1, 2, 7] and n == 1
    # a short list is extended, not cut
    out, _, n = out_explored(np.array([0]), scores[:1], kept, fresh, 1, 4)
    assert out.tolist() == [0, 7] and n == 1


def test_the_reranker_scores_the_first_candidates_and_the_new_ones_after_them():
    from ranker.rerank import feature_positions

    labels = np.array([5, 3, 8, 1, 9, 2, 7], dtype=np.int64)
    fresh = np.zeros(10, dtype=bool)
    fresh[[3, 9, 2, 7]] = True  # 3 is in the first two already; 9, 2, 7 come later (two of them scored)
    assert feature_positions(labels, fresh, 2).tolist() == [0, 1, 4, 5]
    assert feature_positions(labels, None, 2).tolist() == [0, 1]
    assert feature_positions(labels[:1], fresh, 2).tolist() == [0]
