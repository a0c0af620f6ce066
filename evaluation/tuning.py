"""Baselines at their best: each tuned on validation NDCG@10 only (test is never looked at), by a
staged coordinate search over a documented grid.

    model, record = tune("als", split, quick=False, seed=0)

A grid is a list of stages; each stage varies one setting over its values with the others at the
best so far (the first stage starts from ``BASE``), keeps the best value, and moves on. The best
trial's fitted model is the one evaluated; ``record`` holds every trial (settings, validation
NDCG@10, seconds) for results.json and the README. Validation NDCG@10 is measured on a seeded
sample of ``VALID_USERS`` validation cases, history excluded, full ranking.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from retriever.collaborative import ALS, BPR, Markov, Popularity, Recommender, VectorRecommender
from retriever.ease import EASE, gram_eigen
from retriever.sasrec import SASRec

from .metrics import ndcg_at_k, rank_targets
from .protocol import Split

VALID_USERS = 4000
BASE: dict[str, dict[str, Any]] = {
    "popularity": {},
    "markov": {"window": 10, "decay": 0.8, "symmetric": True},
    "als": {"factors": 128, "regularization": 0.1, "alpha": 10.0, "iterations": 15},
    "bpr": {"factors": 64, "learning_rate": 0.05, "regularization": 0.001, "iterations": 200},
    "ease": {"lam": 500.0},
    "sasrec": {"hidden": 64, "dropout": 0.5, "lr": 1e-3, "max_minutes": 25.0},
    "text-zero-shot": {"decay": 0.8},
}
GRIDS: dict[str, list[dict[str, list]]] = {
    "popularity": [],
    "markov": [{"window": [1, 3, 10]}, {"decay": [0.5, 0.8, 1.0]}, {"symmetric": [False, True]}],
    "als": [{"alpha": [1.0, 10.0, 40.0]}, {"regularization": [0.01, 0.1, 1.0, 10.0]},
            {"factors": [64, 128, 256, 512]}],
    "bpr": [{"learning_rate": [0.01, 0.05, 0.1]}, {"regularization": [0.0001, 0.001, 0.01]},
            {"factors": [64, 128, 256]}],
    "ease": [{"lam": [10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0, 4000.0]}],
    "sasrec": [{"dropout": [0.2, 0.5]}],
    "text-zero-shot": [{"decay": [0.5, 0.8, 1.0]}],
}
QUICK_BASE: dict[str, dict[str, Any]] = {
    "als": {"factors": 32, "iterations": 10},
    "bpr": {"factors": 32, "iterations": 50},
    "sasrec": {"max_epochs": 6, "eval_every": 3, "patience": 1, "lr": 5e-3, "eval_users": 500},
}
QUICK_GRIDS: dict[str, list[dict[str, list]]] = {
    "markov": [{"window": [3, 10]}], "als": [{"alpha": [1.0, 10.0]}], "ease": [{"lam": [100.0, 500.0]}],
    "bpr": [], "sasrec": [], "text-zero-shot": [{"decay": [0.5, 0.8]}], "popularity": [],
}


def validation_ndcg(model: Recommender, split: Split, users: int | None = 4000, seed: int = 0) -> float:
    """NDCG@10 (history excluded) of ``model`` on a seeded sample of ``users`` validation cases:
    what models that early-stop are stopped on (test is never looked at)."""
    rows = np.arange(len(split.users))
    if users is not None and users < len(rows):
        rows = np.sort(np.random.default_rng([seed, 41]).choice(rows, users, replace=False))
    excluded, _ = rank_targets(model.score, [split.valid_history[r] for r in rows], split.valid_target[rows], 10)
    return ndcg_at_k(excluded.ranks, 10)


def build(name: str, params: dict[str, Any], seed: int, item_vectors=None) -> Recommender:
    if name == "popularity":
        return Popularity()
    if name == "markov":
        return Markov(**params)
    if name == "als":
        return ALS(seed=seed, **params)
    if name == "bpr":
        return BPR(seed=seed, **params)
    if name == "ease":
        return EASE(**params)
    if name == "sasrec":
        return SASRec(seed=seed, **params)
    if name == "text-zero-shot":
        if item_vectors is None:
            raise ValueError("'text-zero-shot' needs item_vectors")
        return VectorRecommender(item_vectors, **params)
    raise ValueError(f"unknown baseline {name!r}; known: {', '.join(BASE)}")


def tune(name: str, split: Split, *, quick: bool, seed: int, item_vectors=None) -> tuple[Recommender, dict]:
    """The best model of ``name``'s grid on validation, and the record of every trial."""

    base = {**BASE[name], **(QUICK_BASE.get(name, {}) if quick else {})}
    grid = (QUICK_GRIDS if quick else GRIDS)[name]
    extra = {"gram_eig": gram_eigen(split.fit, split.n_items)} if name == "ease" else {}
    trials: list[dict] = []
    seen: set[tuple] = set()

    def trial(params: dict[str, Any]) -> tuple[Recommender | None, float]:
        """Fit and score ``params``; (None, -inf) when they were tried already (only the best model
        is kept: an EASE weight matrix is 0.6 GB on Beauty)."""
        key = tuple(sorted(params.items()))
        if key in seen:
            return None, -float("inf")
        seen.add(key)
        t = time.perf_counter()
        model = build(name, params, seed, item_vectors)
        if isinstance(model, SASRec):
            model.fit(split.fit, split.n_items, validate=lambda m: validation_ndcg(m, split, 1000, seed))
        else:
            model.fit(split.fit, split.n_items, **extra)
        score = validation_ndcg(model, split, VALID_USERS, seed)
        trials.append({"params": dict(params), "valid_ndcg@10": round(score, 5),
                       "seconds": round(time.perf_counter() - t, 1)})
        return model, score

    best = dict(base)
    model, score = trial(best)
    for stage in grid:
        (key, values), = stage.items()
        for value in values:
            m, s = trial({**best, key: value})
            if s > score:
                model, score, best = m, s, {**best, key: value}
            del m
    return model, {"grid": grid, "base": base, "best": best, "valid_ndcg@10": round(score, 5), "trials": trials,
                   "valid_users": VALID_USERS}
