"""Fitting the served pipeline's learned parts on a replayed split, as the harness and
``semrec train`` both do: MF factors and the history encoder on the fit sequences, then the
learned ranking on the validation shoppers' candidates (the pipeline's own candidate stage, at
validation time), never on test.

    record = fit_learned(replay, item_vectors, LearnedConfig())   # sets replay.svc.mf / encoder / ranking

Validation is the second-last interaction of each evaluated shopper (``evaluation.protocol``);
the encoder early-stops on its own validation NDCG@10, the ranking model on LightGBM's NDCG@10 of
a held-out fifth of the validation groups.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch

from ranker.features import NAMES
from ranker.ltr import RankingModel
from ranker.pipeline import PipelineConfig, candidates_for, rerank_feature
from ranker.sources import user_queries
from retriever.ease import EASEConfig, EASEModel, covered_gram, ease_rows
from retriever.encoder import HistoryEncoder
from retriever.mf import MFConfig, MFModel, fit_factors
from retriever.personal import user_profile
from retriever.sequence import SequenceConfig, SequenceNet, user_states
from retriever.sequence_train import fit_sequence_model

from .metrics import ndcg_at_k, rank_targets
from .served import Replay

Array = np.ndarray


@dataclass(frozen=True)
class RankingConfig:
    """LightGBM LambdaRank settings. Small trees with heavy regularisation: on 1,332 Beauty groups
    the library defaults (31 leaves, 50 rows per leaf) ranked held-out groups worse than the fused
    score alone (NDCG@10 0.115 vs 0.135), these 7-leaf trees better (0.152)."""

    users: int | None = 8_000       # validation shoppers whose candidates train the ranking (seeded sample)
    negatives: int = 400            # non-target candidates kept per group (seeded sample; ~all of them)
    holdout: float = 0.2            # share of groups held out to pick the number of rounds
    num_leaves: int = 7
    learning_rate: float = 0.03
    rounds: int = 800
    min_data_in_leaf: int = 300
    feature_fraction: float = 0.7
    lambda_l2: float = 10.0
    check_every: int = 50           # rounds between held-out checks
    require_gain: bool = True       # no model unless it beats the fused order on the held-out groups
    seed: int = 0


@dataclass(frozen=True)
class LearnedConfig:
    mf: MFConfig = field(default_factory=MFConfig)
    ease: EASEConfig = field(default_factory=EASEConfig)
    ease_lams: tuple[float, ...] = (25.0, 50.0, 200.0, 800.0)  # picked on validation NDCG@10
    encoder: SequenceConfig = field(default_factory=lambda: SequenceConfig(item_input="text+id", hidden=64))
    ranking: RankingConfig = field(default_factory=RankingConfig)
    parts: tuple[str, ...] = ("mf", "ease", "encoder", "ranking")


def fit_learned(replay: Replay, item_vectors: Array, cfg: LearnedConfig = LearnedConfig(),
                pipeline: PipelineConfig = PipelineConfig(), progress: bool = False) -> dict:
    """Fit ``cfg.parts`` on ``replay`` (before ``replay.advance``) and put them into its services.
    Returns the record for the model cards: sizes, settings, validation figures, seconds."""
    split, svc, record = replay.split, replay.svc, {}
    item_ids = [str(i) for i in split.item_ids]
    if "mf" in cfg.parts:
        t = time.perf_counter()
        svc.mf = MFModel(item_ids, fit_factors(split.fit, None, split.n_items, cfg.mf), cfg.mf)
        record["mf"] = {"config": asdict(cfg.mf), "seconds": round(time.perf_counter() - t, 1),
                        "fit_sequences": len(split.fit)}
    if "ease" in cfg.parts:
        t = time.perf_counter()
        svc.ease, info = fit_ease(split, cfg.ease, cfg.ease_lams, cfg.encoder.eval_users, cfg.encoder.seed)
        record["ease"] = {**info, "seconds": round(time.perf_counter() - t, 1)}
    if "encoder" in cfg.parts:
        t = time.perf_counter()
        net, curve = fit_encoder(split, item_vectors, cfg.encoder, progress)
        svc.encoder = HistoryEncoder(net, item_ids, {"curve": curve}).attach(svc.index)
        record["encoder"] = {"config": asdict(cfg.encoder), "seconds": round(time.perf_counter() - t, 1),
                             **{k: curve[k] for k in ("best_epoch", "best_valid", "stopped_by", "epoch_seconds")}}
    if "ranking" in cfg.parts:
        t = time.perf_counter()
        svc.ranking, info = fit_ranking(replay, pipeline, cfg.ranking)
        record["ranking"] = {"config": asdict(cfg.ranking), "seconds": round(time.perf_counter() - t, 1), **info}
    return record


def fit_ease(split, cfg: EASEConfig, lams: Sequence[float], eval_users: int | None = 4000,
             seed: int = 0) -> tuple[EASEModel, dict]:
    """EASE on the fit sequences for each of ``lams``, the one with the best validation NDCG@10
    (history excluded, over at most ``eval_users`` shoppers) kept. Returns (model, record)."""
    rows = np.arange(len(split.users))
    if eval_users is not None and eval_users < len(rows):
        rows = np.sort(np.random.default_rng([seed, 59]).choice(rows, eval_users, replace=False))
    item_ids = [str(i) for i in split.item_ids]
    items, gram = covered_gram(split.fit, split.n_items, cfg.max_items)  # once: only the inverse depends on lam
    model, best, trials = None, -np.inf, {}
    for lam in lams:
        c = replace(cfg, lam=float(lam))
        candidate = EASEModel([item_ids[i] for i in items], ease_rows(gram, c.lam, c.neighbours), c)
        trials[str(lam)] = round(ease_ndcg(candidate, items, split, rows), 5)
        if trials[str(lam)] > best:
            model, best = candidate, trials[str(lam)]
    model.info = {"valid_ndcg@10": trials, "items": len(model.rows), "nnz": int(model.weights.nnz)}
    return model, {"config": asdict(model.cfg), **model.info}


def ease_ndcg(model: EASEModel, items: Array, split, rows: Array) -> float:
    """Validation NDCG@10 of ``model`` (rows = the split's item indexes ``items``) alone, history excluded."""
    item_ids = [str(i) for i in split.item_ids]

    def score(batch):
        out = np.full((len(batch), split.n_items), -np.inf, dtype=np.float32)
        for j, v in enumerate(model.user_scores([[item_ids[i] for i in h] for h in batch])):
            if v is not None:
                out[j, items] = v
        return out

    excluded, _ = rank_targets(score, [split.valid_history[r] for r in rows], split.valid_target[rows], 10)
    return float(ndcg_at_k(excluded.ranks, 10))


def encoder_ndcg(net: SequenceNet, split, rows: Array) -> float:
    """Validation NDCG@10 of the encoder alone over all items, history excluded."""
    hist = [split.valid_history[r] for r in rows]
    table = net.item_table().detach()

    def score(batch):
        return user_states(net, batch, table) @ table[1:].numpy().T

    excluded, _ = rank_targets(score, hist, split.valid_target[rows], 10)
    return ndcg_at_k(excluded.ranks, 10)


def fit_encoder(split, item_vectors: Array, cfg: SequenceConfig, progress: bool = False) -> tuple[SequenceNet, dict]:
    """The history encoder on the fit sequences, early-stopped on validation; items no fit
    sequence holds keep no ID embedding (their text projection alone speaks for them)."""
    rng = np.random.default_rng([cfg.seed, 43])
    rows = np.arange(len(split.users))
    if cfg.eval_users is not None and cfg.eval_users < len(rows):
        rows = np.sort(rng.choice(rows, cfg.eval_users, replace=False))
    net, curve = fit_sequence_model(split.fit, split.n_items, cfg, text=item_vectors,
                                    validate=lambda n: encoder_ndcg(n, split, rows), progress=progress)
    if net.item_emb is not None:
        seen = np.zeros(split.n_items + 1, dtype=bool)
        seen[np.concatenate(split.fit) + 1] = True
        with torch.no_grad():
            net.item_emb.weight[torch.from_numpy(~seen)] = 0.0
    return net, curve


def ranking_groups(replay: Replay, pipeline: PipelineConfig, cfg: RankingConfig) -> tuple[Array, Array, Array]:
    """(features (n, F), labels (n,) 0/1, group sizes) of the validation shoppers whose candidates
    hold their target: the pipeline's candidate stage as served, at validation time."""
    split, svc = replay.split, replay.svc
    rng = np.random.default_rng([cfg.seed, 47])
    rows = np.arange(len(split.users))
    if cfg.users is not None and cfg.users < len(rows):
        rows = np.sort(rng.choice(rows, cfg.users, replace=False))
    untrained = replace(pipeline, learned_ranking=False)  # the features of the candidates as the sources fuse them
    feats, labels, groups = [], [], []
    for start in range(0, len(rows), 64):
        batch = rows[start:start + 64]
        profiles = [user_profile(svc.events, svc.index, svc.embedder, str(split.user_ids[split.users[r]]),
                                 untrained.profile, replay.now) for r in batch]
        queries = user_queries(svc, untrained.candidates, profiles)
        for i, (r, profile) in enumerate(zip(batch, profiles)):
            with svc.index.lock, svc.state.lock:
                cand, x = candidates_for(svc, untrained, profile, None, profile.purchased, replay.now, queries[i],
                                         features=True)
            hit = cand.labels == split.valid_target[r]
            if not hit.any() or x is None:
                continue
            rerank_feature(svc, untrained, profile, cand, x)  # only for the groups kept
            neg = np.flatnonzero(~hit)
            # in candidate (fused) order: with the target always first, tied scores would look perfect
            keep = np.sort(np.concatenate([np.flatnonzero(hit),
                                           rng.choice(neg, min(cfg.negatives, len(neg)), replace=False)]))
            feats.append(x[keep])
            labels.append(hit[keep].astype(np.int32))
            groups.append(len(keep))
    if not groups:
        return np.zeros((0, len(NAMES)), np.float32), np.zeros(0, np.int32), np.zeros(0, np.int64)
    return np.vstack(feats), np.concatenate(labels), np.asarray(groups, dtype=np.int64)


def fit_ranking(replay: Replay, pipeline: PipelineConfig, cfg: RankingConfig) -> tuple[RankingModel | None, dict]:
    """A LightGBM LambdaRank model on :func:`ranking_groups`; None when too few groups hold a target.

    The number of rounds is the one with the best NDCG@10 (``evaluation.metrics``) on held-out
    groups, checked every ``check_every`` rounds. (LightGBM's own NDCG counts tied scores as ideal,
    so after round 1 of a near-constant model it looked best and stopped there.)"""
    return fit_ranking_on(*ranking_groups(replay, pipeline, cfg), cfg)


def fit_ranking_on(x: Array, y: Array, groups: Array, cfg: RankingConfig, names: Sequence[str] = NAMES,
                   model=RankingModel):
    """:func:`fit_ranking` on given :func:`ranking_groups` (features (n, F), labels (n,), group sizes);
    ``names`` / ``model``: the feature names and the model class wrapping the booster (the search
    ranking fits the same way: ``evaluation.search_ltr``). Returns ``(model or None, info)``."""
    import lightgbm

    info = {"groups": int(len(groups)), "rows": int(len(y)), "features": list(names)}
    if len(groups) < 20:
        return None, {**info, "skipped": "fewer than 20 validation shoppers with their target among the candidates"}
    rng = np.random.default_rng([cfg.seed, 53])
    held = rng.random(len(groups)) < cfg.holdout
    if not held.any() or held.all():
        held = np.arange(len(groups)) % 5 == 0
    starts = np.concatenate([[0], np.cumsum(groups)])
    rows_of = [np.arange(starts[g], starts[g + 1]) for g in range(len(groups))]
    tr = np.concatenate([rows_of[g] for g in np.flatnonzero(~held)])
    va_rows = np.concatenate([rows_of[g] for g in np.flatnonzero(held)])
    va_bounds = np.cumsum([0, *groups[held]])
    va = [np.arange(a, b) for a, b in zip(va_bounds[:-1], va_bounds[1:])]  # positions within va_rows
    x_va, y_va = x[va_rows], y[va_rows]
    params = {"objective": "lambdarank", "num_leaves": cfg.num_leaves, "learning_rate": cfg.learning_rate,
              "min_data_in_leaf": cfg.min_data_in_leaf, "feature_fraction": cfg.feature_fraction,
              "lambda_l2": cfg.lambda_l2, "seed": cfg.seed, "num_threads": 2, "verbose": -1, "deterministic": True,
              "force_row_wise": True}
    booster = lightgbm.train(params, lightgbm.Dataset(x[tr], y[tr], group=groups[~held], feature_name=list(names)),
                             cfg.rounds)
    curve = {}
    for rounds in range(cfg.check_every, cfg.rounds + 1, cfg.check_every):
        curve[rounds] = held_out_ndcg(booster.predict(x_va, num_iteration=rounds), y_va, va)
    best = max(curve, key=curve.get)
    fused = held_out_ndcg(x_va[:, list(names).index("fused")], y_va, va)
    if cfg.require_gain and curve[best] <= fused:  # the service then ranks by the fusion, which held out better
        return None, {**info, "skipped": f"held-out NDCG@10 {curve[best]:.4f} <= the fusion's {fused:.4f}",
                      "holdout_ndcg10": {str(k): round(v, 5) for k, v in curve.items()}}
    booster = lightgbm.train(params, lightgbm.Dataset(x, y, group=groups, feature_name=list(names)), best)
    importance = dict(zip(names, booster.feature_importance("gain").round(1).tolist()))
    info.update(rounds=best, holdout_ndcg10={str(k): round(v, 5) for k, v in curve.items()},
                holdout_ndcg10_fused=round(fused, 5), importance_gain=importance)
    return model(booster, info), info


def held_out_ndcg(scores: Array, labels: Array, groups: list[Array]) -> float:
    """NDCG@10 of the target within each held-out group, ranked by ``scores`` (ties: earlier row,
    i.e. the fused order the groups' rows keep)."""
    ranks = []
    for rows in groups:
        order = np.argsort(-scores[rows], kind="stable")
        ranks.append(int(np.flatnonzero(labels[rows][order])[0]))
    return ndcg_at_k(np.asarray(ranks), 10)
