"""Snapshots of an index directory: one folder ``vNNNNNN/`` per snapshot (manifest.json,
items.parquet, vectors.npy, index.faiss, reviews.json, review_pools.npz), the live one named in
``CURRENT``.

A snapshot is written to a fresh temporary folder and fsync'd before it is given its name and
named in CURRENT (``os.replace``, then the directory fsync'd), so a crash at any point leaves the
previous snapshot loadable.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import pools as review_pools
from .documents import documents
from .files import atomic_write, fsync_dir
from .pools import ReviewPool
from .schema import make_items
from .vectors import VectorIndex, load_index, make_index, save_index

FORMAT_VERSION = 1


class IndexNotFoundError(FileNotFoundError):
    """The directory holds no index (no CURRENT file): build one with ``semrec index``."""


class IndexMismatchError(ValueError):
    """The index on disk was built with another model or dimension than the one asked for."""


@dataclass(frozen=True)
class Manifest:
    model: str
    dim: int
    count: int
    index_kind: str
    created_at: float
    catalog_fingerprint: str
    format_version: int = FORMAT_VERSION
    build: dict = field(default_factory=dict)  # embedding settings and timings, for the record


@dataclass
class Snapshot:
    """What a snapshot holds, in memory: live items in label order (items schema, plus ``label``
    when taken from a table), their unit vectors float32 ``(n, dim)``, review texts and review
    pools per item id."""

    manifest: Manifest
    items: pd.DataFrame
    vectors: np.ndarray
    reviews: dict[str, list[str]]
    pools: dict[str, ReviewPool] = field(default_factory=dict)
    index: VectorIndex | None = None  # read from disk; rebuilt from ``vectors`` when written


def fingerprint(frame: pd.DataFrame) -> str:
    """sha256 over items' ids and documents, in id order: equal catalogs, equal prints."""
    frame = frame.sort_values("item_id", kind="stable")
    h = hashlib.sha256()
    for item_id, doc in zip(frame["item_id"], documents(frame)):
        h.update(f"{item_id}\t{doc}\n".encode())
    return h.hexdigest()


def write(root: Path, snap: Snapshot) -> Path:
    """Write ``snap`` to a fresh temporary folder under ``root``, fsync'd; returns the folder (name it
    with :func:`install`). The vector index is built here, from the vectors."""
    tmp = root / f".tmp-{uuid.uuid4().hex}"
    tmp.mkdir()
    m = snap.manifest
    _write_items(snap.items.drop(columns="label", errors="ignore"), tmp / "items.parquet")
    np.save(tmp / "vectors.npy", snap.vectors)
    (tmp / "reviews.json").write_text(json.dumps(snap.reviews, ensure_ascii=False))
    review_pools.write(snap.pools, tmp / "review_pools.npz", m.dim)
    index = make_index(m.index_kind, m.dim)
    if len(snap.vectors):
        index.add(snap.vectors)
    save_index(index, str(tmp / "index.faiss"))
    manifest = {**asdict(m), "count": len(snap.items), "catalog_fingerprint": fingerprint(snap.items)}
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    fsync_dir(tmp)
    return tmp


def install(root: Path, tmp: Path) -> tuple[str | None, str]:
    """Name the folder ``tmp`` as the next snapshot and make it current. Returns ``(previous, new)``
    snapshot names; the caller removes the previous one once nothing needs it."""
    previous = current(root)
    name = f"v{int(previous[1:]) + 1 if previous else 1:06d}"
    target = root / name
    if target.exists():  # left by a crash between its rename and CURRENT: never current, so garbage
        import shutil

        shutil.rmtree(target)
    os.replace(tmp, target)
    fsync_dir(root)
    atomic_write(root / "CURRENT", name)
    return previous, name


def read(root: Path, name: str, expect_model: str | None = None, expect_dim: int | None = None) -> Snapshot:
    """The snapshot ``root/name``. IndexMismatchError when it was built with another model or
    dimension than asked for; FileNotFoundError when it is gone."""
    snap = root / name
    m = Manifest(**json.loads((snap / "manifest.json").read_text()))
    if expect_model is not None and m.model != expect_model:
        raise IndexMismatchError(f"index in {root} was built with model {m.model!r}, not "
                                 f"{expect_model!r}; rebuild it or set the model to {m.model!r}")
    if expect_dim is not None and m.dim != expect_dim:
        raise IndexMismatchError(f"index in {root} has dimension {m.dim}, the embedder gives "
                                 f"{expect_dim}; rebuild the index with this embedder")
    vectors = np.load(snap / "vectors.npy")
    if vectors.shape != (m.count, m.dim):
        raise IndexMismatchError(f"{snap}/vectors.npy has shape {vectors.shape}, manifest says "
                                 f"({m.count}, {m.dim})")
    items = _read_items(snap / "items.parquet")
    index = load_index(m.index_kind, m.dim, str(snap / "index.faiss"), vectors)
    reviews = json.loads((snap / "reviews.json").read_text()) if (snap / "reviews.json").exists() else {}
    pools = review_pools.read(snap / "review_pools.npz") if (snap / "review_pools.npz").exists() else {}
    return Snapshot(m, items, vectors, reviews, pools, index)


def read_manifest(path: str | os.PathLike) -> Manifest:
    """The manifest of the live snapshot in ``path``; IndexNotFoundError when there is no index."""
    root = Path(path)
    name = current(root)
    if name is None:
        raise IndexNotFoundError(f"no semrec index in {root} (missing CURRENT); build one with `semrec index`")
    return Manifest(**json.loads((root / name / "manifest.json").read_text()))


def current(root: Path) -> str | None:
    f = root / "CURRENT"
    return f.read_text().strip() if f.exists() else None


def _write_items(frame: pd.DataFrame, path: Path) -> None:
    # Attribute dicts have different keys per item; JSON text keeps parquet from inventing a struct.
    frame = frame.assign(attributes=[json.dumps(a, ensure_ascii=False) for a in frame["attributes"]])
    frame.to_parquet(path, index=False)


def _read_items(path: Path) -> pd.DataFrame:
    frame = pd.read_parquet(path)
    frame["attributes"] = [json.loads(a) for a in frame["attributes"]]
    frame["categories"] = [list(c) for c in frame["categories"]]
    return make_items(frame)
