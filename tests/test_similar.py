"""Similar items on a tiny real catalog with known answers, and against brute force."""

import numpy as np

from indexer.table import Filters
from retriever.similar import drop_labels, similar_items


def ids(index, labels):
    return [i for i in index.table.ids(labels)[0] if i is not None]


def test_nearest_neighbour_of_a_hair_dryer_is_a_hair_dryer(tiny_index):
    labels, scores = similar_items(tiny_index, ["dryer"], k=3)
    found = ids(tiny_index, labels)
    assert found[0] == "dryer-travel"
    assert "dryer" not in found
    assert np.all(np.diff(scores[0]) <= 0)


def test_duplicates_by_title_are_excluded(tiny_index):
    found = ids(tiny_index, similar_items(tiny_index, ["lipstick-red"], k=8)[0])
    assert "lipstick-red-2" not in found and "lipstick-red" not in found
    assert found[0] == "lipstick-nude"
    kept = ids(tiny_index, similar_items(tiny_index, ["lipstick-red"], k=8, exclude_duplicates=False)[0])
    assert kept[0] == "lipstick-red-2"


def test_filters(tiny_index):
    found = ids(tiny_index, similar_items(tiny_index, ["dryer"], 10, Filters(category="Coffee"))[0])
    assert sorted(found) == ["espresso", "grinder"]
    found = ids(tiny_index, similar_items(tiny_index, ["lipstick-red"], 10, Filters(in_stock=False))[0])
    assert found == ["lipstick-nude"]
    # The grinder has no price: it never passes a price filter.
    found = ids(tiny_index, similar_items(tiny_index, ["espresso"], 10, Filters(max_price=30))[0])
    assert "grinder" not in found and len(found) == 3 and {"dryer-travel", "lipstick-nude"} < set(found)
    assert len({"lipstick-red", "lipstick-red-2"} & set(found)) == 1  # two listings of one product: one shown


def test_matches_brute_force(tiny_index):
    v = tiny_index.vectors.view
    labels, scores = similar_items(tiny_index, ["espresso", "tent", "dryer"], k=4, exclude_duplicates=False)
    for row, item in enumerate(["espresso", "tent", "dryer"]):
        me = tiny_index.table.label_of[item]
        s = v @ v[me]
        s[me] = -np.inf
        assert np.allclose(scores[row], np.sort(s)[::-1][:4], atol=1e-5)


def test_drop_labels_known_answer():
    labels = np.array([[3, 1, 2, -1]])
    scores = np.array([[0.9, 0.8, 0.7, -np.inf]], dtype=np.float32)
    out_l, out_s = drop_labels(labels, scores, [{1}], 3)
    assert out_l.tolist() == [[3, 2, -1]] and np.isneginf(out_s[0, 2])
