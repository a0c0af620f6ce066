"""From a catalog's interaction log to a leave-one-out split with cold-start slices.

Index spaces
    item index  int64 in ``[0, n_items)``: position in ``item_ids`` (the sorted unique ``item_id``
                strings of the reviews). Quick runs subsample users but keep the full item index, so
                an ``item_vectors`` matrix built once for a dataset lines up with every split of it.
    user index  int64 in ``[0, n_users)``: position in ``user_ids`` (sorted unique ``user_id``).

Protocol (the usual one for Amazon sequence benchmarks, e.g. SASRec / RecBole):
    * a user's sequence is ordered by ``timestamp``; equal timestamps keep file order; a user with any
      NaN timestamp keeps file order for the whole sequence (schema: then file order is time order).
    * repeated items are kept as they are (no de-duplication, not even of consecutive repeats): the
      log says the user interacted twice. Beauty 5-core has no repeats at all.
    * leave-one-out: last item = test target, second last = validation target, the rest = train.
      Users with fewer than 3 interactions are not evaluated; their whole sequence is training data.
    * validation history = train prefix; test history = train prefix + validation target.

Two protocols (``PROTOCOLS``):
    * ``standard``: no cold slices; cases whose target is already in the history are dropped from
      every metric (eSASRec's protocol, RecSys 2025: directly comparable to its published table);
    * ``cold``: the cold-start slices below.

Cold-start slices (seeded, deterministic for a given ``seed``):
    * cold items: a random ``cold_item_frac`` of the items (drawn among items with interactions).
      ALL their interactions are removed from the fit data and from every evaluation history, as if
      the items were added to the catalog after training. Cases whose target is a cold item form the
      ``cold_item`` slice; a collaborative model cannot know these items, a text model can.
    * cold users: evaluated users with at most one history item in the test history after cold-item
      removal (natural cold users), plus a simulated random ``cold_user_frac`` of the evaluated
      users: their sequences are removed from the fit data and their validation/test histories are
      cut to their single last item. (Beauty is a 5-core, so it has no natural cold users.)
    * ``warm`` = neither cold item target nor cold user.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

Array = np.ndarray
PROTOCOLS = ("standard", "cold")


def sequences_from_reviews(reviews: pd.DataFrame) -> tuple[list[Array], Array, Array]:
    """Per-user chronological item sequences.

    Args:
        reviews: schema ``reviews`` frame; uses ``user_id``, ``item_id``, ``timestamp`` and row order.

    Returns:
        sequences: ``n_users`` int64 arrays of item indexes, oldest first (``sequences[u]`` is user u).
        item_ids: (n_items,) str array, sorted unique ``item_id``; item index = position here.
        user_ids: (n_users,) str array, sorted unique ``user_id``; user index = position here.
    """
    users, user_ids = pd.factorize(reviews["user_id"].astype(str), sort=True)
    items, item_ids = pd.factorize(reviews["item_id"].astype(str), sort=True)
    users = users.astype(np.int64)
    ts = reviews["timestamp"].to_numpy(dtype=np.float64)
    n_users = len(user_ids)
    has_nan = np.zeros(n_users, dtype=bool)
    np.logical_or.at(has_nan, users, np.isnan(ts))
    key = np.where(has_nan[users], 0.0, ts)
    order = np.lexsort((np.arange(len(users)), key, users))  # last key = primary
    sorted_items = items[order].astype(np.int64)
    bounds = np.searchsorted(users[order], np.arange(n_users + 1))
    sequences = [sorted_items[bounds[u] : bounds[u + 1]] for u in range(n_users)]
    return sequences, np.asarray(item_ids, dtype=str), np.asarray(user_ids, dtype=str)


@dataclass(frozen=True)
class Split:
    """A leave-one-out split. ``E`` = number of evaluated users (those with >= 3 interactions).

    item_ids       (n_items,) str             item index -> item_id
    user_ids       (n_users,) str             user index -> user_id
    fit            list[int64 array]          training sequences handed to ``Recommender.fit``: every
                                              user's train part (whole sequence for users < 3
                                              interactions), cold items dropped, simulated cold users
                                              dropped; empty sequences are removed
    fit_users      (len(fit),) int64          the user index of each fit sequence
    users          (E,) int64                 evaluated user indexes, ascending
    valid_history  list[int64 array], len E   input for validation
    valid_target   (E,) int64
    test_history   list[int64 array], len E   input for test (includes the validation target)
    test_target    (E,) int64
    cold_items     (c,) int64, sorted         items held out of fit data and histories
    cold_users     (E,) bool                  per evaluated user: natural or simulated cold user
    seed           int
    protocol       str                        "standard" or "cold" (see the module docstring)
    """

    item_ids: Array
    user_ids: Array
    fit: list[Array]
    fit_users: Array
    users: Array
    valid_history: list[Array]
    valid_target: Array
    test_history: list[Array]
    test_target: Array
    cold_items: Array
    cold_users: Array
    seed: int
    protocol: str = "cold"

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def slices(self, stage: str) -> dict[str, Array]:
        """Boolean masks (E,) over evaluated users for ``stage`` in {"valid", "test"}.

        Keys: ``all``, ``warm``, ``cold_item`` (target is a cold item), ``cold_user``; under the
        standard protocol only ``all``, without the cases whose target is already in the history.
        """
        target = self.valid_target if stage == "valid" else self.test_target
        if self.protocol == "standard":
            history = self.valid_history if stage == "valid" else self.test_history
            return {"all": np.array([t not in set(h.tolist()) for h, t in zip(history, target)], dtype=bool)}
        cold_item = np.isin(target, self.cold_items)
        return {
            "all": np.ones(len(target), dtype=bool),
            "warm": ~cold_item & ~self.cold_users,
            "cold_item": cold_item,
            "cold_user": self.cold_users.copy(),
        }

    def train_counts(self) -> Array:
        """(n_items,) int64 interaction counts in the fit data (popularity for novelty etc.)."""
        if not self.fit:
            return np.zeros(self.n_items, dtype=np.int64)
        return np.bincount(np.concatenate(self.fit), minlength=self.n_items).astype(np.int64)


def leave_one_out(
    sequences: list[Array],
    item_ids: Array,
    user_ids: Array,
    *,
    seed: int = 0,
    cold_item_frac: float = 0.1,
    cold_user_frac: float = 0.1,
    users: Array | None = None,
    protocol: str = "cold",
) -> Split:
    """Leave-one-out split under ``protocol`` (see module docstring): "standard" ignores the cold
    fractions (no cold items, no simulated cold users); "cold" draws them.

    Args:
        sequences: per-user int64 item sequences from ``sequences_from_reviews``.
        item_ids, user_ids: the index maps from ``sequences_from_reviews``.
        seed: seeds the cold-item and cold-user draws (two independent streams).
        cold_item_frac: share of items (with at least one interaction) made cold; 0 disables.
        cold_user_frac: share of evaluated users made cold by simulation; 0 disables.
        users: optional int64 subset of user indexes to keep (e.g. a quick-run sample); others are
            dropped entirely (not even fit data). Cold items are drawn from all items either way.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; use one of {PROTOCOLS}")
    if protocol == "standard":
        cold_item_frac = cold_user_frac = 0.0
    n_items = len(item_ids)
    keep = np.arange(len(sequences)) if users is None else np.sort(np.asarray(users, dtype=np.int64))
    rng_items = np.random.default_rng([seed, 1])
    rng_users = np.random.default_rng([seed, 2])

    seen = np.flatnonzero(np.bincount(np.concatenate(sequences), minlength=n_items)) if sequences else []
    n_cold = int(round(cold_item_frac * len(seen)))
    cold_items = np.sort(rng_items.choice(seen, size=n_cold, replace=False)).astype(np.int64)
    is_cold = np.zeros(n_items, dtype=bool)
    is_cold[cold_items] = True

    def warm(seq: Array) -> Array:
        return seq[~is_cold[seq]]

    eval_users = np.array([u for u in keep if len(sequences[u]) >= 3], dtype=np.int64)
    n_sim = int(round(cold_user_frac * len(eval_users)))
    simulated = np.zeros(len(eval_users), dtype=bool)
    simulated[rng_users.choice(len(eval_users), size=n_sim, replace=False)] = True
    simulated_users = set(eval_users[simulated].tolist())

    fit: list[Array] = []
    fit_users: list[int] = []
    for u in keep:
        seq = sequences[u]
        if int(u) in simulated_users:
            continue
        part = warm(seq[:-2] if len(seq) >= 3 else seq)
        if len(part):
            fit.append(part)
            fit_users.append(int(u))

    valid_history, valid_target, test_history, test_target = [], [], [], []
    cold_users = np.zeros(len(eval_users), dtype=bool)
    for e, u in enumerate(eval_users):
        seq = sequences[u]
        vh, th = warm(seq[:-2]), warm(seq[:-1])
        if simulated[e]:
            vh, th = vh[-1:], th[-1:]
        cold_users[e] = simulated[e] or len(th) <= 1
        valid_history.append(vh)
        test_history.append(th)
        valid_target.append(seq[-2])
        test_target.append(seq[-1])

    return Split(
        item_ids=np.asarray(item_ids),
        user_ids=np.asarray(user_ids),
        fit=fit,
        fit_users=np.asarray(fit_users, dtype=np.int64),
        users=eval_users,
        valid_history=valid_history,
        valid_target=np.asarray(valid_target, dtype=np.int64),
        test_history=test_history,
        test_target=np.asarray(test_target, dtype=np.int64),
        cold_items=cold_items,
        cold_users=cold_users,
        seed=seed,
        protocol=protocol,
    )


def sample_users(sequences: list[Array], n: int, seed: int = 0) -> Array:
    """A seeded sample of ``n`` user indexes among users with >= 3 interactions (sorted int64)."""
    eligible = np.flatnonzero(np.array([len(s) >= 3 for s in sequences]))
    rng = np.random.default_rng([seed, 3])
    n = min(n, len(eligible))
    return np.sort(rng.choice(eligible, size=n, replace=False)).astype(np.int64)


def write_split(split: Split, path: str | Path) -> None:
    """Write ``split`` as one JSON file (ids as strings, so it is readable without this code).

    Layout: ``{"seed", "protocol", "fit_users": [user_id], "item_ids", "cold_items": [item_id], "fit": [[item_id]],
    "users": [{"user", "valid_history", "valid", "test_history", "test", "cold_user"}]}``.
    """
    ids = split.item_ids

    def names(seq: Array) -> list[str]:
        return ids[seq].tolist()

    doc = {
        "seed": split.seed,
        "protocol": split.protocol,
        "fit_users": split.user_ids[split.fit_users].tolist(),
        "item_ids": ids.tolist(),
        "cold_items": names(split.cold_items),
        "fit": [names(s) for s in split.fit],
        "users": [
            {
                "user": str(split.user_ids[u]),
                "valid_history": names(split.valid_history[e]),
                "valid": str(ids[split.valid_target[e]]),
                "test_history": names(split.test_history[e]),
                "test": str(ids[split.test_target[e]]),
                "cold_user": bool(split.cold_users[e]),
            }
            for e, u in enumerate(split.users)
        ],
    }
    Path(path).write_text(json.dumps(doc, separators=(",", ":")))


def read_split(path: str | Path, user_ids: Array | None = None) -> Split:
    """Read a file written by ``write_split``. ``user_ids`` defaults to the users it names."""
    doc = json.loads(Path(path).read_text())
    item_ids = np.asarray(doc["item_ids"], dtype=str)
    index = {s: i for i, s in enumerate(item_ids.tolist())}

    def idx(names: list[str]) -> Array:
        return np.array([index[s] for s in names], dtype=np.int64)

    rows = doc["users"]
    if user_ids is None:
        user_ids = np.asarray(sorted({r["user"] for r in rows} | set(doc["fit_users"])), dtype=str)
    user_index = {s: i for i, s in enumerate(np.asarray(user_ids).tolist())}
    return Split(
        item_ids=item_ids,
        user_ids=np.asarray(user_ids, dtype=str),
        fit=[idx(s) for s in doc["fit"]],
        fit_users=np.array([user_index[u] for u in doc["fit_users"]], dtype=np.int64),
        users=np.array([user_index[r["user"]] for r in rows], dtype=np.int64),
        valid_history=[idx(r["valid_history"]) for r in rows],
        valid_target=idx([r["valid"] for r in rows]),
        test_history=[idx(r["test_history"]) for r in rows],
        test_target=idx([r["test"] for r in rows]),
        cold_items=idx(doc["cold_items"]),
        cold_users=np.array([r["cold_user"] for r in rows], dtype=bool),
        seed=int(doc["seed"]),
        protocol=doc["protocol"],
    )
