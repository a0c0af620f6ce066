"""ItemIndex: item table + unit vectors + a vector index, persisted to a directory.

Directory layout::

    INDEX_DIR/CURRENT          name of the live snapshot, replaced atomically (os.replace)
    INDEX_DIR/v000003/         a snapshot: manifest.json, items.parquet, vectors.npy, index.faiss,
                               reviews.json, review_pools.npz
    INDEX_DIR/wal.jsonl        upserts/deletes acknowledged since that snapshot (fsync'd per write)

A snapshot is written to a fresh folder, fsync'd, and only then named in CURRENT, so a crash at any
point leaves the previous snapshot loadable. Loading replays the write-ahead log on top, so every
acknowledged update survives a crash. Replay is idempotent (upsert and delete are).
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .documents import documents
from .feed import CatalogFeed
from .results import top_k
from .schema import make_items
from .table import Filters, GrowableArray, ItemTable
from .vectors import VectorIndex, choose_kind, load_index, make_index, save_index

FORMAT_VERSION = 1
# On an approximate index (HNSW, IVF), filters that leave at most this many items are answered by an
# exact scan of just those rows: a graph walk under a very selective filter may come back short.
# Larger subsets go through the index with an ID selector (copying them per query would cost more).
EXACT_SUBSET_MAX = 5_000
REVIEWS_KEPT = 3      # review texts kept per item, for explanations (the vectors use more)
REVIEW_CHARS = 600


class IndexNotFoundError(FileNotFoundError):
    """The directory holds no index (no CURRENT file): build one with ``semrec index``."""


class IndexMismatchError(ValueError):
    """The index on disk was built with another model or dimension than the one asked for."""


@dataclass
class ReviewPool:
    """What the index holds of one item's reviews: the sum of their unit vectors, float32 ``(dim,)``,
    a 64-bit digest per pooled text (:func:`text_key`), so a review sent twice counts once, and each
    review's vector as float16 rows (``rows``: search matches a query against single reviews,
    ``retriever.search.reviews``; 768 B per review at 384-d)."""

    sum: np.ndarray
    seen: set[int] = field(default_factory=set)
    rows: list[np.ndarray] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.seen)

    def copy(self) -> ReviewPool:
        return ReviewPool(self.sum.copy(), set(self.seen), list(self.rows))

    def matrix(self) -> np.ndarray:
        """The reviews' vectors, float16 ``(n_rows, dim)`` (no rows in indexes saved before they were kept)."""
        return np.stack(self.rows) if self.rows else np.zeros((0, len(self.sum)), np.float16)

    def add(self, text: str, vector: np.ndarray) -> bool:
        """Pool one review; False (and nothing changes) if this text is already in."""
        key = text_key(text)
        if key in self.seen:
            return False
        self.seen.add(key)
        self.sum += vector
        self.rows.append(np.asarray(vector, dtype=np.float16))
        return True


def text_key(text: str) -> int:
    """64-bit digest of a review text: the identity of a review in a :class:`ReviewPool`."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


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


class ItemIndex:
    """The searchable catalog. Thread-safe: one lock orders readers and writers."""

    def __init__(self, *, model: str, dim: int, kind: str = "flat", build: dict | None = None):
        self.model, self.dim, self.kind = model, dim, kind
        self.build_info = dict(build or {})
        self.created_at = time.time()
        self.table = ItemTable()
        self.vectors = GrowableArray((dim,), np.float32)
        self.index: VectorIndex = make_index(kind, dim)
        self.lock = threading.RLock()
        self.path: Path | None = None  # set when opened from / saved to a directory
        self._wal: int | None = None  # fd of wal.jsonl, opened O_APPEND (see open_log)
        self._wal_offset = 0  # bytes of wal.jsonl applied so far (replayed, written or followed)
        self.origin = uuid.uuid4().hex  # tags our log entries, so followers of the log skip their own
        self._listeners: list[Callable[[str, np.ndarray], None]] = []
        self.reviews: dict[str, list[str]] = {}  # item_id -> a few review texts, for explanations
        self.snapshot: str | None = None  # name of the snapshot loaded or saved last (v000003)
        self.feed: CatalogFeed | None = None  # a shared catalog feed replaces wal.jsonl (see use_feed)
        self._feed_position = 0  # feed entries up to here are applied
        self._following = False  # applying feed entries: they are in the feed already
        self.pools: dict[str, ReviewPool] = {}  # item_id -> all its pooled review vectors (see build)

    def __len__(self) -> int:
        return len(self.table)

    # ---- updates -------------------------------------------------------------------------------
    def subscribe(self, listener: Callable[[str, np.ndarray], None]) -> None:
        """Call ``listener(op, labels)`` after every update, under the index lock.

        ``op`` is "upsert" (``labels``: the new labels) or "delete" (the retired label). Secondary
        indexes (BM25, caches) use it to stay in step with the vectors.
        """
        self._listeners.append(listener)

    def _notify(self, op: str, labels: np.ndarray) -> None:
        for listener in self._listeners:
            listener(op, labels)

    def add(self, items: pd.DataFrame, vectors: np.ndarray, reviews: Sequence[Sequence[str]] | None = None,
            pools: Sequence[ReviewPool | None] | None = None) -> None:
        """Upsert ``items`` (items schema) with their unit vectors, float32 ``(len(items), dim)``.

        ``reviews``: per item, its review texts; the first ``REVIEWS_KEPT`` (cut to
        ``REVIEW_CHARS``) are kept for explanations. ``pools``: per item, its review pool (None: no
        reviews). An upsert replaces both: :func:`indexer.build.upsert_items` merges new reviews.
        """
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.shape != (len(items), self.dim):
            raise ValueError(f"vectors have shape {vectors.shape}, expected ({len(items)}, {self.dim})")
        kept = [[t[:REVIEW_CHARS] for t in r[:REVIEWS_KEPT]] for r in (reviews or [()] * len(items))]
        pools = list(pools or [None] * len(items))
        with self.lock:
            entry = {"op": "upsert", "items": _records_json(items), "vectors": _b64(vectors)}
            if any(kept):
                entry["reviews"] = kept
            if any(p is not None for p in pools):
                entry["pools"] = [None if p is None else {"sum": _b64(p.sum), "seen": sorted(p.seen),
                                                          "rows": _b64_16(p.matrix())} for p in pools]
            self._log(entry)
            retired = [self.table.label_of[i] for i in items["item_id"] if i in self.table.label_of]
            for item_id, texts, pool in zip(items["item_id"], kept, pools):
                self.reviews.pop(item_id, None)
                self.pools.pop(item_id, None)
                if texts:
                    self.reviews[item_id] = texts
                if pool is not None and pool.count:
                    self.pools[item_id] = pool
            labels = self.table.append(items)
            self.vectors.extend(vectors)
            self.index.add(vectors)
            if retired:
                self._notify("delete", np.asarray(retired, dtype=np.int64))
            self._notify("upsert", labels)

    def delete(self, item_id: str) -> bool:
        """Delete ``item_id``; False if it was not in the index."""
        with self.lock:
            if self.feed is not None and not self._following:
                self.follow()  # another worker may have just added it
            if item_id not in self.table.label_of:
                return False
            self._log({"op": "delete", "item_id": item_id})
            if item_id not in self.table.label_of:  # another worker's change, applied in _log, deleted it
                return False
            label = self.table.label_of[item_id]
            self.table.retire(item_id)
            self.reviews.pop(item_id, None)
            self.pools.pop(item_id, None)
            self._notify("delete", np.asarray([label], dtype=np.int64))
            return True

    # ---- reads -----------------------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int, filters: Filters | None = None,
               allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` live items for unit ``queries (n, dim)`` -> ``(labels, scores)``, each ``(n, k)``.

        ``allowed``: optional bool ``(n_labels,)`` mask, combined with ``filters`` (e.g. to leave out
        what the shopper already bought).
        """
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        with self.lock:
            mask = self.table.mask(filters)
            if allowed is not None:
                mask &= allowed[: len(mask)]
            n_allowed = int(mask.sum())
            approximate = self.index.kind in ("hnsw", "ivf", "milvus")
            if approximate and n_allowed <= EXACT_SUBSET_MAX and n_allowed < self.table.n_labels:
                return _exact_subset(self.vectors.view, queries, k, np.flatnonzero(mask))
            if self.index.kind == "milvus":  # filters run in Milvus as expressions; deleted rows are gone there
                return self.index.search(queries, k, None if allowed is None else mask, filters=filters)
            return self.index.search(queries, k, None if n_allowed == self.table.n_labels else mask)

    def vectors_of(self, item_ids: list[str]) -> np.ndarray:
        """Unit vectors of live ``item_ids`` (KeyError on an unknown id)."""
        with self.lock:
            return self.vectors.view[self.table.labels(item_ids)].copy()

    # ---- persistence -----------------------------------------------------------------------------
    def manifest(self) -> Manifest:
        return Manifest(model=self.model, dim=self.dim, count=len(self), index_kind=self.kind,
                        created_at=self.created_at, catalog_fingerprint=self.fingerprint(),
                        build=self.build_info)

    def fingerprint(self) -> str:
        """sha256 over live items' ids and documents, in id order: equal catalogs, equal prints."""
        frame = self.table.live_frame().sort_values("item_id", kind="stable")
        h = hashlib.sha256()
        for item_id, doc in zip(frame["item_id"], documents(frame)):
            h.update(f"{item_id}\t{doc}\n".encode())
        return h.hexdigest()

    def save(self, path: str | os.PathLike) -> Path:
        """Write a new snapshot under ``path`` atomically, then empty the write-ahead log."""
        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        with self.lock:
            previous = _current(root)
            number = int(previous[1:]) + 1 if previous else 1
            snap = root / f"v{number:06d}"
            tmp = root / f".tmp-{snap.name}-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            frame = self.table.live_frame()
            _write_items(frame.drop(columns="label"), tmp / "items.parquet")
            np.save(tmp / "vectors.npy", self.vectors.view[frame["label"].to_numpy()])
            (tmp / "reviews.json").write_text(json.dumps(self.reviews, ensure_ascii=False))
            _write_pools(self.pools, tmp / "review_pools.npz", self.dim)
            # a new FAISS index when labels were retired, or when another store (Milvus) serves the vectors
            compact = make_index(self.kind, self.dim) if len(frame) < self.table.n_labels or \
                self.index.kind != self.kind else None
            if compact is not None and len(frame):
                compact.add(self.vectors.view[frame["label"].to_numpy()])
            save_index(compact or self.index, str(tmp / "index.faiss"))
            (tmp / "manifest.json").write_text(json.dumps(asdict(self.manifest()), indent=2))
            _fsync_dir_files(tmp)
            os.replace(tmp, snap)
            _atomic_write(root / "CURRENT", snap.name)
            logging = self._wal is not None
            if logging:
                os.close(self._wal)
                self._wal = None
            (root / "wal.jsonl").unlink(missing_ok=True)
            self._wal_offset = 0
            self.path = root
            self.snapshot = snap.name
            if self.feed is not None:
                self.feed.mark_snapshot(self.snapshot_id, self._feed_position)
            if logging:
                self.open_log()
            if previous and previous != snap.name:
                shutil.rmtree(root / previous, ignore_errors=True)
        return root

    @classmethod
    def load(cls, path: str | os.PathLike, *, expect_model: str | None = None,
             expect_dim: int | None = None) -> ItemIndex:
        """Open the snapshot named in ``path/CURRENT`` and replay the write-ahead log.

        Raises FileNotFoundError when ``path`` holds no index, and IndexMismatchError when the
        index was built with a model or dimension other than ``expect_model`` / ``expect_dim``.
        """
        root = Path(path)
        m = read_manifest(root)
        current = _current(root)
        snap = root / current
        if expect_model is not None and m.model != expect_model:
            raise IndexMismatchError(f"index in {root} was built with model {m.model!r}, not "
                                     f"{expect_model!r}; rebuild it or set the model to {m.model!r}")
        if expect_dim is not None and m.dim != expect_dim:
            raise IndexMismatchError(f"index in {root} has dimension {m.dim}, the embedder gives "
                                     f"{expect_dim}; rebuild the index with this embedder")
        self = cls(model=m.model, dim=m.dim, kind=m.index_kind, build=m.build)
        self.created_at = m.created_at
        vectors = np.load(snap / "vectors.npy")
        if vectors.shape != (m.count, m.dim):
            raise IndexMismatchError(f"{snap}/vectors.npy has shape {vectors.shape}, manifest says "
                                     f"({m.count}, {m.dim})")
        self.table.append(_read_items(snap / "items.parquet"))
        self.vectors.extend(vectors)
        self.index = load_index(m.index_kind, m.dim, str(snap / "index.faiss"), vectors)
        if (snap / "reviews.json").exists():  # older snapshots have none
            self.reviews = json.loads((snap / "reviews.json").read_text())
        if (snap / "review_pools.npz").exists():
            self.pools = _read_pools(snap / "review_pools.npz")
        self._replay(root / "wal.jsonl")
        self.path = root
        self.snapshot = current
        return self

    def open_log(self) -> None:
        """Log every later update to ``path/wal.jsonl`` before applying it (service mode).

        Several processes may serve one index: each appends whole entries with one O_APPEND write
        under an exclusive lock, and calls :meth:`follow` to apply the others' entries.
        """
        if self.path is None:
            raise ValueError("save or load the index before opening its write-ahead log")
        self._wal = os.open(self.path / "wal.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    # ---- a shared catalog feed instead of wal.jsonl (indexer.feed) ----------------------------------
    @property
    def snapshot_id(self) -> str:
        """Names the snapshot this index was loaded from across machines: build time and generation."""
        return f"{self.created_at:.6f}/{self.snapshot}"

    def use_feed(self, feed: CatalogFeed) -> int:
        """Share updates through ``feed`` from now on (instead of ``open_log``), and apply what it
        holds beyond this snapshot. Returns how many entries were applied."""
        if self.snapshot is None:
            raise ValueError("save or load the index before attaching a catalog feed")
        with self.lock:
            self.feed, self._feed_position = feed, feed.start(self.snapshot_id)
            return self.follow()

    def _apply_feed(self, entries: list[tuple[int, dict]]) -> int:
        self._following = True
        try:
            for position, entry in entries:
                self._apply_entry(entry, f"catalog feed position {position}")
                self._feed_position = position
        finally:
            self._following = False
        return len(entries)

    def _log(self, entry: dict) -> None:
        if self.feed is not None:
            if not self._following:  # others' changes that precede ours first: one order in every process
                position, before = self.feed.append({**entry, "origin": self.origin}, self._feed_position)
                self._apply_feed(before)
                self._feed_position = position
            return
        if self._wal is not None:
            line = (json.dumps({**entry, "origin": self.origin}, ensure_ascii=False) + "\n").encode()
            fcntl.flock(self._wal, fcntl.LOCK_EX)
            try:
                os.write(self._wal, line)
                os.fsync(self._wal)
            finally:
                fcntl.flock(self._wal, fcntl.LOCK_UN)

    def follow(self) -> int:
        """Apply log entries other processes appended since we last looked. Returns how many."""
        if self.feed is not None:
            with self.lock:
                applied = 0
                while entries := self.feed.read_after(self._feed_position):
                    applied += self._apply_feed(entries)
                return applied
        if self.path is None:
            return 0
        with self.lock:
            return self._apply_log(self.path / "wal.jsonl", skip_own=True)

    def _replay(self, wal: Path) -> None:
        self._wal_offset = 0
        self._apply_log(wal, skip_own=False)

    def _apply_log(self, wal: Path, skip_own: bool) -> int:
        """Apply complete lines of ``wal`` past ``_wal_offset``. A last line without its newline is
        being written (or was, when a process died): it was never acknowledged and is left alone.
        Any other bad line is corruption and stops the load."""
        if not wal.exists():
            return 0
        with open(wal, "rb") as fh:
            fh.seek(self._wal_offset)
            data = fh.read()
        complete = data[: data.rfind(b"\n") + 1]
        applied, logging, self._wal = 0, self._wal, None  # replayed entries are already in the log
        try:
            for n, line in enumerate(complete.splitlines()):
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{wal}: corrupt write-ahead log entry at byte "
                                     f"{self._wal_offset}+, line {n + 1} of the unread part: {e}") from e
                if skip_own and entry.get("origin") == self.origin:
                    continue
                self._apply_entry(entry, str(wal))
                applied += 1
        finally:
            self._wal = logging
        self._wal_offset += len(complete)
        return applied

    def _apply_entry(self, entry: dict, where: str) -> None:
        if entry["op"] == "upsert":
            pools = [None if p is None else ReviewPool(_unb64(p["sum"], self.dim)[0].copy(), set(p["seen"]),
                                                       list(_unb64_16(p.get("rows", ""), self.dim)))
                     for p in entry.get("pools") or []]
            self.add(make_items(entry["items"]), _unb64(entry["vectors"], self.dim), entry.get("reviews"),
                     pools or None)
        elif entry["op"] == "delete":
            self.delete(entry["item_id"])
        else:
            raise ValueError(f"{where}: unknown op {entry['op']!r}")


def read_manifest(path: str | os.PathLike) -> Manifest:
    """The manifest of the live snapshot in ``path``; IndexNotFoundError when there is no index."""
    root = Path(path)
    current = _current(root)
    if current is None:
        raise IndexNotFoundError(f"no semrec index in {root} (missing CURRENT); build one with `semrec index`")
    return Manifest(**json.loads((root / current / "manifest.json").read_text()))


def _exact_subset(vectors, queries, k, subset):
    labels, scores = top_k(queries @ vectors[subset].T, k)
    if len(subset) == 0:  # nothing passes the filters: all padding (indexing subset would fail)
        return labels, scores
    return np.where(labels >= 0, subset[np.maximum(labels, 0)], -1), scores


def _records_json(items: pd.DataFrame) -> list[dict]:
    recs = make_items(items).to_dict("records")
    return [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()} for r in recs]


def _b64(x: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(x, dtype=np.float32).tobytes()).decode()


def _unb64(s: str, dim: int) -> np.ndarray:
    return np.frombuffer(base64.b64decode(s), dtype=np.float32).reshape(-1, dim)


def _b64_16(x: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(x, dtype=np.float16).tobytes()).decode()


def _unb64_16(s: str, dim: int) -> np.ndarray:
    return np.frombuffer(base64.b64decode(s), dtype=np.float16).reshape(-1, dim).copy()


def _write_pools(pools: dict[str, ReviewPool], path: Path, dim: int) -> None:
    """Review pools as arrays: ids, sums ``(n, dim)``, counts, and all digests back to back."""
    ids = sorted(pools)
    sums = np.stack([pools[i].sum for i in ids]) if ids else np.zeros((0, dim), np.float32)
    seen = [sorted(pools[i].seen) for i in ids]
    rows = [pools[i].matrix() for i in ids]
    with open(path, "wb") as fh:
        np.savez(fh, ids=np.asarray(ids, dtype=str), sums=sums.astype(np.float32),
                 counts=np.asarray([len(s) for s in seen], dtype=np.int64),
                 keys=np.asarray([k for s in seen for k in s], dtype=np.uint64),
                 row_counts=np.asarray([len(r) for r in rows], dtype=np.int64),
                 rows=np.concatenate(rows) if rows else np.zeros((0, dim), np.float16))


def _read_pools(path: Path) -> dict[str, ReviewPool]:
    with np.load(path) as z:
        ids, sums, counts, keys = z["ids"], z["sums"], z["counts"], z["keys"].tolist()
        # snapshots written before per-review rows were kept have none: those pools match no single review
        row_counts = z["row_counts"] if "row_counts" in z else np.zeros(len(ids), np.int64)
        rows = z["rows"] if "rows" in z else np.zeros((0, sums.shape[1] if sums.ndim == 2 else 0), np.float16)
    ends, row_ends = np.cumsum(counts), np.cumsum(row_counts)
    return {str(i): ReviewPool(sums[n].copy(), set(keys[e - c: e]), list(rows[re - rc: re]))
            for n, (i, c, e, rc, re) in enumerate(zip(ids, counts.tolist(), ends.tolist(), row_counts.tolist(),
                                                      row_ends.tolist()))}


def _write_items(frame: pd.DataFrame, path: Path) -> None:
    # Attribute dicts have different keys per item; JSON text keeps parquet from inventing a struct.
    frame = frame.assign(attributes=[json.dumps(a, ensure_ascii=False) for a in frame["attributes"]])
    frame.to_parquet(path, index=False)


def _read_items(path: Path) -> pd.DataFrame:
    frame = pd.read_parquet(path)
    frame["attributes"] = [json.loads(a) for a in frame["attributes"]]
    frame["categories"] = [list(c) for c in frame["categories"]]
    return make_items(frame)


def _current(root: Path) -> str | None:
    f = root / "CURRENT"
    return f.read_text().strip() if f.exists() else None


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir_files(folder: Path) -> None:
    for f in folder.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def auto_kind(n_items: int, kind: str = "auto") -> str:
    return choose_kind(n_items) if kind == "auto" else kind
