"""What the event log has taught the service, in memory: co-visitation and decayed popularity,
kept in step with the log by replaying what it holds beyond the last sequence number seen."""

from __future__ import annotations

import threading
from collections.abc import Iterable

import numpy as np

from .covisit import CoVisitation, DecayedCounter
from .eventstore import EventStore, StoredEvent

DAY_S = 86_400.0


class InteractionState:
    """Co-visitation counts and one decayed popularity counter per half-life in use.

    ``half_lives_days``: every half-life a candidate config may ask for (popular and trending of
    every A/B variant); :meth:`counter` of any other is a KeyError naming the known ones.
    """

    def __init__(self, half_lives_days: Iterable[float] = (30.0, 1.0)):
        self.lock = threading.RLock()  # request threads read while event ingestion writes
        self.covisit = CoVisitation()
        self.counters = {float(d): DecayedCounter(float(d) * DAY_S) for d in half_lives_days}
        if not self.counters:
            raise ValueError("at least one popularity half-life is needed")
        self.last_seq = 0  # events up to this sequence number of the log are counted

    def counter(self, half_life_days: float) -> DecayedCounter:
        try:
            return self.counters[float(half_life_days)]
        except KeyError:
            raise KeyError(f"no popularity counter with a {half_life_days}-day half-life; kept: "
                           f"{sorted(self.counters)}") from None

    def interactions(self, item_id: str) -> int:
        """Undecayed number of events on ``item_id`` (any counter keeps the same counts)."""
        return next(iter(self.counters.values())).interactions(item_id)

    def counts(self, item_ids: list[str]) -> np.ndarray:
        """int64 ``(len(item_ids),)``: :meth:`interactions` of each, in one pass."""
        counter = next(iter(self.counters.values()))
        slots = np.fromiter((counter.index.get(i, -1) for i in item_ids), dtype=np.int64, count=len(item_ids))
        return np.where(slots >= 0, counter.count[np.maximum(slots, 0)], 0)

    def interacted(self, item_ids: list[str]) -> np.ndarray:
        """bool ``(len(item_ids),)``: has anyone interacted with each item."""
        return self.counts(item_ids) > 0

    def catch_up(self, store: EventStore) -> int:
        """Count every event the log holds beyond ``last_seq``: the one path by which events reach
        the counts, whichever process stored them. Returns how many were applied."""
        applied = 0
        with self.lock:
            while batch := store.events_after(self.last_seq):
                self.apply([e for _, e in batch])
                self.last_seq = batch[-1][0]
                applied += len(batch)
        return applied

    def apply(self, events: list[StoredEvent], sign: float = 1.0) -> None:
        with self.lock:
            self.covisit.add(events, sign)
            for counter in self.counters.values():
                counter.add(events, sign)

    def forget(self, user_key: str, erased: list[StoredEvent]) -> None:
        """Take an erased user's events back out, replayed from an empty session window as when
        they were first counted."""
        with self.lock:
            self.covisit.forget_user(user_key)
            self.apply(erased, sign=-1.0)
            self.covisit.forget_user(user_key)
