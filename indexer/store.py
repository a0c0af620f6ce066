"""ItemIndex: the catalog in memory (``indexer.memory``) persisted to a directory and shared.

Directory layout::

    INDEX_DIR/CURRENT          name of the live snapshot, replaced atomically (os.replace)
    INDEX_DIR/v000003/         a snapshot: manifest.json, items.parquet, vectors.npy, index.faiss,
                               reviews.json, review_pools.npz (``indexer.snapshot``)
    INDEX_DIR/wal.jsonl        upserts/deletes acknowledged since that snapshot (fsync'd per write;
                               format, torn tails and rotation in ``indexer.wal``)

A snapshot is written to a fresh folder, fsync'd, and only then named in CURRENT, so a crash at any
point leaves the previous snapshot loadable. Loading replays the write-ahead log on top, so every
acknowledged update survives a crash. Replay is idempotent (upsert and delete are). With a shared
store, a catalog feed (``indexer.feed``, PostgreSQL) carries the updates instead of wal.jsonl.

Bounded while serving: :meth:`ItemIndex.maybe_compact` folds a log past ``LOG_COMPACT_BYTES`` into
a new snapshot (online, beside other processes), and renumbers labels once many are retired
(``indexer.relabel``), so neither the directory nor memory grows with the number of updates.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from pathlib import Path

from . import pools as review_pools
from . import snapshot
from .feed import CatalogFeed
from .memory import EXACT_SUBSET_MAX, MemoryIndex
from .snapshot import FORMAT_VERSION, IndexMismatchError, IndexNotFoundError, Manifest, Snapshot, read_manifest
from .vectors import choose_kind
from .wal import WAL_NAME, LogFile, rotate

__all__ = ["EXACT_SUBSET_MAX", "FORMAT_VERSION", "IndexMismatchError", "IndexNotFoundError", "ItemIndex",
           "Manifest", "StaleIndexError", "auto_kind", "read_manifest"]

# Compaction while serving. A log entry is ~2-20 KB (vectors in base64, the item's JSON): 32 MB is
# a few thousand updates, folded in a second or two. Labels: memory per retired label is a vector
# (1.5 KB at 384-d, twice: array and index) plus its record.
LOG_COMPACT_BYTES = 32 << 20
RETIRED_COMPACT = 1024
LOAD_ATTEMPTS = 20
STALE_TMP_S = 3600.0  # a snapshot folder this old and unnamed was left by a crash


class StaleIndexError(RuntimeError):
    """The directory's log moved on past what this process holds (a rebuild into its directory)."""


class ItemIndex(MemoryIndex):
    """The searchable catalog (:class:`indexer.memory.MemoryIndex`), persisted to a directory and
    kept in step with the other processes serving it. Thread-safe: one lock orders readers and writers."""

    def __init__(self, *, model: str, dim: int, kind: str = "flat", build: dict | None = None):
        super().__init__(model=model, dim=dim, kind=kind, build=build)
        self.path: Path | None = None  # set when opened from / saved to a directory
        self._log_file: LogFile | None = None  # the wal.jsonl we follow (and append to once logging)
        self._logging = False  # service mode (open_log): every update is logged before it applies
        self._wal_offset = 0  # bytes of that file applied so far (replayed, written or followed)
        self.origin = uuid.uuid4().hex  # tags our log entries, so followers of the log skip their own
        self.snapshot: str | None = None  # name of the snapshot loaded or saved last (v000003)
        self.feed: CatalogFeed | None = None  # a shared catalog feed replaces wal.jsonl (see use_feed)
        self._feed_position = 0  # feed entries up to here are applied
        self._following = False  # applying feed entries: they are in the feed already

    def can_relabel(self) -> bool:
        # Processes on one catalog feed give every item the same label (they apply the feed in one
        # order), so that a vector store they share (a Milvus server) can be keyed by label: one
        # process renumbering on its own would break that, so label compaction is off with a feed.
        return self.feed is None and super().can_relabel()

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
    def save(self, path: str | os.PathLike) -> Path:
        """Write a new snapshot under ``path`` atomically and start a new write-ahead log.

        When this index follows ``path``'s log (it was loaded from there), this is an online
        compaction, safe beside other processes serving the directory: the snapshot is taken from a
        copy made under the locks and written outside them, and entries appended meanwhile (by any
        process) are carried into the new log (see ``indexer.wal``). Otherwise ``path`` gets this
        index and an empty log. With a catalog feed, the feed records the new snapshot's position."""
        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        if self._log_file is None or self.path != root:
            with self.lock:
                tmp, followed = snapshot.write(root, self._state()), self._log_file
                self._install(root, tmp, 0, 0, b"", self._feed_position)
                if followed is not None:
                    followed.close()
            return root
        while True:
            with self.lock:
                log = self._log_file
                with log.locked():
                    if log.is_current():
                        self._apply_log(skip_own=True)
                        base, state, position = self._wal_offset, self._state(), self._feed_position
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
                self._install(root, tmp, base, end, log.read(base, end), position)
            log.close()
        return root

    def _state(self) -> Snapshot:
        """What a snapshot holds, copied (call under the lock)."""
        frame = self.table.live_frame()
        manifest = Manifest(model=self.model, dim=self.dim, count=len(frame), index_kind=self.kind,
                            created_at=self.created_at, catalog_fingerprint="", build=self.build_info)
        return Snapshot(manifest, frame, self.vectors.view[frame["label"].to_numpy()].copy(),
                        json.loads(json.dumps(self.reviews)), review_pools.copy_all(self.pools))

    def _install(self, root: Path, tmp: Path, base: int, end: int, carried: bytes, position: int) -> None:
        """Make the snapshot in ``tmp`` current and rotate the log, carrying ``carried`` (call under
        the lock, and the old log's exclusive lock when there is one). A crash before CURRENT
        changes leaves the old snapshot and log; after, the new snapshot with the old or the new
        log, and replaying the old log on the new snapshot is harmless (updates are idempotent).
        ``position``: the catalog feed position the snapshot holds everything up to."""
        previous, name = snapshot.install(root, tmp)
        self.snapshot = name
        if self.feed is not None:  # before loaders (they read CURRENT under the log's lock) start from it
            self.feed.mark_snapshot(self.snapshot_id, position)
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

        Raises IndexNotFoundError when ``path`` holds no index, and IndexMismatchError when the
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
                    raise IndexNotFoundError(f"no semrec index in {root} (missing CURRENT); "
                                             "build one with `semrec index`")
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
            self.path, self._log_file, self.snapshot = root, log, current
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
        self.index, self.reviews, self.pools = snap.index, snap.reviews, snap.pools
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
        if self.feed is not None:
            if not self._following:  # others' changes that precede ours first: one order in every process
                position, before = self.feed.append({**entry, "origin": self.origin}, self._feed_position)
                self._apply_feed(before)
                self._feed_position = position
            return
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

    def _refresh(self) -> None:
        if self.feed is not None and not self._following:
            self.follow()

    def follow(self) -> int:
        """Apply log (or feed) entries other processes appended since we last looked. Returns how many."""
        with self.lock:
            if self.feed is not None:
                applied = 0
                while entries := self.feed.read_after(self._feed_position):
                    applied += self._apply_feed(entries)
                return applied
            if self.path is None:
                return 0
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
                self._apply_entry(entry, str(log.path))
                applied += 1
        finally:
            self._logging = logging
        self._wal_offset += len(complete)
        return applied

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


def auto_kind(n_items: int, kind: str = "auto") -> str:
    return choose_kind(n_items) if kind == "auto" else kind
