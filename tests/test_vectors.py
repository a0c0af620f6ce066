"""Every index kind agrees with exact numpy search, with and without filters."""

import uuid

import numpy as np
import pytest

from indexer.embed import normalize
from indexer.results import top_k
from indexer.vectors import FaissIndex, choose_kind, make_index

RNG = np.random.default_rng(7)
DIM = 24


CENTERS = RNG.normal(size=(17, DIM))


def clustered(n: int) -> np.ndarray:
    """Unit vectors around 17 shared centres: queries and data come from the same clusters."""
    return normalize(CENTERS[RNG.integers(0, 17, n)] + 0.5 * RNG.normal(size=(n, DIM)))


@pytest.fixture(scope="module")
def data():
    return clustered(3001), clustered(37)


MIN_RECALL = {"numpy": 1.0, "flat": 1.0, "hnsw": 0.95, "ivf": 0.9, "milvus": 0.95}
FILTERED_RECALL = {"numpy": 1.0, "flat": 1.0, "hnsw": 0.85, "ivf": 0.85, "milvus": 0.85}


@pytest.fixture
def make(request):
    """``make(kind)`` -> a new, empty index of that kind (a fresh collection for Milvus Lite)."""
    made = []

    def new(kind):
        if kind != "milvus":
            return make_index(kind, DIM)
        from indexer.milvus import MilvusIndex

        index = MilvusIndex(DIM, request.getfixturevalue("milvus_client"), f"contract_{uuid.uuid4().hex}")
        index.create()
        made.append(index)
        return index

    yield new
    for index in made:
        index.drop()


def filled(index, x, batch):
    for start in range(0, len(x), batch):  # odd batch sizes: labels must stay consecutive
        index.add(x[start:start + batch])
    if hasattr(index, "wait_indexed"):
        index.wait_indexed()
    return index


def recall(found, truth):
    return np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)])


@pytest.mark.parametrize("kind", ["numpy", "flat", "hnsw", "ivf", "milvus"])
class TestVectorIndexContract:
    """Every index kind agrees with exact numpy search, with and without an ``allowed`` mask."""

    def test_matches_brute_force(self, data, make, kind):
        x, q = data
        ref_l, ref_s = filled(make("numpy"), x, 1000).search(q, 10)
        assert np.allclose(np.sort(ref_s, axis=1)[:, ::-1], ref_s)
        index = filled(make(kind), x, 3001 if kind == "ivf" else 997)
        assert index.ntotal == len(x)
        labels, scores = index.search(q, 10)
        assert labels.shape == scores.shape == (37, 10)
        assert labels.dtype == np.int64 and scores.dtype == np.float32
        assert recall(labels, ref_l) >= MIN_RECALL[kind]
        found = labels >= 0
        assert np.allclose(scores[found], np.take_along_axis(q @ x.T, np.maximum(labels, 0), 1)[found], atol=1e-4)
        if kind in ("numpy", "flat"):
            assert np.array_equal(labels, ref_l)
            assert np.allclose(scores, ref_s, atol=1e-5)

    def test_filter_mask_is_respected(self, data, make, kind):
        x, q = data
        allowed = np.random.default_rng(1).random(len(x)) < 0.4
        index = filled(make(kind), x, 3001 if kind == "ivf" else 1201)
        labels, _ = index.search(q, 15, allowed)
        assert (labels >= 0).all()
        assert allowed[labels].all()
        ref_l, _ = filled(make("numpy"), x, 3001).search(q, 15, allowed)
        assert recall(labels, ref_l) >= FILTERED_RECALL[kind]

    def test_pads_when_fewer_than_k_qualify(self, data, make, kind):
        if kind in ("hnsw", "ivf"):
            pytest.skip("raw HNSW/IVF can come back short under a filter this selective; ItemIndex scans such "
                        "small subsets exactly instead (tested in test_store.py)")
        x, q = data
        allowed = np.zeros(len(x), dtype=bool)
        allowed[[5, 9]] = True
        labels, scores = filled(make(kind), x, 3001).search(q[:3], 4, allowed)
        assert set(labels[:, :2].ravel()) <= {5, 9}
        assert (labels[:, 2:] == -1).all() and np.isneginf(scores[:, 2:]).all()

    def test_empty_index_answers_padding(self, make, kind):
        if kind == "ivf":
            pytest.skip("IVF is trained on its first batch: an empty one cannot be built")
        labels, scores = make(kind).search(clustered(2), 3)
        assert (labels == -1).all() and np.isneginf(scores).all() and labels.shape == (2, 3)


def test_top_k_known_answer():
    labels, scores = top_k(np.array([[0.1, 0.9, 0.5], [0.3, -np.inf, 0.2]], dtype=np.float32), 3)
    assert labels.tolist() == [[1, 2, 0], [0, 2, -1]]
    assert np.isneginf(scores[1, 2])


def test_kind_by_catalog_size():
    assert choose_kind(12_000) == "flat"
    assert choose_kind(2_000_000) == "hnsw"
    with pytest.raises(ValueError, match="unknown FAISS index kind"):
        FaissIndex(DIM, "lsh")
