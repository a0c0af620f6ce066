"""Versioned model directories (``root/vNNNN``), as ``semrec train`` and ``semrec train-ranker``
publish them and the service loads them: one listing for every reader and writer."""

from __future__ import annotations

import os
from pathlib import Path


def _number(name: str) -> int | None:
    """N of a ``vNNNN`` name, else None."""
    return int(name[1:]) if name.startswith("v") and name[1:].isdigit() else None


def version_dirs(root: str | os.PathLike) -> list[Path]:
    """The ``vNNNN`` directories under ``root``, oldest (lowest number) first."""
    found = [d for d in Path(root).iterdir() if d.is_dir() and _number(d.name) is not None]
    return sorted(found, key=lambda d: _number(d.name))


def next_version(root: str | os.PathLike) -> Path:
    """``root/vNNNN`` with the next free number (``root`` created if missing). Any entry with a
    ``vNNNN`` name counts, directory or not, so the new name is never taken."""
    p = Path(root)
    p.mkdir(parents=True, exist_ok=True)
    numbers = [n for n in (_number(d.name) for d in p.iterdir()) if n is not None]
    return p / f"v{max(numbers, default=0) + 1:04d}"
