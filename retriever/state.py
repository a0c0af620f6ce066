"""What the event log has taught the service, in memory: co-visitation and decayed popularity,
kept in step with the log by replaying what it holds beyond the last sequence number seen."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

import numpy as np

from .baskets import CoPurchase
from .covisit import CoVisitation, DecayedCounter
from .eventstore import Erasure, EventStore, StoredEvent

DAY_S = 86_400.0
CATCH_UP_BATCH = 50_000  # events per snapshot read by InteractionState.catch_up


class InteractionState:
    """Co-visitation counts, co-purchase counts (baskets) and one decayed popularity counter per
    half-life in use.

    ``half_lives_days``: every half-life a candidate config may ask for (popular and trending of
    every A/B variant); :meth:`counter` of any other is a KeyError naming the known ones.
    """

    def __init__(self, half_lives_days: Iterable[float] = (30.0, 1.0)):
        self.half_lives = sorted({float(d) for d in half_lives_days})
        if not self.half_lives:
            raise ValueError("at least one popularity half-life is needed")
        self.lock = threading.RLock()  # request threads read while event ingestion writes
        self._catching_up = threading.Lock()  # one reader of the log at a time: the cursors move in order
        self.on_erasure: list[Callable[[str], object]] = []  # called with each erased user's key (query logs)
        self._reset()

    def _reset(self) -> None:
        self.covisit = CoVisitation()
        self.baskets = CoPurchase()
        self.counters = {d: DecayedCounter(d * DAY_S) for d in self.half_lives}
        self.last_seq = 0  # events up to this sequence number of the log are counted
        self.last_erasure = 0  # erasure log entries up to this one are applied

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
        """Apply every erasure and count every event the log holds beyond the cursors: the one path
        by which events and erasures reach the counts, whichever process stored them. Returns how
        many events were counted.

        Each round reads one snapshot and applies its erasures before its events. Why that is exact:
        an erased event with seq <= ``last_seq`` was read, and counted, in an earlier snapshot (seqs
        become visible in order, and it was not yet deleted: the erasure was not yet visible);
        one above ``last_seq`` is already deleted in this snapshot, so it is never counted.
        """
        counted = 0
        with self._catching_up:
            while True:
                changes = store.changes_after(self.last_seq, self.last_erasure, CATCH_UP_BATCH)
                if changes.erasures_pruned_through > self.last_erasure and self.last_seq > 0:
                    with self.lock:  # erasures we never applied were pruned: recount the log as it is
                        self._reset()
                    continue
                with self.lock:
                    for erasure in changes.erasures:
                        self.apply_erasure(erasure)
                    if changes.events:
                        self.apply([e for _, e in changes.events])
                        self.last_seq = changes.events[-1][0]
                self.last_erasure = max([self.last_erasure, changes.erasures_pruned_through,
                                         *(e.seq for e in changes.erasures)])
                counted += len(changes.events)
                if len(changes.events) < CATCH_UP_BATCH:  # the snapshot held no more
                    return counted

    def apply_erasure(self, erasure: Erasure) -> None:
        """Take an erased user's share out of the counts: the erased events this state counted
        (seq <= ``last_seq``), replayed with the opposite sign from an empty session window, as
        when they were first counted."""
        with self.lock:
            self._forget(erasure.user_key)
            self.apply([e for seq, e in erasure.events if seq <= self.last_seq], sign=-1.0)
            self._forget(erasure.user_key)
        for forget in self.on_erasure:
            forget(erasure.user_key)

    def _forget(self, user_key: str) -> None:
        self.covisit.forget_user(user_key)
        self.baskets.forget_user(user_key)

    def apply(self, events: list[StoredEvent], sign: float = 1.0) -> None:
        with self.lock:
            self.covisit.add(events, sign)
            self.baskets.add(events, sign)
            for counter in self.counters.values():
                counter.add(events, sign)
