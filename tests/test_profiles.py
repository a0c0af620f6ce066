"""Profile, fusion and collaborative-signal math: plain functions with known answers."""

import numpy as np

from indexer.embed import normalize
from retriever.candidates import round_robin
from retriever.covisit import CoVisitation, DecayedCounter
from retriever.eventstore import StoredEvent
from retriever.fusion import fuse
from retriever.profiles import allocate, event_weights, interest_vectors

DAY = 86_400.0


def test_event_weights_by_type_stars_and_age():
    w = event_weights(["view", "purchase", "rating", "rating", "click"], [None, None, 5.0, 2.0, None],
                      np.array([0, 0, 0, 0, -30 * DAY]), now=0.0, half_life_days=30)
    assert np.allclose(w, [1.0, 6.0, 6.0, 0.0, 1.0])
    assert np.isclose(event_weights(["view"], [None], np.array([0.0]), 60 * DAY, 30)[0], 0.25)


def test_two_interests_stay_apart_and_close_ones_merge():
    rng = np.random.default_rng(0)
    a, b = normalize(rng.normal(size=(2, 32)))
    x = normalize(np.vstack([a + 0.05 * rng.normal(size=(6, 32)), b + 0.05 * rng.normal(size=(3, 32))]))
    centres, masses = interest_vectors(x, np.array([1.0] * 6 + [2.0] * 3), max_interests=3)
    assert len(centres) == 2
    assert np.allclose(masses, [0.5, 0.5], atol=1e-6)
    assert {int(np.argmax(centres @ np.stack([a, b]).T, axis=1)[i]) for i in range(2)} == {0, 1}
    one, mass = interest_vectors(x[:6], np.ones(6), max_interests=3)
    assert len(one) == 1 and mass[0] == 1.0
    none, _ = interest_vectors(x, np.zeros(9))
    assert none.shape == (0, 32)


def test_allocate_slots_by_mass():
    assert allocate(np.array([0.7, 0.2, 0.1]), 10).tolist() == [7, 2, 1]
    assert allocate(np.array([0.98, 0.01, 0.01]), 10).tolist() == [8, 1, 1]
    assert allocate(np.array([0.5, 0.3, 0.2]), 2).tolist() == [1, 1, 0]
    assert allocate(np.zeros(0), 5).tolist() == []


def run(labels):
    return np.array([labels]), np.array([[1.0] * len(labels)], dtype=np.float32)


def test_rrf_known_answer():
    # 0: 1/1; 1: 1/2 + .5/1 (a tie with 0: the lower label first); 2: .5/2
    labels, scores = fuse([run([0, 1]), run([1, 2])], 4, "rrf", weights=[1.0, 0.5], rrf_k=0)
    assert labels.tolist() == [[0, 1, 2, -1]]
    np.testing.assert_allclose(scores[0, :3], [1.0, 1.0, 0.25])
    off, _ = fuse([run([0]), run([0, 1])], 2, "rrf", weights=[1.0, 0.0], rrf_k=0)  # weight 0: no part at all
    assert off.tolist() == [[0, -1]]


def test_round_robin_over_categories():
    out = round_robin(np.array([10, 11, 12, 20, 30, 21]), ["A", "A", "A", "B", "C", "B"], 5)
    assert out.tolist() == [10, 20, 30, 11, 21]


def ev(user, item, t=0.0, kind="view"):
    return StoredEvent(user, item, kind, None, t)


def test_covisitation_counts_and_removal():
    cv = CoVisitation(window=2, reverse=0.5)
    cv.add([ev("u", "a"), ev("u", "b"), ev("u", "c"), ev("v", "a"), ev("v", "b")])
    items, scores = cv.neighbours(["a"], 5)
    assert items[0] == "b"  # a -> b twice, a -> c once at distance 2
    assert np.isclose(scores[0], 2.0 / (2.0 + 0.5))
    cv.forget_user("v")
    cv.add([ev("v", "a"), ev("v", "b")], sign=-1)
    assert np.isclose(cv.counts["a"]["b"], 1.0) and np.isclose(cv.totals["a"], 1.5)


def test_decayed_counter_prefers_recent_and_counts_interactions():
    pop = DecayedCounter(half_life_s=DAY)
    pop.add([ev("u", "old", 0.0, "purchase"), ev("u", "new", 2 * DAY, "view"), ev("v", "new", 2 * DAY, "view")])
    items, scores = pop.top(5)
    assert items == ["new", "old"] and np.isclose(scores[1], 0.75)  # a purchase (6) two half-lives ago: 1.5 < 2
    pop.add([ev("w", "new", 3 * DAY, "view")])
    assert pop.top(1)[0] == ["new"] and pop.interactions("new") == 3
    assert pop.top(5, keep=lambda i: i != "new")[0] == ["old"]
    pop.add([ev("w", "far", 200 * DAY)])  # rebasing keeps the order
    assert pop.top(1)[0] == ["far"] and pop.interactions("old") == 1
