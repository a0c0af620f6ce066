"""One contract per stage, run against every implementation behind it (as benfred/implicit's shared
recommender tests): every harness recommender, and every candidate source of the served pipeline."""

from __future__ import annotations

import time

import numpy as np
import pytest

from indexer.table import Filters
from retriever import candidates
from retriever.collaborative import ALS, BPR, Markov, Popularity, VectorRecommender
from retriever.ease import EASE, EASEConfig, EASEModel, fit_ease_rows
from retriever.eventstore import StoredEvent
from retriever.mf import MFConfig, MFModel, fit_factors
from retriever.profiles import build_profile
from retriever.sasrec import SASRec
from retriever.state import InteractionState

N_ITEMS = 40


def _sequences(n_users: int = 60, seed: int = 0) -> list[np.ndarray]:
    """Users walk a ring of items (i -> i+1 mostly): a pattern every model can pick up."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_users):
        start, length = int(rng.integers(N_ITEMS)), int(rng.integers(4, 10))
        out.append(((start + np.arange(length)) % N_ITEMS).astype(np.int64))
    return out


def _vectors() -> np.ndarray:
    angles = 2 * np.pi * np.arange(N_ITEMS) / N_ITEMS  # neighbours on the ring are close
    v = np.stack([np.cos(angles), np.sin(angles), np.full(N_ITEMS, 0.1)], axis=1).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


RECOMMENDERS = {
    "popularity": Popularity,
    "markov": lambda: Markov(window=3, decay=0.8, symmetric=True),
    "als": lambda: ALS(factors=8, iterations=5, alpha=10.0, seed=0),
    "bpr": lambda: BPR(factors=8, iterations=20, learning_rate=0.05, seed=0),
    "ease": lambda: EASE(lam=10.0),
    "sasrec": lambda: SASRec(max_epochs=2, eval_every=1, patience=1, lr=5e-3, seed=0),
    "text-zero-shot": lambda: VectorRecommender(_vectors()),
}


@pytest.fixture(params=sorted(RECOMMENDERS), scope="module")
def fitted(request):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = RECOMMENDERS[request.param]()
    seqs = _sequences()
    model.fit(seqs, N_ITEMS)
    return model


class TestRecommenderContract:
    histories = [np.array([3, 4, 5]), np.array([20]), np.array([], dtype=np.int64)]

    def test_score_covers_every_item(self, fitted):
        s = fitted.score(self.histories)
        assert s.shape == (3, N_ITEMS) and s.dtype == np.float32 and np.isfinite(s).all()

    def test_recommend_is_the_one_result_shape(self, fitted):
        ids, scores = fitted.recommend(self.histories, k=N_ITEMS + 5)
        assert ids.shape == scores.shape == (3, N_ITEMS + 5)
        assert ids.dtype == np.int64 and scores.dtype == np.float32
        for row_ids, row_s, hist in zip(ids, scores, self.histories):
            live = row_ids >= 0
            assert np.all(np.isneginf(row_s[~live])) and live.sum() == N_ITEMS - len(set(hist.tolist()))
            assert not set(row_ids[live].tolist()) & set(hist.tolist())  # history excluded
            assert np.all(np.diff(row_s[live]) <= 0) and len(set(row_ids[live].tolist())) == live.sum()

    def test_deterministic(self, fitted):
        a, b = fitted.recommend(self.histories, k=10), fitted.recommend(self.histories, k=10)
        np.testing.assert_array_equal(a[0], b[0])


# ----------------------------------------------------------------------------- candidate sources
@pytest.fixture(scope="module")
def world(tiny_index):
    """The tiny catalog with a few shoppers' events counted, and a shopper who viewed the dryer;
    the learned sources (MF, EASE) fitted on those shoppers."""
    now = time.time()
    state = InteractionState()
    pairs = [("a", "dryer"), ("a", "dryer-travel"), ("a", "straightener"), ("b", "dryer"), ("b", "straightener"),
             ("c", "espresso"), ("c", "grinder"), ("d", "lipstick-red"), ("d", "lipstick-nude")]
    state.apply([StoredEvent(u, i, "view", None, now - 60 + n) for n, (u, i) in enumerate(pairs)])
    vec = tiny_index.vectors_of(["dryer"])
    profile = build_profile(vec, np.ones(1, np.float32), history=["dryer"])
    ids = sorted({i for _, i in pairs})
    seqs = [np.array([ids.index(i) for v, i in pairs if v == u]) for u in "abcd"]
    rows, weights = fit_ease_rows(seqs, len(ids), EASEConfig(lam=1.0))
    models = {"mf": MFModel(ids, fit_factors(seqs, None, len(ids), MFConfig(factors=4, iterations=5)),
                            MFConfig(factors=4)),
              "ease": EASEModel([ids[r] for r in rows], weights)}
    return tiny_index, state, profile, models


SOURCES = {
    "dense": lambda idx, st, p, m, n, allowed: candidates.dense(idx, p, n, allowed),
    "covisit": lambda idx, st, p, m, n, allowed: candidates.covisit(idx, st, p.history, n, allowed),
    "popular": lambda idx, st, p, m, n, allowed: candidates.popular(idx, st, 30.0, n, allowed),
    "trending": lambda idx, st, p, m, n, allowed: candidates.popular(idx, st, 1.0, n, allowed),
    "new": lambda idx, st, p, m, n, allowed: candidates.explore(idx, p, allowed, set(), candidates.CandidateConfig(
        explore_slots=n, explore_min_cosine=-1.0)),
    "mf": lambda idx, st, p, m, n, allowed: m["mf"].candidates(
        idx, m["mf"].user_vectors([p.history], [["view"]])[0], n, allowed),
    "ease": lambda idx, st, p, m, n, allowed: m["ease"].candidates(idx, m["ease"].user_scores([p.history])[0], n,
                                                                   allowed),
}


@pytest.mark.parametrize("name", sorted(SOURCES))
class TestCandidateSourceContract:
    def run(self, world, name, n, filters=None):
        index, state, profile, models = world
        allowed = candidates.allowed_mask(index, filters, frozenset({"dryer"}))
        return allowed, SOURCES[name](index, state, profile, models, n, allowed)

    def test_a_ranked_run_of_allowed_labels(self, world, name):
        allowed, (labels, scores) = self.run(world, name, 5)
        assert labels.ndim == scores.ndim == 1 and len(labels) == len(scores) <= 5
        assert labels.dtype == np.int64 and scores.dtype == np.float32
        assert len(labels) > 0, f"{name} proposed nothing for a shopper with history"
        assert np.all(labels >= 0) and allowed[labels].all() and len(set(labels.tolist())) == len(labels)
        assert np.all(np.diff(scores) <= 1e-6)

    def test_filters_hold(self, world, name):
        index = world[0]
        allowed, (labels, _) = self.run(world, name, 9, Filters(category="Hair Care"))
        assert all("Hair Care" in index.table.records[lab]["categories"] for lab in labels)
        assert index.table.label_of["dryer"] not in labels.tolist()  # excluded items never come back
