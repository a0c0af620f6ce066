"""Files replaced atomically: readers see the old file or the new one, never half of one.

Several server processes may write the same cache at once (each worker builds the search
vocabulary's vectors on its first start), so every writer gets a temporary name of its own; a
shared ``x.tmp`` let one worker's rename take the file from under the other's (a worker failed to
start).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``, private to this writer; write the file (or folder)
    there. On success it is renamed over ``path``; on failure it is removed and ``path`` is untouched."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


def atomic_write(path: Path, text: str) -> None:
    """Replace ``path`` by ``text``, durably (file and folder synced)."""
    with replacing(path) as tmp, open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
