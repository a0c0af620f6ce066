"""ItemIndex: upserts, deletes, filters, persistence, write-ahead log replay, mismatch errors."""

import json

import numpy as np
import pytest

from indexer.embed import normalize
from indexer.schema import make_items
from indexer.store import EXACT_SUBSET_MAX, IndexMismatchError, ItemIndex
from indexer.table import Filters

DIM = 16
RNG = np.random.default_rng(3)


def random_index(n: int, kind: str = "flat") -> tuple[ItemIndex, np.ndarray]:
    idx = ItemIndex(model="test-model", dim=DIM, kind=kind)
    vecs = normalize(RNG.normal(size=(n, DIM)))
    items = make_items([{"item_id": f"i{j}", "title": f"item {j}", "brand": "odd" if j % 2 else "even",
                         "categories": ["All", f"C{j % 5}"], "price": float(j), "in_stock": j % 3 != 0}
                        for j in range(n)])
    idx.add(items, vecs)
    return idx, vecs


def brute(vecs, q, k, allowed):
    s = q @ vecs.T
    s[:, ~allowed] = -np.inf
    return np.argsort(-s, axis=1, kind="stable")[:, :k]


def test_filters_match_brute_force():
    idx, vecs = random_index(301)
    q = normalize(RNG.normal(size=(5, DIM)))
    f = Filters(category="c3", brand="ODD", min_price=50, max_price=250, in_stock=True)
    labels, scores = idx.search(q, 7, f)
    j = np.arange(301)
    allowed = (j % 5 == 3) & (j % 2 == 1) & (j >= 50) & (j <= 250) & (j % 3 != 0)
    assert np.array_equal(labels, brute(vecs, q, 7, allowed))
    assert np.all(np.diff(scores, axis=1) <= 0)


def test_selective_filter_on_hnsw_is_exact():
    idx, vecs = random_index(2 * EXACT_SUBSET_MAX // 1000 + 2001, kind="hnsw")
    q = normalize(RNG.normal(size=(3, DIM)))
    labels, _ = idx.search(q, 5, Filters(category="c1", max_price=40))
    j = np.arange(len(vecs))
    assert np.array_equal(labels, brute(vecs, q, 5, (j % 5 == 1) & (j <= 40)))


def test_a_filter_nothing_passes_on_hnsw_gives_padding():
    idx, _ = random_index(60, kind="hnsw")
    labels, scores = idx.search(normalize(RNG.normal(size=(2, DIM))), 4, Filters(brand="nobody"))
    assert (labels == -1).all() and np.isneginf(scores).all()


def test_upsert_replaces_and_delete_hides():
    idx, vecs = random_index(50)
    q = vecs[7:8]
    assert idx.search(q, 1)[0][0, 0] == 7
    new = normalize(RNG.normal(size=(1, DIM)))
    idx.add(make_items([{"item_id": "i7", "title": "item 7 v2"}]), new)
    assert len(idx) == 50
    assert idx.table.get("i7")["title"] == "item 7 v2"
    top = idx.search(new, 1)[0][0, 0]
    assert idx.table.records[top]["item_id"] == "i7"
    assert idx.delete("i7") and not idx.delete("i7")
    assert "i7" not in idx.table.ids(idx.search(new, 50)[0])[0]
    assert len(idx) == 49


def test_save_load_round_trip(tmp_path):
    idx, vecs = random_index(120, kind="hnsw")
    idx.delete("i3")
    idx.save(tmp_path / "ix")
    back = ItemIndex.load(tmp_path / "ix", expect_model="test-model", expect_dim=DIM)
    assert len(back) == 119 and back.kind == "hnsw"
    q = normalize(RNG.normal(size=(4, DIM)))
    ids = back.table.ids(back.search(q, 5)[0])
    assert ids == idx.table.ids(idx.search(q, 5)[0])
    m = json.loads((tmp_path / "ix" / (tmp_path / "ix" / "CURRENT").read_text() / "manifest.json").read_text())
    assert m["count"] == 119 and m["model"] == "test-model" and m["dim"] == DIM
    assert m["catalog_fingerprint"] == back.fingerprint() == idx.fingerprint()


def test_mismatch_is_a_clear_error(tmp_path):
    idx, _ = random_index(10)
    idx.save(tmp_path)
    with pytest.raises(IndexMismatchError, match="built with model 'test-model'"):
        ItemIndex.load(tmp_path, expect_model="minilm")
    with pytest.raises(IndexMismatchError, match="dimension 16"):
        ItemIndex.load(tmp_path, expect_dim=384)
    with pytest.raises(FileNotFoundError, match="semrec index"):
        ItemIndex.load(tmp_path / "nothing")


def test_write_ahead_log_replays_acknowledged_updates(tmp_path):
    idx, _ = random_index(20)
    idx.save(tmp_path)
    live = ItemIndex.load(tmp_path)
    live.open_log()
    v = normalize(RNG.normal(size=(1, DIM)))
    live.add(make_items([{"item_id": "new", "title": "brand new", "price": 3.5}]), v)
    live.delete("i0")
    # No save: a crash now. Reloading replays the log.
    back = ItemIndex.load(tmp_path)
    assert back.table.get("new")["price"] == 3.5 and back.table.get("i0") is None
    assert np.allclose(back.vectors_of(["new"]), v)
    # A torn last line (no newline: never acknowledged) is skipped, not fatal.
    with open(tmp_path / "wal.jsonl", "a") as fh:
        fh.write('{"op": "delete", "item_id": "i1"')
    assert ItemIndex.load(tmp_path).table.get("i1") is not None
    # A save folds the log into a new snapshot; the new log holds only its rotation header.
    live.save(tmp_path)
    lines = (tmp_path / "wal.jsonl").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["op"] == "rotate"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("v")) == [(tmp_path / "CURRENT").read_text()]
    assert ItemIndex.load(tmp_path).table.get("new") is not None


def test_half_written_snapshot_leaves_previous_loadable(tmp_path):
    idx, _ = random_index(15)
    idx.save(tmp_path)
    # A crash mid-save leaves a temporary folder behind and CURRENT untouched.
    (tmp_path / ".tmp-v000002-999").mkdir()
    (tmp_path / ".tmp-v000002-999" / "vectors.npy").write_bytes(b"garbage")
    assert len(ItemIndex.load(tmp_path)) == 15


def test_listeners_see_every_update():
    idx, _ = random_index(5)
    seen = []
    idx.subscribe(lambda op, labels: seen.append((op, labels.tolist())))
    idx.add(make_items([{"item_id": "i2", "title": "again"}, {"item_id": "z", "title": "new"}]),
            normalize(RNG.normal(size=(2, DIM))))
    idx.delete("z")
    assert seen == [("delete", [2]), ("upsert", [5, 6]), ("delete", [6])]


def test_review_texts_survive_snapshot_and_log(tmp_path):
    idx, vecs = random_index(3)
    reviews = [["Great kettle. Boils fast.", "x" * 5000, "third", "fourth"], [], ["ok"]]
    idx.add(make_items([{"item_id": f"i{j}", "title": f"item {j}"} for j in range(3)]), vecs, reviews)
    assert idx.reviews["i0"] == ["Great kettle. Boils fast.", "x" * 600, "third"] and "i1" not in idx.reviews
    idx.save(tmp_path)
    idx.open_log()
    idx.add(make_items([{"item_id": "i1", "title": "item 1"}]), vecs[1:2], [["now reviewed"]])
    idx.add(make_items([{"item_id": "i2", "title": "item 2, replaced"}]), vecs[2:3])  # replaces: no reviews
    idx.delete("i0")
    again = ItemIndex.load(tmp_path)
    assert again.reviews == {"i1": ["now reviewed"]} == idx.reviews
    again.save(tmp_path)
    assert ItemIndex.load(tmp_path).reviews == {"i1": ["now reviewed"]}
