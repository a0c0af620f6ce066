"""Review pools: what the index keeps of an item's reviews (the sum of their unit vectors and a
digest per text), and their two encodings: JSON inside log entries, arrays inside a snapshot.

Pools are keyed by item id, never by label, so renumbering labels (``ItemIndex.compact_labels``)
leaves them as they are.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class ReviewPool:
    """What the index holds of one item's reviews: the sum of their unit vectors, float32 ``(dim,)``,
    and a 64-bit digest per pooled text (:func:`text_key`), so a review sent twice counts once."""

    sum: np.ndarray
    seen: set[int] = field(default_factory=set)

    @property
    def count(self) -> int:
        return len(self.seen)

    def copy(self) -> ReviewPool:
        return ReviewPool(self.sum.copy(), set(self.seen))

    def add(self, text: str, vector: np.ndarray) -> bool:
        """Pool one review; False (and nothing changes) if this text is already in."""
        key = text_key(text)
        if key in self.seen:
            return False
        self.seen.add(key)
        self.sum += vector
        return True


def text_key(text: str) -> int:
    """64-bit digest of a review text: the identity of a review in a :class:`ReviewPool`."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def to_json(pool: ReviewPool | None) -> dict | None:
    """A pool as a log-entry value: the sum in base64 float32, the digests sorted."""
    if pool is None:
        return None
    raw = np.ascontiguousarray(pool.sum, dtype=np.float32).tobytes()
    return {"sum": base64.b64encode(raw).decode(), "seen": sorted(pool.seen)}


def from_json(value: dict | None) -> ReviewPool | None:
    if value is None:
        return None
    return ReviewPool(np.frombuffer(base64.b64decode(value["sum"]), dtype=np.float32).copy(), set(value["seen"]))


def copy_all(pools: dict[str, ReviewPool]) -> dict[str, ReviewPool]:
    return {item_id: pool.copy() for item_id, pool in pools.items()}


def write(pools: dict[str, ReviewPool], path: Path, dim: int) -> None:
    """Review pools as arrays: ids, sums ``(n, dim)``, counts, and all digests back to back."""
    ids = sorted(pools)
    sums = np.stack([pools[i].sum for i in ids]) if ids else np.zeros((0, dim), np.float32)
    seen = [sorted(pools[i].seen) for i in ids]
    with open(path, "wb") as fh:
        np.savez(fh, ids=np.asarray(ids, dtype=str), sums=sums.astype(np.float32),
                 counts=np.asarray([len(s) for s in seen], dtype=np.int64),
                 keys=np.asarray([k for s in seen for k in s], dtype=np.uint64))


def read(path: Path) -> dict[str, ReviewPool]:
    with np.load(path) as z:
        ids, sums, counts, keys = z["ids"], z["sums"], z["counts"], z["keys"].tolist()
    ends = np.cumsum(counts)
    return {str(i): ReviewPool(sums[n].copy(), set(keys[e - c: e]))
            for n, (i, c, e) in enumerate(zip(ids, counts.tolist(), ends.tolist()))}
