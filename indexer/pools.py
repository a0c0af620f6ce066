"""Review pools: what the index keeps of an item's reviews (the sum of their unit vectors, a
digest per text and each review's vector), and their two encodings: JSON inside log entries, arrays inside a snapshot.

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


def to_json(pool: ReviewPool | None) -> dict | None:
    """A pool as a log-entry value: the sum in base64 float32, the digests sorted, the review rows
    in base64 float16."""
    if pool is None:
        return None
    raw = np.ascontiguousarray(pool.sum, dtype=np.float32).tobytes()
    rows = np.ascontiguousarray(pool.matrix(), dtype=np.float16).tobytes()
    return {"sum": base64.b64encode(raw).decode(), "seen": sorted(pool.seen), "rows": base64.b64encode(rows).decode()}


def from_json(value: dict | None) -> ReviewPool | None:
    if value is None:
        return None
    total = np.frombuffer(base64.b64decode(value["sum"]), dtype=np.float32).copy()
    # entries written before per-review rows were kept have none: those pools match no single review
    rows = np.frombuffer(base64.b64decode(value.get("rows", "")), dtype=np.float16).reshape(-1, len(total))
    return ReviewPool(total, set(value["seen"]), list(rows.copy()))


def copy_all(pools: dict[str, ReviewPool]) -> dict[str, ReviewPool]:
    return {item_id: pool.copy() for item_id, pool in pools.items()}


def write(pools: dict[str, ReviewPool], path: Path, dim: int) -> None:
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


def read(path: Path) -> dict[str, ReviewPool]:
    with np.load(path) as z:
        ids, sums, counts, keys = z["ids"], z["sums"], z["counts"], z["keys"].tolist()
        # snapshots written before per-review rows were kept have none: those pools match no single review
        row_counts = z["row_counts"] if "row_counts" in z else np.zeros(len(ids), np.int64)
        rows = z["rows"] if "rows" in z else np.zeros((0, sums.shape[1] if sums.ndim == 2 else 0), np.float16)
    ends, row_ends = np.cumsum(counts), np.cumsum(row_counts)
    return {str(i): ReviewPool(sums[n].copy(), set(keys[e - c: e]), list(rows[re - rc: re]))
            for n, (i, c, e, rc, re) in enumerate(zip(ids, counts.tolist(), ends.tolist(), row_counts.tolist(),
                                                      row_ends.tolist()))}
