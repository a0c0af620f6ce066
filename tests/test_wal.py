"""Crash-safe logs and bounded growth (issue #16, red-team cases 4 and 7): a torn tail of the index's
write-ahead log is truncated before the next append, so the next start succeeds; the log is
compacted while serving, beside other processes on the same directory (here: several ItemIndex
instances, each with its own file handles, as separate workers have), and memory stays bounded
under repeated upserts of one item."""

import json
import os
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest

from indexer.embed import normalize
from indexer.schema import make_items
from indexer.store import ItemIndex

from .test_store import DIM, random_index

RNG = np.random.default_rng(11)


def vec():
    return normalize(RNG.normal(size=(1, DIM)))


def upsert(index, item_id, title=None):
    v = vec()
    index.add(make_items([{"item_id": item_id, "title": title or f"{item_id} title"}]), v)
    return v


def served(root):
    """An instance serving ``root`` as a worker does: loaded from disk, logging its updates."""
    index = ItemIndex.load(root)
    index.open_log()
    return index


def snapshots(root):
    return sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.startswith("v"))


def test_a_torn_tail_is_truncated_before_the_next_append(tmp_path):
    random_index(10)[0].save(tmp_path)
    live = served(tmp_path)
    upsert(live, "before")
    with open(tmp_path / "wal.jsonl", "ab") as fh:  # a process died inside a write
        fh.write(b'{"op": "upsert", "items": [{"item_id": "torn", "ti')
    upsert(live, "after")  # acknowledged: must survive the next start
    other = served(tmp_path)  # another worker starting now, torn tail and all
    upsert(other, "from-other")
    back = ItemIndex.load(tmp_path)  # the next start succeeds...
    assert all(back.table.get(i) is not None for i in ("before", "after", "from-other"))
    assert back.table.get("torn") is None
    for line in (tmp_path / "wal.jsonl").read_bytes().splitlines():  # ...because every line is whole
        json.loads(line)


def test_online_compaction_between_workers_keeps_every_update_and_bounds_the_log(tmp_path):
    random_index(30)[0].save(tmp_path)
    a, b = served(tmp_path), served(tmp_path)
    expected = {}
    for n in range(200):
        expected["hot"] = upsert(a, "hot", f"hot v{n}")
        if n % 7 == 0:
            expected[f"b{n}"] = upsert(b, f"b{n}")
        if n % 50 == 25:
            assert b.delete("i3") or "i3" not in expected
            expected.pop("i3", None)
        if n % 40 == 39:
            (a if n % 80 == 39 else b).maybe_compact(log_bytes=20_000)
        if n % 10 == 0:
            a.follow(), b.follow()
    a.follow(), b.follow()
    assert (tmp_path / "wal.jsonl").stat().st_size < 30_000  # bounded: ~0.3 MB uncompacted
    assert len(snapshots(tmp_path)) == 1 and not list(tmp_path.glob(".tmp-*"))
    for index in (a, b, ItemIndex.load(tmp_path)):
        assert index.table.get("i3") is None and len(index) == 30 - 1 + 1 + len([k for k in expected if k[0] == "b"])
        assert index.table.get("hot")["title"] == "hot v199"
        for item_id, v in expected.items():
            assert np.allclose(index.vectors_of([item_id]), v), item_id


def test_memory_stays_bounded_under_repeated_upserts_of_one_item(tmp_path):
    from retriever.search.lexical import LexicalIndex
    from retriever.search.suggest import Suggester

    random_index(50)[0].save(tmp_path)
    index = served(tmp_path)
    lexical = LexicalIndex(index, background_rebuild=False)
    suggest = Suggester(index, background=False)
    peak = 0
    for n in range(600):
        upsert(index, "hot", f"hot kettle version{n}")
        if n % 50 == 49:
            index.maybe_compact(log_bytes=60_000, retired=50)
        peak = max(peak, index.table.n_labels, len(index.vectors.view), index.index.ntotal)
    assert peak <= 50 + 100  # live items + retired ones between compactions; 650 without compaction
    assert (tmp_path / "wal.jsonl").stat().st_size < 100_000
    labels, _ = lexical.search(["version599"], 3)
    assert index.table.ids(labels)[0][0] == "hot"
    assert lexical.search(["version598"], 3)[0][0, 0] == -1  # the old text is gone with its label
    assert [s.text for s in suggest.suggest("hot kettle", 3)] == ["hot kettle version599"]
    q = index.vectors_of(["i7"])
    assert index.table.ids(index.search(q, 1)[0])[0] == ["i7"]


def test_a_relabel_waits_for_readers_holding_labels(tmp_path):
    index, _ = random_index(20)
    for n in range(30):
        upsert(index, "hot", f"v{n}")
    release = threading.Event()

    def reader():
        with index.reading():
            labels, _ = index.search(index.vectors_of(["i5"]), 1)
            release.wait(5)
            assert index.table.records[labels[0, 0]]["item_id"] == "i5"  # still names the same item

    t = threading.Thread(target=reader)
    t.start()
    time.sleep(0.1)
    assert index.compact_labels(timeout_s=0.2) is False and index.generation == 0
    release.set()
    t.join()
    assert index.compact_labels(timeout_s=2) is True and index.table.n_labels == 21 == len(index)


def test_review_pools_survive_online_compaction_and_relabel(tmp_path):
    from indexer.pools import ReviewPool

    random_index(20)[0].save(tmp_path)
    a, b = served(tmp_path), served(tmp_path)
    pool = ReviewPool(np.zeros(DIM, np.float32))
    pool.add("great kettle", vec()[0]), pool.add("pours well", vec()[0])
    for n in range(40):
        a.add(make_items([{"item_id": "hot", "title": f"hot v{n}"}]), vec(), [["great kettle"]], [pool])
    b.follow()
    assert a.maybe_compact(log_bytes=1, retired=10) == "log+memory" and a.generation == 1
    upsert(b, "after")  # b appends to the rotated log; a follows it
    a.follow()
    for index in (a, b, ItemIndex.load(tmp_path)):
        got = index.pools["hot"]
        assert got.seen == pool.seen and np.allclose(got.sum, pool.sum) and index.reviews["hot"] == ["great kettle"]
        assert index.table.get("after") is not None and len(index) == 22


def test_history_encoder_and_mf_follow_a_relabel(tmp_path):
    import torch

    from retriever.encoder import HistoryEncoder
    from retriever.mf import MFModel
    from retriever.sequence import SequenceConfig, SequenceNet

    index, vecs = random_index(20)
    ids = [f"i{j}" for j in range(20)]
    torch.manual_seed(0)
    net = SequenceNet(20, SequenceConfig(item_input="text+id", hidden=8, n_blocks=1, dropout=0.0), text=vecs)
    encoder = HistoryEncoder(net, ids).attach(index)
    mf = MFModel(ids, RNG.normal(size=(20, 4)).astype(np.float32))
    for n in range(30):
        upsert(index, "hot", f"v{n}")
    upsert(index, "i3")  # a trained item with a new label
    user = encoder.user_vectors([index.table.labels(["i1", "i2"])])[0]
    probe = ["i3", "i7", "hot"]
    before = encoder.scores_of(index, user, index.table.labels(probe))
    mf_before = mf.rows.mapping(index)[0].copy()
    assert index.compact_labels() and index.table.n_labels == len(index) == 21
    labels = index.table.labels(probe)
    assert np.allclose(encoder.scores_of(index, user, labels), before)  # each item keeps its embedding
    assert encoder.search_index.ntotal == 21
    found, _ = encoder.candidates(index, user, 21, index.table.alive.view)
    assert sorted(found.tolist()) == list(range(21))
    for j in range(51 - index.table.n_labels):  # back to the label count the MF cache was keyed on
        upsert(index, f"new{j}")
    assert index.table.n_labels == 51
    rows = mf.rows.mapping(index)[0]
    assert (rows != mf_before).any()  # the cache followed the new labels
    assert all(rows[r] == index.table.label_of[i] for r, i in enumerate(ids))


def test_semrec_compact_runs_beside_a_running_server(tiny_catalog, embedder, tmp_path):
    from api.security import digest
    from indexer.build import build_index

    from .test_crash import ADMIN, free_port, start

    build_index(tiny_catalog, embedder, progress=False).save(tmp_path / "ix")
    env = {**os.environ, "SEMREC_INDEX_DIR": str(tmp_path / "ix"), "SEMREC_DB_PATH": str(tmp_path / "ev.db"),
           "SEMREC_API_KEYS": json.dumps([{"name": "ops", "role": "admin", "sha256": digest(ADMIN)}]),
           "HF_HUB_OFFLINE": "1"}
    port = free_port()
    proc = start(env, port)
    url, headers = f"http://127.0.0.1:{port}", {"X-API-Key": ADMIN}
    try:
        for n in range(5):
            assert httpx.put(f"{url}/items/k{n}", json={"title": f"Kettle {n}"}, headers=headers).status_code == 200
        compact = subprocess.run([sys.executable, "-m", "api.cli", "compact", "--index", str(tmp_path / "ix")],
                                 env=env, capture_output=True, text=True, timeout=120)
        assert compact.returncode == 0, compact.stderr[-2000:]
        for n in range(5, 10):  # the server appends to the rotated log and still sees everything
            assert httpx.put(f"{url}/items/k{n}", json={"title": f"Kettle {n}"}, headers=headers).status_code == 200
        assert httpx.delete(f"{url}/items/k0", headers=headers).status_code == 204
        assert all(httpx.get(f"{url}/items/k{n}").status_code == 200 for n in range(1, 10))
    finally:
        proc.kill()
        proc.wait()
    back = ItemIndex.load(tmp_path / "ix")
    assert back.table.get("k0") is None and all(back.table.get(f"k{n}") for n in range(1, 10))
    assert len(snapshots(tmp_path / "ix")) == 1


@pytest.mark.parametrize("kind", ["hnsw", "numpy"])
def test_relabel_keeps_search_exact_for_other_index_kinds(kind):
    index, vecs = random_index(40, kind=kind)
    for n in range(60):
        upsert(index, "i0", f"again {n}")
    index.delete("i1")
    assert index.compact_labels() and index.table.n_labels == 39
    q = vecs[5:6]
    assert index.table.ids(index.search(q, 1)[0])[0] == ["i5"]
