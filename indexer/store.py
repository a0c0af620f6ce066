"""ItemIndex: item table + unit vectors + a vector index, persisted to a directory.

Directory layout::

    INDEX_DIR/CURRENT          name of the live snapshot, replaced atomically (os.replace)
    INDEX_DIR/v000003/         a snapshot: manifest.json, items.parquet, vectors.npy, index.faiss
    INDEX_DIR/wal.jsonl        upserts/deletes acknowledged since that snapshot (fsync'd per write;
                               format, torn tails and rotation in ``indexer.wal``)

A snapshot is written to a fresh folder, fsync'd, and only then named in CURRENT, so a crash at any
point leaves the previous snapshot loadable. Loading replays the write-ahead log on top, so every
acknowledged update survives a crash. Replay is idempotent (upsert and delete are).

Bounded while serving: :meth:`ItemIndex.maybe_compact` folds a log past ``LOG_COMPACT_BYTES`` into
a new snapshot (online, beside other processes), and renumbers labels once many are retired, so
neither the directory nor memory grows with the number of updates, only with the catalog.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from . import snapshot
from .schema import ITEM_COLUMNS, make_items
from .snapshot import FORMAT_VERSION, IndexMismatchError, Manifest, Snapshot
from .table import Filters, GrowableArray, ItemTable
from .vectors import VectorIndex, choose_kind, make_index, top_k
from .wal import WAL_NAME, LogFile, rotate

__all__ = ["EXACT_SUBSET_MAX", "FORMAT_VERSION", "IndexMismatchError", "ItemIndex", "Manifest", "StaleIndexError",
           "auto_kind"]

# On an approximate index (HNSW, IVF), filters that leave at most this many items are answered by an
# exact scan of just those rows: a graph walk under a very selective filter may come back short.
# Larger subsets go through the index with an ID selector (copying them per query would cost more).
EXACT_SUBSET_MAX = 5_000
REVIEWS_KEPT = 3      # review texts kept per item, for explanations (the vectors use more)
REVIEW_CHARS = 600
# Compaction while serving. A log entry is ~2-20 KB (vectors in base64, the item's JSON): 32 MB is
# a few thousand updates, folded in a second or two. Labels: memory per retired label is a vector
# (1.5 KB at 384-d, twice: array and index) plus its record.
LOG_COMPACT_BYTES = 32 << 20
RETIRED_COMPACT = 1024
LOAD_ATTEMPTS = 20
STALE_TMP_S = 3600.0  # a snapshot folder this old and unnamed was left by a crash


class StaleIndexError(RuntimeError):
    """The directory's log moved on past what this process holds (a rebuild into its directory)."""


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
        self._log_file: LogFile | None = None  # the wal.jsonl we follow (and append to once logging)
        self._logging = False  # service mode (open_log): every update is logged before it applies
        self._wal_offset = 0  # bytes of that file applied so far (replayed, written or followed)
        self.generation = 0  # bumped when compact_labels renumbers labels
        self._gate = threading.Condition()  # reading() blocks vs. a relabel swap
        self._pins, self._swapping = 0, False
        self.origin = uuid.uuid4().hex  # tags our log entries, so followers of the log skip their own
        self._listeners: list[Callable[[str, np.ndarray], None]] = []
        self.reviews: dict[str, list[str]] = {}  # item_id -> a few review texts, for explanations

    def __len__(self) -> int:
        return len(self.table)

    # ---- updates -------------------------------------------------------------------------------
    def subscribe(self, listener: Callable[[str, np.ndarray], None]) -> None:
        """Call ``listener(op, labels)`` after every update, under the index lock.

        ``op`` is "upsert" (``labels``: the new labels), "delete" (the retired label) or "relabel"
        (:meth:`compact_labels`; ``labels``: int64 ``(old n_labels,)``, the new label of each old
        one, -1 for retired). Secondary indexes (BM25, caches) use it to stay in step.
        """
        self._listeners.append(listener)

    def _notify(self, op: str, labels: np.ndarray) -> None:
        for listener in self._listeners:
            listener(op, labels)

    def add(self, items: pd.DataFrame, vectors: np.ndarray, reviews: Sequence[Sequence[str]] | None = None) -> None:
        """Upsert ``items`` (items schema) with their unit vectors, float32 ``(len(items), dim)``.

        ``reviews``: per item, its review texts; the first ``REVIEWS_KEPT`` (cut to
        ``REVIEW_CHARS``) are kept for explanations. An upsert replaces an item's reviews.
        """
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.shape != (len(items), self.dim):
            raise ValueError(f"vectors have shape {vectors.shape}, expected ({len(items)}, {self.dim})")
        kept = [[t[:REVIEW_CHARS] for t in r[:REVIEWS_KEPT]] for r in (reviews or [()] * len(items))]
        with self.lock:
            entry = {"op": "upsert", "items": _records_json(items), "vectors": _b64(vectors)}
            self._log({**entry, "reviews": kept} if any(kept) else entry)
            retired = [self.table.label_of[i] for i in items["item_id"] if i in self.table.label_of]
            for item_id, texts in zip(items["item_id"], kept):
                self.reviews.pop(item_id, None)
                if texts:
                    self.reviews[item_id] = texts
            labels = self.table.append(items)
            self.vectors.extend(vectors)
            self.index.add(vectors)
            if retired:
                self._notify("delete", np.asarray(retired, dtype=np.int64))
            self._notify("upsert", labels)

    def delete(self, item_id: str) -> bool:
        """Delete ``item_id``; False if it was not in the index."""
        with self.lock:
            if item_id not in self.table.label_of:
                return False
            self._log({"op": "delete", "item_id": item_id})
            label = self.table.label_of[item_id]
            self.table.retire(item_id)
            self.reviews.pop(item_id, None)
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
            approximate = self.kind in ("hnsw", "ivf")
            if approximate and n_allowed <= EXACT_SUBSET_MAX and n_allowed < self.table.n_labels:
                return _exact_subset(self.vectors.view, queries, k, np.flatnonzero(mask))
            return self.index.search(queries, k, None if n_allowed == self.table.n_labels else mask)

    def vectors_of(self, item_ids: list[str]) -> np.ndarray:
        """Unit vectors of live ``item_ids`` (KeyError on an unknown id)."""
        with self.lock:
            return self.vectors.view[self.table.labels(item_ids)].copy()

    # ---- memory compaction ----------------------------------------------------------------------
    @contextmanager
    def reading(self) -> Iterator[None]:
        """Hold labels across calls: labels read inside this block keep naming the same items until
        it exits (the service wraps every request in one). Only :meth:`compact_labels` renumbers
        labels, and it waits for every open block to close; while it swaps (milliseconds) a new
        block waits."""
        with self._gate:
            self._gate.wait_for(lambda: not self._swapping)
            self._pins += 1
        try:
            yield
        finally:
            with self._gate:
                self._pins -= 1
                if self._pins == 0:
                    self._gate.notify_all()

    def retired_labels(self) -> int:
        """Labels of replaced or deleted items still held (memory that :meth:`compact_labels` frees)."""
        return self.table.n_labels - len(self.table)

    def compact_labels(self, timeout_s: float = 2.0) -> bool:
        """Renumber the live items 0..n-1 in a fresh table, vector array and vector index and swap
        them in, so retired labels stop holding memory. The fresh structures are built outside the
        lock from a copy (copy-on-write); updates made meanwhile are applied to them before the swap.
        Listeners get ``("relabel", mapping)``. Returns False (nothing changed) when open
        :meth:`reading` blocks did not close within ``timeout_s``."""
        with self.lock:
            cut, live = self.table.n_labels, np.flatnonzero(self.table.alive.view)
            records = [self.table.records[i] for i in live]
            vectors = self.vectors.view[live].copy()
        table, store, index = self._fresh(records, vectors)
        with self._gate:
            self._swapping = True
            drained = self._gate.wait_for(lambda: self._pins == 0, timeout_s)
        try:
            if not drained:
                return False
            with self.lock:
                old = self.table
                for old_label in live:  # deleted or replaced since the copy
                    if not old.alive.view[old_label]:
                        table.retire(old.records[old_label]["item_id"])
                later = [lab for lab in range(cut, old.n_labels) if old.alive.view[lab]]
                if later:
                    table.append(make_items([old.records[lab] for lab in later]))
                    store.extend(self.vectors.view[later])
                    index.add(self.vectors.view[later])
                mapping = np.full(old.n_labels, -1, dtype=np.int64)
                for item_id, label in table.label_of.items():
                    mapping[old.label_of[item_id]] = label
                self.table, self.vectors, self.index = table, store, index
                self.generation += 1
                self._notify("relabel", mapping)
            return True
        finally:
            with self._gate:
                self._swapping = False
                self._gate.notify_all()

    def _fresh(self, records: list[dict], vectors: np.ndarray) -> tuple[ItemTable, GrowableArray, VectorIndex]:
        table = ItemTable()
        table.append(make_items(pd.DataFrame(records, columns=list(ITEM_COLUMNS))))
        store = GrowableArray((self.dim,), np.float32, capacity=max(1024, len(vectors)))
        store.extend(vectors)
        index = make_index(self.kind, self.dim)
        if len(vectors):
            index.add(vectors)
        return table, store, index

    def maybe_compact(self, *, log_bytes: int = LOG_COMPACT_BYTES, retired: int = RETIRED_COMPACT) -> str | None:
        """Compact what has grown (service mode, called from a background thread): the write-ahead
        log into a new snapshot once it holds ``log_bytes``, and memory once more than ``retired``
        labels (and more than half the live count) are retired. Returns what was done, or None."""
        done = []
        if self.path is not None and self._log_file is not None and self._log_file.size() >= log_bytes:
            self.save(self.path)
            done.append("log")
        if self.retired_labels() > max(retired, len(self) // 2) and self.compact_labels():
            done.append("memory")
        return "+".join(done) or None

    # ---- persistence -----------------------------------------------------------------------------
    def manifest(self) -> Manifest:
        return Manifest(model=self.model, dim=self.dim, count=len(self), index_kind=self.kind,
                        created_at=self.created_at, catalog_fingerprint=self.fingerprint(),
                        build=self.build_info)

    def fingerprint(self) -> str:
        """sha256 over live items' ids and documents, in id order: equal catalogs, equal prints."""
        return snapshot.fingerprint(self.table.live_frame())

    def save(self, path: str | os.PathLike) -> Path:
        """Write a new snapshot under ``path`` atomically and start a new write-ahead log.

        When this index follows ``path``'s log (it was loaded from there), this is an online
        compaction, safe beside other processes serving the directory: the snapshot is taken from a
        copy made under the locks and written outside them, and entries appended meanwhile (by any
        process) are carried into the new log (see ``indexer.wal``). Otherwise ``path`` gets this
        index and an empty log."""
        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        if self._log_file is None or self.path != root:
            with self.lock:
                tmp, followed = snapshot.write(root, self._state()), self._log_file
                self._install(root, tmp, 0, 0, b"")
                if followed is not None:
                    followed.close()
            return root
        while True:
            with self.lock:
                log = self._log_file
                with log.locked():
                    if log.is_current():
                        self._apply_log(skip_own=True)
                        base, state = self._wal_offset, self._state()
                        break
                self._sync_log()
        tmp = snapshot.write(root, state)  # outside the locks: writers and readers go on
        with self.lock:
            if self._log_file is not log:  # we moved to a newer log meanwhile: someone else compacted
                shutil.rmtree(tmp, ignore_errors=True)
                return root
            with log.locked():
                if not log.is_current():  # another process compacted meanwhile
                    shutil.rmtree(tmp, ignore_errors=True)
                    return root
                self._apply_log(skip_own=True)
                end = self._wal_offset
                self._install(root, tmp, base, end, log.read(base, end))
            log.close()
        return root

    def _state(self) -> Snapshot:
        """What a snapshot holds, copied (call under the lock)."""
        frame = self.table.live_frame()
        manifest = Manifest(model=self.model, dim=self.dim, count=len(frame), index_kind=self.kind,
                            created_at=self.created_at, catalog_fingerprint="", build=self.build_info)
        return Snapshot(manifest, frame, self.vectors.view[frame["label"].to_numpy()].copy(),
                        json.loads(json.dumps(self.reviews)))

    def _install(self, root: Path, tmp: Path, base: int, end: int, carried: bytes) -> None:
        """Make the snapshot in ``tmp`` current and rotate the log, carrying ``carried`` (call under
        the lock, and the old log's exclusive lock when there is one). A crash before CURRENT
        changes leaves the old snapshot and log; after, the new snapshot with the old or the new
        log, and replaying the old log on the new snapshot is harmless (updates are idempotent)."""
        previous, name = snapshot.install(root, tmp)
        self._log_file = rotate(root / WAL_NAME, name, base, end, carried)
        self._wal_offset = self._log_file.header()[1] + len(carried)
        self.path = root
        if previous and previous != name:
            shutil.rmtree(root / previous, ignore_errors=True)
        for stale in root.glob(".tmp-*"):  # left by a compaction that crashed, long ago
            if time.time() - stale.stat().st_mtime > STALE_TMP_S:
                shutil.rmtree(stale, ignore_errors=True)

    @classmethod
    def load(cls, path: str | os.PathLike, *, expect_model: str | None = None,
             expect_dim: int | None = None) -> ItemIndex:
        """Open the snapshot named in ``path/CURRENT`` and replay the write-ahead log.

        Raises FileNotFoundError when ``path`` holds no index, and IndexMismatchError when the
        index was built with a model or dimension other than ``expect_model`` / ``expect_dim``.
        Safe while other processes serve and compact the directory: CURRENT is read under a
        shared lock of the log it belongs with, and a snapshot removed meanwhile is retried.
        """
        root = Path(path)
        for attempt in range(LOAD_ATTEMPTS):
            log = LogFile.open(root / WAL_NAME)
            try:
                if log is not None:
                    with log.locked(shared=True):
                        current = snapshot.current(root) if log.is_current() else ""
                else:
                    current = snapshot.current(root)
                if current == "":
                    continue  # rotated between open and lock: take the new log
                if current is None:
                    raise FileNotFoundError(f"no semrec index in {root} (missing CURRENT); run `semrec index`")
                self = cls._from(snapshot.read(root, current, expect_model, expect_dim))
            except FileNotFoundError:
                if log is not None:
                    log.close()
                if attempt + 1 == LOAD_ATTEMPTS or not (root / "CURRENT").exists():
                    raise
                time.sleep(0.05)  # a compaction replaced the snapshot while we read it
                continue
            except BaseException:
                if log is not None:
                    log.close()
                raise
            self.path, self._log_file = root, log
            self._apply_log(skip_own=False)
            return self
        raise RuntimeError(f"{root}: the index kept changing while loading; try again")

    @classmethod
    def _from(cls, snap: Snapshot) -> ItemIndex:
        m = snap.manifest
        self = cls(model=m.model, dim=m.dim, kind=m.index_kind, build=m.build)
        self.created_at = m.created_at
        self.table.append(snap.items)
        self.vectors.extend(snap.vectors)
        self.index, self.reviews = snap.index, snap.reviews
        return self

    def open_log(self) -> None:
        """Log every later update to ``path/wal.jsonl`` before applying it (service mode).

        Several processes may serve one index: each appends whole entries under an exclusive lock
        and calls :meth:`follow` to apply the others' entries (``indexer.wal``).
        """
        if self.path is None:
            raise ValueError("save or load the index before opening its write-ahead log")
        with self.lock:
            if self._log_file is None:
                self._log_file = LogFile.open(self.path / WAL_NAME, create=True)
                self._wal_offset = 0
            self._sync_log()
            if not self._log_file.writable:
                raise PermissionError(f"{self.path / WAL_NAME} is not writable; cannot serve updates")
            self._logging = True

    def _log(self, entry: dict) -> None:
        if not self._logging:
            return
        line = (json.dumps({**entry, "origin": self.origin}, ensure_ascii=False) + "\n").encode()
        while True:
            log = self._log_file
            with log.locked():
                if log.is_current():
                    log.append(line)  # truncates a torn tail first (indexer.wal)
                    return
            self._sync_log()  # a compaction rotated the log: finish the old one, then append to the new

    def follow(self) -> int:
        """Apply log entries other processes appended since we last looked. Returns how many."""
        if self.path is None:
            return 0
        with self.lock:
            applied = self._sync_log()
            return applied + (self._apply_log(skip_own=True) if self._log_file is not None else 0)

    def _sync_log(self) -> int:
        """Move to the log file ``path`` names now if it is not ours (call under the lock): apply
        the rest of ours, then continue in the new one where our file's content ends in it."""
        log = self._log_file
        if log is not None and log.is_current():
            return 0
        new = LogFile.open(self.path / WAL_NAME)
        if new is None:
            return 0
        applied, end = (self._apply_log(skip_own=True), self._wal_offset) if log is not None else (0, 0)
        header, header_len = new.header()
        if header is None:
            self._wal_offset = 0  # a log started fresh (no compaction): follow it from the start
        elif header["end"] == end and header["base"] <= end:
            self._wal_offset = header_len + end - header["base"]
        else:
            new.close()
            raise StaleIndexError(f"{self.path}: the index was rebuilt or compacted past what this process "
                                  "has seen (another `semrec index` into this directory?); restart to serve it")
        if log is not None:
            log.close()
        self._log_file = new
        return applied

    def _apply_log(self, skip_own: bool) -> int:
        """Apply complete lines of the log past ``_wal_offset``. A last line without its newline is
        being written (or was, when a process died): it was never acknowledged and is left alone
        (the next append truncates it). Any other bad line is corruption and stops the load."""
        log = self._log_file
        if log is None:
            return 0
        complete = log.complete_lines(self._wal_offset)
        applied, logging, self._logging = 0, self._logging, False  # replayed entries are already in the log
        try:
            for n, line in enumerate(complete.splitlines()):
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{log.path}: corrupt write-ahead log entry at byte "
                                     f"{self._wal_offset}+, line {n + 1} of the unread part: {e}") from e
                if entry["op"] == "rotate" or (skip_own and entry.get("origin") == self.origin):
                    continue
                if entry["op"] == "upsert":
                    self.add(make_items(entry["items"]), _unb64(entry["vectors"], self.dim), entry.get("reviews"))
                elif entry["op"] == "delete":
                    self.delete(entry["item_id"])
                else:
                    raise ValueError(f"{log.path}: unknown op {entry['op']!r}")
                applied += 1
        finally:
            self._logging = logging
        self._wal_offset += len(complete)
        return applied


def _exact_subset(vectors, queries, k, subset):
    labels, scores = top_k(queries @ vectors[subset].T, k)
    return np.where(labels >= 0, subset[np.maximum(labels, 0)], -1), scores


def _records_json(items: pd.DataFrame) -> list[dict]:
    recs = make_items(items).to_dict("records")
    return [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()} for r in recs]


def _b64(x: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(x, dtype=np.float32).tobytes()).decode()


def _unb64(s: str, dim: int) -> np.ndarray:
    return np.frombuffer(base64.b64decode(s), dtype=np.float32).reshape(-1, dim)


def auto_kind(n_items: int, kind: str = "auto") -> str:
    return choose_kind(n_items) if kind == "auto" else kind
