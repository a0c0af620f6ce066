"""The write-ahead log file of an index directory (``wal.jsonl``): one JSON entry per line, appended
by any number of processes, followed by byte offset, rotated by compaction.

Rules that keep it readable after any crash:

- Appends happen under an exclusive ``flock`` of the file, one whole line per write, fsync'd before
  the write is acknowledged. Before appending, a *torn tail* (a last line without its newline: a
  process died inside a write, or the disk filled) is truncated away: it was never acknowledged,
  and an entry appended onto it would corrupt both lines.
- Readers take complete lines only, so a line being written is never half-applied.
- Compaction *rotates* the log: under the exclusive lock it writes a new file, whose first line is a
  header ``{"op": "rotate", "snapshot": name, "base": b, "end": e}`` followed by the bytes ``[b, e)``
  of the old file (entries appended after the snapshot was taken), and renames it over the old
  one. A process still holding the old file notices (the path names another inode), reads the old
  file to its end, and continues in the new one at ``len(header) + (e - b)``.
"""

from __future__ import annotations

import fcntl
import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .files import fsync_dir

WAL_NAME = "wal.jsonl"
_TAIL_SCAN = 1 << 16  # bytes read at a time when looking for the last newline


class LogFile:
    """One open log file (one inode), for reading and, when the directory allows, appending."""

    def __init__(self, path: Path, fd: int, writable: bool):
        self.path, self.fd, self.writable = path, fd, writable
        st = os.fstat(fd)
        self.inode = (st.st_dev, st.st_ino)

    @classmethod
    def open(cls, path: str | os.PathLike, *, create: bool = False) -> LogFile | None:
        """The file now at ``path`` (None if there is none and ``create`` is False). Opened
        read-write when possible, else read-only."""
        path = Path(path)
        writable = create or os.access(path.parent, os.W_OK)
        flags = (os.O_RDWR | os.O_APPEND if writable else os.O_RDONLY) | (os.O_CREAT if create else 0)
        try:
            fd = os.open(path, flags, 0o644)
        except FileNotFoundError:
            return None
        except PermissionError:
            fd, writable = os.open(path, os.O_RDONLY), False
        return cls(path, fd, writable)

    def is_current(self) -> bool:
        """Whether ``path`` still names this file (False once a compaction has rotated it)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        return (st.st_dev, st.st_ino) == self.inode

    @contextmanager
    def locked(self, shared: bool = False) -> Iterator[None]:
        fcntl.flock(self.fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def read(self, start: int, end: int | None = None) -> bytes:
        """Bytes ``[start, end)`` (to the end of the file by default)."""
        end = self.size() if end is None else end
        chunks, pos = [], start
        while pos < end:
            chunk = os.pread(self.fd, min(end - pos, 1 << 24), pos)
            if not chunk:
                break
            chunks.append(chunk)
            pos += len(chunk)
        return b"".join(chunks)

    def complete_lines(self, start: int) -> bytes:
        """The complete lines from byte ``start`` on (a last line without its newline is left out)."""
        data = self.read(start)
        return data[: data.rfind(b"\n") + 1]

    def header(self) -> tuple[dict | None, int]:
        """``(rotation header, its length in bytes)``, or ``(None, 0)`` when the log has none."""
        first = os.pread(self.fd, 4096, 0)
        if not first.startswith(b'{"op": "rotate"'):
            return None, 0
        line = first[: first.find(b"\n") + 1]
        return (json.loads(line), len(line)) if line else (None, 0)

    def append(self, line: bytes) -> None:
        """Append one entry line (call holding the exclusive lock): a torn tail is truncated
        first; on a failed write the file is cut back, so it never ends torn by our doing."""
        if not self.writable:
            raise PermissionError(f"{self.path} is read-only here; cannot log updates")
        start = self._drop_torn_tail()
        try:
            view = memoryview(line)
            while view:
                view = view[os.write(self.fd, view):]
            os.fsync(self.fd)
        except BaseException:
            os.ftruncate(self.fd, start)
            raise

    def _drop_torn_tail(self) -> int:
        """Truncate the file after its last newline; returns the resulting size."""
        size = self.size()
        if size == 0 or os.pread(self.fd, 1, size - 1) == b"\n":
            return size
        pos = size
        while pos > 0:
            lo = max(0, pos - _TAIL_SCAN)
            cut = os.pread(self.fd, pos - lo, lo).rfind(b"\n")
            if cut >= 0:
                pos = lo + cut + 1
                break
            pos = lo
        os.ftruncate(self.fd, pos)
        os.fsync(self.fd)
        return pos

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def rotate(path: Path, snapshot: str, base: int, end: int, carried: bytes) -> LogFile:
    """Replace the log at ``path`` by a new file: the rotation header, then ``carried`` (the old
    file's complete lines ``[base, end)``). Durable before it returns; call holding the old file's
    exclusive lock (or with no old file)."""
    header = (json.dumps({"op": "rotate", "snapshot": snapshot, "base": base, "end": end}) + "\n").encode()
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    # opened before the rename, so this is our file even if another compaction rotates it at once
    fd = os.open(tmp, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        for part in (header, carried):
            view = memoryview(part)
            while view:
                view = view[os.write(fd, view):]
        os.fsync(fd)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    return LogFile(path, fd, writable=True)


def holds_entries(path: str | os.PathLike) -> bool:
    """Whether the log at ``path`` holds any bytes past its rotation header (updates since the snapshot)."""
    log = LogFile.open(path)
    if log is None:
        return False
    try:
        return log.size() > log.header()[1]
    finally:
        log.close()
