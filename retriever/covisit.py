"""Collaborative signals learned from the event log, updated one event at a time.

- ``CoVisitation``: item-to-item counts from each shopper's consecutive items. When a shopper
  touches ``b`` after ``a`` (with ``d - 1`` items between, ``d <= window``), ``a -> b`` gains
  ``w / d`` and ``b -> a`` gains ``reverse * w / d`` (w = the event's type weight). Neighbours of a
  history are scored by row-normalised counts (transition probabilities), summed over the history
  with the newest item weighing most.
- ``DecayedCounter``: popularity with exponential time decay (``popular``: weeks; ``trending``: a day).

Both can ``remove`` a user's events (replayed with the opposite sign) so deleting a user also takes
their contribution out of the aggregates.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Callable, Iterable

import numpy as np

from .eventstore import StoredEvent
from .profiles import TYPE_WEIGHTS


class CoVisitation:
    def __init__(self, window: int = 3, reverse: float = 0.5):
        self.window, self.reverse = window, reverse
        self.counts: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.totals: dict[str, float] = defaultdict(float)
        self._recent: dict[str, deque[str]] = {}

    def add(self, events: Iterable[StoredEvent], sign: float = 1.0) -> None:
        """Count events (each user's in time order). ``sign=-1`` takes them back out."""
        for e in events:
            recent = self._recent.setdefault(e.user_key, deque(maxlen=self.window))
            if recent and recent[-1] == e.item_id:
                continue  # a repeated view of the same item says nothing about pairs
            w = sign * TYPE_WEIGHTS.get(e.type, 1.0)
            for distance, prev in enumerate(reversed(recent), start=1):
                if prev != e.item_id:
                    self._bump(prev, e.item_id, w / distance)
                    self._bump(e.item_id, prev, self.reverse * w / distance)
            recent.append(e.item_id)

    def _bump(self, a: str, b: str, w: float) -> None:
        row = self.counts[a]
        row[b] += w
        self.totals[a] += w
        if row[b] <= 1e-9:
            del row[b]

    def forget_user(self, user_key: str) -> None:
        self._recent.pop(user_key, None)

    def neighbours(self, history: list[str], n: int, decay: float = 0.7) -> tuple[list[str], np.ndarray]:
        """Top-``n`` items following ``history`` (oldest first) -> ``(item_ids, scores float32)``.

        score(j) = sum_i decay**age_i * count(i -> j) / total(i), age 0 for the newest history item.
        History items themselves are not returned.
        """
        scores: dict[str, float] = defaultdict(float)
        seen = set(history)
        for age, item in enumerate(reversed(history[-10:])):
            total = self.totals.get(item, 0.0)
            if total <= 0:
                continue
            for other, c in self.counts[item].items():
                if other not in seen:
                    scores[other] += decay**age * c / total
        best = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
        return [b[0] for b in best], np.array([b[1] for b in best], dtype=np.float32)


class DecayedCounter:
    """Sum of event weights per item, each decayed by ``0.5 ** (age / half_life)``.

    Stored relative to a reference time ``t0`` (scores scaled by ``2 ** ((t - t0) / half_life)``), so
    an update is O(1) and ranking needs no pass over old events.
    """

    def __init__(self, half_life_s: float):
        self.half_life = half_life_s
        self.t0: float | None = None
        self.index: dict[str, int] = {}
        self.ids: list[str] = []
        self.score = np.zeros(1024, dtype=np.float64)
        self.count = np.zeros(1024, dtype=np.int64)  # undecayed number of events, for "new item" tests

    def add(self, events: Iterable[StoredEvent], sign: float = 1.0) -> None:
        for e in events:
            if self.t0 is None:
                self.t0 = e.ts
            exponent = (e.ts - self.t0) / self.half_life
            if exponent > 60:  # rebase before 2**exponent loses precision
                self.score *= 2.0 ** -exponent
                self.t0, exponent = e.ts, 0.0
            i = self._slot(e.item_id)
            self.score[i] = max(0.0, self.score[i] + sign * TYPE_WEIGHTS.get(e.type, 1.0) * 2.0**exponent)
            self.count[i] = max(0, self.count[i] + int(sign))

    def _slot(self, item_id: str) -> int:
        i = self.index.get(item_id)
        if i is None:
            i = self.index[item_id] = len(self.ids)
            self.ids.append(item_id)
            if i >= len(self.score):
                self.score = np.concatenate([self.score, np.zeros_like(self.score)])
                self.count = np.concatenate([self.count, np.zeros_like(self.count)])
        return i

    def top(self, n: int, keep: Callable[[str], bool] | None = None) -> tuple[list[str], np.ndarray]:
        """The ``n`` highest-scoring items passing ``keep`` -> ``(item_ids, scores)``, best scaled to 1."""
        s = self.score[: len(self.ids)]
        m = len(s)
        out: list[int] = []
        # Sort a generous head first (argpartition), the whole array only if ``keep`` rejects too many.
        for cut in dict.fromkeys((min(m, 4 * n + 64), m)):
            head = np.argpartition(-s, cut - 1)[:cut] if 0 < cut < m else np.arange(m)
            out = []
            for i in head[np.lexsort((head, -s[head]))]:  # score desc, then lower slot: as a stable sort
                if s[i] <= 0 or len(out) == n:
                    break
                if keep is None or keep(self.ids[i]):
                    out.append(int(i))
            if len(out) == n or cut == m or s[head].min() <= 0:  # the head held every positive score
                break
        best = s[out[0]] if out else 1.0
        return [self.ids[i] for i in out], (s[out] / best).astype(np.float32)

    def relative(self, item_ids: list[str]) -> np.ndarray:
        """float32 ``(len(item_ids),)``: each item's decayed score over the best item's (0 unknown)."""
        s = self.score[: len(self.ids)]
        best = s.max() if len(s) else 0.0
        slots = np.fromiter((self.index.get(i, -1) for i in item_ids), dtype=np.int64, count=len(item_ids))
        vals = np.where(slots >= 0, s[np.maximum(slots, 0)], 0.0) if len(s) else np.zeros(len(item_ids))
        return (vals / best if best > 0 else np.zeros(len(item_ids))).astype(np.float32)

    def interactions(self, item_id: str) -> int:
        i = self.index.get(item_id)
        return 0 if i is None else int(self.count[i])
