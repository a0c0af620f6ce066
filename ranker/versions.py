"""Versioned model directories (``root/vNNNN``), as ``semrec train`` and ``semrec train-ranker``
publish them and the service loads them: one listing for every reader and writer."""

from __future__ import annotations

import os
from pathlib import Path


def version_dirs(root: str | os.PathLike) -> list[Path]:
    """The ``vNNNN`` directories under ``root``, oldest (lowest number) first."""
    p = Path(root)
    found = [d for d in p.iterdir() if d.is_dir() and d.name.startswith("v") and d.name[1:].isdigit()]
    return sorted(found, key=lambda d: int(d.name[1:]))


def next_version(root: str | os.PathLike) -> Path:
    """``root/vNNNN`` with the next free number (``root`` created if missing)."""
    p = Path(root)
    p.mkdir(parents=True, exist_ok=True)
    numbers = [int(d.name[1:]) for d in p.iterdir() if d.name.startswith("v") and d.name[1:].isdigit()]
    return p / f"v{max(numbers, default=0) + 1:04d}"
