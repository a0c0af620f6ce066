"""The catalog feed on a real PostgreSQL server: index copies on separate disks (as on separate
machines) share upserts and deletes through it, apply them in one order (so labels agree), and a
snapshot records where in the feed it stands."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from indexer.embed import normalize
from indexer.feed import PostgresCatalogFeed, open_feed
from indexer.schema import make_items
from indexer.store import ItemIndex
from indexer.wal import holds_entries

DIM = 8
RNG = np.random.default_rng(5)


def item(item_id: str, title: str = "") -> tuple:
    return make_items([{"item_id": item_id, "title": title or item_id, "categories": ["All"]}]), \
        normalize(RNG.normal(size=(1, DIM)))


@pytest.fixture
def copies(tmp_path, pg_url):
    """``open(n)`` -> n ItemIndex copies of one snapshot, each on its own directory, on one feed."""
    base = ItemIndex(model="m", dim=DIM)
    for j in range(5):
        base.add(*item(f"i{j}"))
    base.save(tmp_path / "ix0")
    feeds = []

    def open_copies(n: int, start: int = 0) -> list[ItemIndex]:
        out = []
        for c in range(start, start + n):
            if not (tmp_path / f"ix{c}").exists():
                shutil.copytree(tmp_path / "ix0", tmp_path / f"ix{c}")
            idx = ItemIndex.load(tmp_path / f"ix{c}")
            feeds.append(PostgresCatalogFeed(pg_url))
            idx.use_feed(feeds[-1])
            out.append(idx)
        return out

    yield open_copies
    for f in feeds:
        f.close()


def state(idx: ItemIndex) -> tuple:
    return dict(idx.table.label_of), [r["title"] for r in idx.table.records]


def test_copies_share_changes_in_one_order(copies, tmp_path):
    a, b = copies(2)
    a.add(*item("x", "from a"))
    b.add(*item("y", "from b"))  # b has not followed a yet: a's change is applied first
    b.add(*item("i1", "i1 v2"))
    assert a.delete("y")  # a deletes what only b wrote: it follows first
    assert a.follow() == 0 and b.follow() == 1  # a followed before its delete; b gets the delete
    assert state(a) == state(b)
    assert set(a.table.label_of) == {"i0", "i1", "i2", "i3", "i4", "x"}
    assert a.table.get("i1")["title"] == "i1 v2"
    assert not holds_entries(tmp_path / "ix0" / "wal.jsonl")  # nothing went through the file
    (late,) = copies(1, start=2)  # a process started later replays the feed from the snapshot
    assert state(late) == state(a)
    assert np.allclose(late.vectors_of(["x"]), a.vectors_of(["x"]))


def test_a_new_snapshot_starts_where_it_was_taken(copies, tmp_path, pg_url):
    (a,) = copies(1)
    a.add(*item("x"))
    a.delete("i0")
    a.save(tmp_path / "ix0")  # compaction: the snapshot holds the feed up to here
    a.add(*item("z"))
    again = ItemIndex.load(tmp_path / "ix0")
    assert set(again.table.label_of) == {"i1", "i2", "i3", "i4", "x"}
    feed = open_feed(pg_url)
    try:
        assert again.use_feed(feed) == 1  # only what came after the snapshot
    finally:
        feed.close()
    assert set(again.table.label_of) == {"i1", "i2", "i3", "i4", "x", "z"}


def test_labels_are_never_renumbered_on_a_feed(copies):
    """Copies on one feed give every item the same label (a shared Milvus keys its rows by label), so
    label compaction, which one process would do on its own, is off there."""
    a, b = copies(2)
    for n in range(30):
        a.add(*item("hot", f"hot v{n}"))
    b.follow()
    assert a.retired_labels() == 29
    assert a.compact_labels() is False and a.maybe_compact(retired=1) is None
    assert state(a) == state(b) and a.generation == b.generation == 0


def test_feed_urls_are_checked():
    with pytest.raises(ValueError, match="postgresql://"):
        open_feed("mysql://h/db")
    with pytest.raises(ConnectionError, match="cannot connect to PostgreSQL"):
        PostgresCatalogFeed("postgresql://nobody@/nodb?host=/nonexistent", timeout_s=1.0)
