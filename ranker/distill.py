"""Distillation of a split-layer reranker (:mod:`ranker.split`): the training loop.

``python -m evaluation.distill`` runs it (the teacher, the data split, the lists and validation
live there); this module only knows lists, teacher logits and the student.

Student: :class:`ranker.split.SplitNet` initialised with the teacher's weights (same layers, same
head); only who attends to whom changes, so training starts near the teacher. By default
(``train_lower`` False) the student's lower layers and embeddings stay the teacher's: their states
for every context and item are computed once (:class:`LowerCache`), and only the joint layers and
the head train -- ~50x less work per step, which is what 2 shared cores allow.

Loss per list: ``tau^2 * KL(softmax(teacher / tau) || softmax(student / tau))`` (the teacher's
logits, computed once before training) plus ``hard_weight`` x the listwise cross-entropy of the
observed next item on the training groups (as :mod:`ranker.train`). AdamW, linear warm-up and
decay; every ``eval_every`` steps the caller's ``metrics`` rates the validation lists; the best
checkpoint is kept.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .network import PairEncoder
from .pairs import Groups
from .split import SplitNet, pad_batch, stack_states

Array = np.ndarray
Metrics = Callable[[Array, Array], dict]  # (scores (n, m), positive column (n,)) -> {"loss", "ndcg@10", ...}


@dataclass(frozen=True)
class DistillConfig:
    joint_layers: int = 1          # top layers run per pair (the rest: context and item apart)
    query: str = "tokens"          # "tokens": every item token joins; "pooled": one (mean) token per item
    train_lower: bool = False      # False: lower layers stay the teacher's, their states are computed once
    lists: int = 800               # extra retrieved lists of training histories, teacher-labelled
    teacher_variant: str = "int8"  # the teacher's logits: int8 is its served variant and ~3x faster
    list_size: int = 20
    tau: float = 1.0               # distillation temperature
    hard_weight: float = 0.5       # weight of the observed-next-item cross-entropy (training groups)
    lr: float = 1e-4
    head_lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: float = 0.1
    batch_lists: int = 8
    epochs: int = 2
    max_minutes: float = 15.0
    eval_every: int = 100
    patience: int = 4
    val_groups: int = 200          # validation lists scored per check (teacher trained with 40)
    int8_tolerance: float = 0.01
    seed: int = 0
    threads: int = 2


def split_group_scores(net: SplitNet, encoder: PairEncoder, groups: Groups, texts: list[str], batch: int = 16,
                       grad: bool = False) -> torch.Tensor:
    """(n, m) logits of every candidate of every group (padding -1 -> -inf), contexts encoded once per group."""
    n, m = groups.items.shape
    out = []
    for start in range(0, n, batch):
        rows = range(start, min(n, start + batch))
        ctx_ids, ctx_mask = pad_batch([[encoder.cls, *encoder.context_ids(groups.contexts[r]), encoder.sep]
                                       for r in rows], encoder.pad)
        items = groups.items[list(rows)]
        r_idx, c_idx = np.nonzero(items >= 0)
        toks = [[*t, encoder.sep] for t in encoder.item_ids([texts[i] for i in items[r_idx, c_idx]])]
        item_ids, item_mask = pad_batch(toks, encoder.pad)
        with torch.set_grad_enabled(grad):
            s = net(ctx_ids, ctx_mask, item_ids, item_mask, torch.as_tensor(r_idx))
        full = torch.full((len(rows), m), -torch.inf)
        full[torch.as_tensor(r_idx), torch.as_tensor(c_idx)] = s
        out.append(full)
    return torch.cat(out) if out else torch.zeros((0, m))


class LowerCache:
    """States after the (frozen) lower layers of every context and item the lists hold, computed once:
    training then runs only the joint layers and the head, ~50x less work per step for 1 of 3 layers."""

    def __init__(self, net: SplitNet, encoder: PairEncoder, texts: list[str]):
        self.net, self.encoder, self.texts = net, encoder, texts
        self.ctx: dict[str, np.ndarray] = {}
        self.items: dict[int, np.ndarray] = {}

    @torch.no_grad()
    def fill(self, groups: Groups, batch: int = 128) -> None:
        enc, was = self.encoder, self.net.training
        self.net.eval()
        todo = [c for c in dict.fromkeys(groups.contexts) if c not in self.ctx]
        for start in range(0, len(todo), batch):
            part = todo[start:start + batch]
            ids, mask = pad_batch([[enc.cls, *enc.context_ids(c), enc.sep] for c in part], enc.pad)
            h = self.net.context_lower(ids, mask).numpy()
            self.ctx.update((c, h[r, : int(mask[r].sum())]) for r, c in enumerate(part))
        items = [int(i) for i in np.unique(groups.items) if i >= 0 and int(i) not in self.items]
        for start in range(0, len(items), batch):
            part = items[start:start + batch]
            toks = [[*t, enc.sep] for t in enc.item_ids([self.texts[i] for i in part])]
            ids, mask = pad_batch(toks, enc.pad)
            store = self.net.item_store(self.net.encode_items(ids, mask), mask).numpy()
            self.items.update((i, store[r, : min(len(toks[r]), store.shape[1])]) for r, i in enumerate(part))
        self.net.train(was)

    def scores(self, groups: Groups, grad: bool = False) -> torch.Tensor:
        """(n, m) logits of every candidate (padding -inf), from the cached lower states."""
        n, m = groups.items.shape
        h, cmask = stack_states([self.ctx[c] for c in groups.contexts])
        r_idx, c_idx = np.nonzero(groups.items >= 0)
        store, imask = stack_states([self.items[int(i)] for i in groups.items[r_idx, c_idx]])
        with torch.set_grad_enabled(grad):
            ctx = self.net.context_upper(h, cmask)
            s = self.net.score_stored(ctx, store, imask, torch.as_tensor(r_idx))
        full = torch.full((n, m), -torch.inf)
        full[torch.as_tensor(r_idx), torch.as_tensor(c_idx)] = s
        return full


@torch.no_grad()
def group_scores(net: SplitNet, encoder: PairEncoder, groups: Groups, texts: list[str],
                 cache: LowerCache | None = None) -> Array:
    """(n, m) float32 logits of every candidate of every group in eval mode (padding -inf); from the
    cached lower states when ``cache`` holds them."""
    was = net.training
    net.eval()
    if cache is None:
        s = split_group_scores(net, encoder, groups, texts, batch=32).numpy()
    else:
        s = np.concatenate([cache.scores(groups.subset(np.arange(i, min(i + 64, len(groups))))).numpy()
                            for i in range(0, len(groups), 64)] or [np.zeros((0, groups.items.shape[1]))])
    net.train(was)
    return s.astype(np.float32)


def kl_loss(student: torch.Tensor, teacher: torch.Tensor, tau: float) -> torch.Tensor:
    """Mean over rows of tau^2 KL(softmax(teacher/tau) || softmax(student/tau)); -inf entries are padding."""
    live = torch.isfinite(teacher)
    t = torch.log_softmax(teacher.masked_fill(~live, -1e9) / tau, dim=1)
    s = torch.log_softmax(student.masked_fill(~live, -1e9) / tau, dim=1)
    return (tau ** 2) * (t.exp() * (t - s)).masked_fill(~live, 0.0).sum(1).mean()


def fit(net: SplitNet, encoder: PairEncoder, train: Groups, soft: Array, valid: Groups, texts: list[str],
        cfg: DistillConfig, metrics: Metrics) -> dict:
    """Train ``net`` in place on ``train`` lists (positive column, -1 = none) with teacher logits ``soft``
    (same shape as ``train.items``, -inf padding). ``metrics(scores, valid.positive)`` rates the
    validation lists (early stopping on its "ndcg@10"); the best checkpoint is restored. Returns the
    training record."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng([cfg.seed, 71])
    net.encoder.embeddings.word_embeddings.weight.requires_grad_(False)
    cache = None
    if not cfg.train_lower:
        for p in [*net.encoder.embeddings.parameters(), *net.layers[: net.lower].parameters()]:
            p.requires_grad_(False)
        cache = LowerCache(net, encoder, texts)
        t0 = time.perf_counter()
        cache.fill(train)
        cache.fill(valid)
        print(f"lower-layer states of {len(cache.ctx)} contexts and {len(cache.items)} items in "
              f"{time.perf_counter() - t0:.0f} s", flush=True)

    def scores(part: Groups, grad: bool) -> torch.Tensor:
        if cache is not None:
            return cache.scores(part, grad)
        return split_group_scores(net, encoder, part, texts, batch=len(part), grad=grad)

    head = {id(p) for p in net.head_parameters()}
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW([{"params": [p for p in params if id(p) not in head], "lr": cfg.lr},
                             {"params": net.head_parameters(), "lr": cfg.head_lr, "weight_decay": 0.0}],
                            weight_decay=cfg.weight_decay)
    per_epoch = math.ceil(len(train) / cfg.batch_lists)
    total = max(1, per_epoch * cfg.epochs)
    warm = max(1, int(cfg.warmup * total))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (total - s) / max(1, total - warm))))
    first = metrics(group_scores(net, encoder, valid, texts, cache), valid.positive)
    record: dict = {"curve": [{"step": 0, "train_loss": None, **first}], "steps_planned": total, "stopped": "completed"}
    best, best_state, bad, best_step, step, running = first["ndcg@10"], copy.deepcopy(net.state_dict()), 0, 0, 0, []
    started, train_s, pairs_seen = time.perf_counter(), 0.0, 0
    net.train()
    for _ in range(cfg.epochs):
        for idx in np.array_split(rng.permutation(len(train)), per_epoch):
            t0 = time.perf_counter()
            part = train.subset(idx)
            s = scores(part, True)
            loss = kl_loss(s, torch.as_tensor(soft[idx]), cfg.tau)
            hard = part.positive >= 0
            if hard.any() and cfg.hard_weight:
                loss = loss + cfg.hard_weight * torch.nn.functional.cross_entropy(
                    s[torch.as_tensor(hard)], torch.as_tensor(part.positive[hard]))
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            step, pairs_seen = step + 1, pairs_seen + int((part.items >= 0).sum())
            running.append(loss.item())
            train_s += time.perf_counter() - t0
            minutes = (time.perf_counter() - started) / 60
            if step % cfg.eval_every == 0 or step == total or minutes >= cfg.max_minutes:
                v = metrics(group_scores(net, encoder, valid, texts, cache), valid.positive)
                record["curve"].append({"step": step, "train_loss": float(np.mean(running)), **v})
                print(f"step {step}/{total}: train loss {np.mean(running):.4f}, val NDCG@10 {v['ndcg@10']:.4f}",
                      flush=True)
                running = []
                if v["ndcg@10"] > best:
                    best, best_state, bad, best_step = v["ndcg@10"], copy.deepcopy(net.state_dict()), 0, step
                else:
                    bad += 1
                if step < total and bad >= cfg.patience:
                    record["stopped"] = f"early stop: {bad} checks without NDCG@10 gain"
                elif step < total and minutes >= cfg.max_minutes:
                    record["stopped"] = f"time budget {cfg.max_minutes} min"
                if record["stopped"] != "completed":
                    break
        if record["stopped"] != "completed":
            break
    net.load_state_dict(best_state)
    net.eval()
    record.update(steps=step, best_step=best_step, pairs_seen=pairs_seen, best_val_ndcg=best,
                  train_seconds=round(train_s, 1), wall_seconds=round(time.perf_counter() - started, 1),
                  train_pairs_per_s=round(pairs_seen / max(train_s, 1e-9), 2), device="cpu")
    return record
