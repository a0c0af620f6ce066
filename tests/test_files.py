"""Atomic replacement: concurrent writers of one file each finish, and a failed write changes nothing."""

import numpy as np
import pytest

from indexer.files import atomic_write, replacing


def test_two_writers_of_one_file_interleaved_both_succeed(tmp_path):
    # Two server workers writing the same cache at once: with one shared temporary name, the
    # second rename found nothing to rename and its worker failed to start.
    path = tmp_path / "vocab.npy"
    with replacing(path) as first, replacing(path) as second:
        assert first != second
        for tmp, value in ((first, 1.0), (second, 2.0)):
            with open(tmp, "wb") as fh:
                np.save(fh, np.full(3, value, dtype=np.float32))
    assert np.load(path).tolist() == [1.0, 1.0, 1.0]  # the outer writer renamed last
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vocab.npy"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "enrichment.json"
    atomic_write(path, "old")
    with pytest.raises(RuntimeError), replacing(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["enrichment.json"]


def test_a_folder_is_replaced_whole(tmp_path):
    folder = tmp_path / "converted"
    with replacing(folder) as tmp:
        tmp.mkdir()
        (tmp / "config.json").write_text("{}")
    assert (folder / "config.json").read_text() == "{}"
    with pytest.raises(OSError), replacing(folder) as tmp:  # a non-empty folder is not replaced
        tmp.mkdir()
        (tmp / "config.json").write_text("{}")
    assert [p.name for p in tmp_path.iterdir()] == ["converted"]
