"""The served pipeline as harness systems: a split replayed through the real stores, then the
one pipeline function asked for every evaluated shopper, exactly as the HTTP route asks it.

    replay = Replay.build(split, items, item_vectors, embedder, workdir)   # index + event log + state
    replay.lists(cfg, users, k, exclude_history=True)                      # validation stage
    replay.advance(split)                                                  # the validation targets happen
    replay.lists(cfg, users, k, exclude_history=True)                      # test stage

The item index holds every item with its text vector, label = item index; cold items (the cold
protocol's) were added to the catalog a day before the replay ends (``created_at``), as the
protocol means them, and nobody has touched them; other items have no creation time. The event
log (SQLite in ``workdir``) holds, per user, the history they have at validation time as
``purchase`` events, one day apart and ending a day before the replay's clock. The clock
(``Replay.now``) stands still: every list and every training feature of one stage is computed at
the same ``now``, so two runs of one split give the same figures (on the wall clock a cold item's
age grew while the ranking's training features were computed, and two fits of one config gave
0.0183 and 0.0123 on cold items). ``advance`` adds each evaluated user's validation target at the
clock, then moves it ``ADVANCE_S`` on for the test stage. Each harness system is
a ``PipelineConfig``: the served default (``semrec``) and its ablations are configs of the one
pipeline, never code paths of their own.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from indexer.embed import Embedder
from indexer.schema import make_items
from indexer.store import ItemIndex
from ranker.model import Reranker
from ranker.pipeline import PipelineConfig, recommend_users
from ranker.services import Services, open_events, set_threads
from retriever.eventstore import Event, open_event_store

from .protocol import Split

Array = np.ndarray
STEP_S = 86_400.0  # the replay clock: one day between a shopper's consecutive interactions
ADVANCE_S = 60.0  # the test stage: a minute after the validation targets happened
REPLAY_KEY = "semrec-harness-replay"  # pseudonym key of the throwaway event log
BATCH = 20_000  # events per transaction
CALL_BATCH = 64  # shoppers per pipeline call


def items_in_order(items: pd.DataFrame, item_ids: Array) -> pd.DataFrame:
    """Catalog rows in item-index order; items without metadata get a bare row (their id only)."""
    by_id = {r["item_id"]: r for r in make_items(items).drop_duplicates("item_id").to_dict("records")}
    return make_items([by_id.get(str(i), {"item_id": str(i)}) for i in item_ids])


def replay_histories(split: Split) -> dict[int, Array]:
    """user index -> the items they have touched at validation time: evaluated users their
    validation history (one item for simulated cold users), the others their fit sequence."""
    out = {int(u): seq for u, seq in zip(split.fit_users, split.fit)}
    out.update({int(u): h for u, h in zip(split.users, split.valid_history)})
    return {u: h for u, h in out.items() if len(h)}


class Replay:
    """The services of one replayed split (see the module docstring)."""

    def __init__(self, svc: Services, split: Split, now: float):
        self.svc, self.split, self.now = svc, split, now  # now: the replay's clock (Unix seconds)

    @classmethod
    def build(cls, split: Split, items: pd.DataFrame, item_vectors: Array, embedder: Embedder, workdir: Path,
              reranker: Reranker | None = None, half_lives_days: Sequence[float] = (30.0, 1.0),
              progress: bool = True) -> Replay:
        # threads as the service runs them (Settings.search_threads / torch_threads, one BLAS thread):
        # with FAISS's default two OpenMP threads on a loaded box, history-included lists (a full
        # FAISS scan per interest) took ~25 s per 64 shoppers instead of ~4 s
        set_threads(1, 1)
        end = time.time()
        frame = items_in_order(items, split.item_ids)
        frame["created_at"] = np.where(np.isin(np.arange(len(frame)), split.cold_items), end - STEP_S, np.nan)
        index = ItemIndex(model=embedder.name, dim=item_vectors.shape[1], kind="flat")
        index.add(frame, item_vectors)
        if reranker is not None:  # as the service does (api.deps.load_components): split item states
            reranker.attach(index)
        workdir.mkdir(parents=True, exist_ok=True)
        db = workdir / "events.db"
        for f in workdir.glob("events.db*"):
            f.unlink()
        store = open_event_store(db, pseudonym_key=REPLAY_KEY)
        batch = []
        histories = replay_histories(split)
        for u, seq in tqdm(histories.items(), desc="replay events", disable=not progress, leave=False):
            user = str(split.user_ids[u])
            for j, item in enumerate(seq.tolist()):
                ts = end - (len(seq) - j) * STEP_S
                batch.append(Event(f"replay:{u}:{j}", user, str(split.item_ids[item]), "purchase", ts))
            if len(batch) >= BATCH:
                store.add_events(batch)
                batch = []
        store.add_events(batch)
        store.close()
        store, state = open_events(db, REPLAY_KEY, half_lives_days)
        return cls(Services(index, embedder, store, state, reranker=reranker), split, end)

    def advance(self) -> None:
        """The validation targets happen at the clock, which then moves ``ADVANCE_S`` on to the test stage."""
        split, now = self.split, self.now
        events = [Event(f"replay:{u}:valid", str(split.user_ids[u]), str(split.item_ids[t]), "purchase", now)
                  for u, t in zip(split.users, split.valid_target)]
        for start in range(0, len(events), BATCH):
            self.svc.events.add_events(events[start:start + BATCH])
        self.svc.state.catch_up(self.svc.events)
        self.now += ADVANCE_S

    def lists(self, cfg: PipelineConfig, k: int, *, exclude_history: bool = True, desc: str | None = None,
              rows: Array | None = None) -> tuple[Array, Array]:
        """``recommend_users`` for every evaluated user (or the evaluated users at ``rows``) ->
        ``(ids, scores)`` (E, k), ids = item indexes."""
        picked = self.split.users if rows is None else self.split.users[rows]
        users = [str(self.split.user_ids[u]) for u in picked]
        ids = np.full((len(users), k), -1, dtype=np.int64)
        scores = np.full((len(users), k), -np.inf, dtype=np.float32)
        # Batches of shoppers: the same function the route calls with one, whose model parts
        # (MF fold-in, the history encoder) then run once per batch.
        for start in tqdm(range(0, len(users), CALL_BATCH), desc=desc, disable=desc is None, leave=False):
            batch = users[start:start + CALL_BATCH]
            recs = recommend_users(self.svc, cfg, batch, k, exclude_purchased=exclude_history, reasons=False,
                                   now=self.now)
            ids[start:start + len(batch)], scores[start:start + len(batch)] = recs.labels, recs.scores
        return ids, scores

    def close(self) -> None:
        if self.svc.events is not None:
            self.svc.events.close()
