"""The cross-encoder's training loop (``semrec train-ranker`` runs it through
``evaluation.training.train_ranker``, which splits the data, builds the groups and validates).

Model: all-MiniLM-L6-v2 (the packaged weights) as a cross-encoder, :class:`ranker.network.CrossEncoderNet`
(the encoder reads ``[CLS] context [SEP] item [SEP]``; its head starts from the cosine of the two
segments' mean states, see there), trained with a plain torch loop: less overhead than the
sentence-transformers ``CrossEncoder`` trainer on 2 CPU cores, and it reuses cached token ids.
A ``CrossEncoder(minilm_path(), num_labels=1)`` head on the untrained [CLS] pooler barely learned
in the few thousand groups this machine can afford (logits stayed flat over 15 steps). Only the
first ``num_layers`` encoder layers are kept and the word-embedding table is frozen: both cut CPU
time, the second also keeps the 11.7M-parameter table out of the optimiser.

Loss: listwise softmax cross-entropy over each group (positive + negatives, see
:mod:`ranker.pairs`); AdamW with linear warm-up and decay. Every ``eval_every`` steps the caller's
``validate`` scores the validation lists and the loop records validation loss and NDCG@10;
training stops after ``patience`` checks without improvement or at ``max_minutes``, and the best
checkpoint is kept.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from .network import EncoderConfig, PairEncoder, score_pairs
from .pairs import Groups, PairConfig

Array = np.ndarray


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides the trained model. Defaults: the documented Beauty run on 2 CPU cores."""

    pairs: PairConfig = field(default_factory=PairConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    base_model: str = ""              # Hugging Face directory; "" = the packaged all-MiniLM-L6-v2
    num_layers: int = 3               # encoder layers kept (MiniLM has 6)
    freeze_embeddings: bool = True    # word-embedding table frozen (position/type embeddings train)
    lr: float = 5e-5                  # encoder
    head_lr: float = 1e-3             # scoring head (fresh weights learn faster)
    weight_decay: float = 0.01
    warmup: float = 0.1               # share of steps with linearly rising learning rate
    batch_groups: int = 4             # groups per optimiser step (x group_size pairs)
    epochs: int = 1
    max_minutes: float = 30.0         # wall-clock budget of the training loop
    eval_every: int = 50              # steps between validation checks
    patience: int = 3                 # checks without NDCG@10 gain before stopping
    val_users: int = 2000             # validation users sampled (seeded) before keeping lists with a hit
    val_candidates: int = 20          # retrieved candidates per validation list
    max_val_groups: int = 40          # validation lists scored per check
    int8_tolerance: float = 0.02      # int8 kept if its val NDCG@10 >= (1 - tol) * fp32's
    split_seed: int = 0               # leave-one-out split seed (= evaluation's)
    seed: int = 0
    threads: int = 2


# ----------------------------------------------------------------------------- list metrics
def list_ranks(scores: Array, positive: Array) -> Array:
    """0-based rank of column ``positive[i]`` in row i of ``scores`` (n, m); ties -> earlier column first."""
    n, m = scores.shape
    s_t = scores[np.arange(n), positive][:, None]
    cols = np.arange(m)[None, :]
    return ((scores > s_t) | ((scores == s_t) & (cols < positive[:, None]))).sum(axis=1).astype(np.int64)


def list_loss(scores: Array, positive: Array) -> float:
    """Mean listwise softmax cross-entropy of the positives, in nats."""
    s = scores.astype(np.float64)
    s = s - s.max(axis=1, keepdims=True)
    logz = np.log(np.exp(s).sum(axis=1))
    return float(np.mean(logz - s[np.arange(len(s)), positive]))


def score_groups(net, encoder: PairEncoder, groups: Groups, texts: list[str], batch_size: int = 64,
                 device: str = "cpu") -> Array:
    """(n, m) float32 logits of every candidate of every group (padding -1 -> -inf)."""
    n, m = groups.items.shape
    valid = groups.items >= 0
    rows, cols = np.nonzero(valid)
    flat = score_pairs(net, encoder, [groups.contexts[r] for r in rows],
                       [texts[i] for i in groups.items[rows, cols]], batch_size, device)
    out = np.full((n, m), -np.inf, dtype=np.float32)
    out[rows, cols] = flat
    return out


# ----------------------------------------------------------------------------- training
def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


Validate = Callable[[torch.nn.Module], dict]  # net -> {"loss", "ndcg@10", ...} on the validation lists


def fit(net, encoder: PairEncoder, train: Groups, validate: Validate, texts: list[str], cfg: TrainConfig,
        progress: bool = True) -> dict:
    """Train ``net`` in place (best checkpoint restored); ``validate(net)`` scores the validation
    lists (early stopping on its "ndcg@10"). Returns the training record."""
    device = _device()
    net.to(device)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng([cfg.seed, 31])
    if cfg.freeze_embeddings:
        net.encoder.embeddings.word_embeddings.weight.requires_grad_(False)
    params = [p for p in net.parameters() if p.requires_grad]
    head = {id(p) for p in net.head_parameters()}
    opt = torch.optim.AdamW([{"params": [p for p in params if id(p) not in head], "lr": cfg.lr},
                             {"params": net.head_parameters(), "lr": cfg.head_lr, "weight_decay": 0.0}],
                            weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(train) / cfg.batch_groups)
    total = max(1, steps_per_epoch * cfg.epochs)
    warm = max(1, int(cfg.warmup * total))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (total - s) / max(1, total - warm))))
    g = train.items.shape[1]
    record: dict = {"curve": [], "steps_planned": total, "stopped": "completed"}
    first = validate(net)
    record["curve"].append({"step": 0, "train_loss": None, **first})
    best, best_state, bad = first["ndcg@10"], copy.deepcopy(net.state_dict()), 0
    best_step, step, pairs_seen, started = 0, 0, 0, time.perf_counter()
    train_seconds, running = 0.0, []
    bar = tqdm(total=total, desc="train-ranker", disable=not progress)
    net.train()
    stop = False
    for _epoch in range(cfg.epochs):
        for idx in np.array_split(rng.permutation(len(train)), steps_per_epoch):
            t0 = time.perf_counter()
            contexts = [train.contexts[i] for i in idx for _ in range(g)]
            items = [texts[j] for j in train.items[idx].ravel()]
            feats = {k: v.to(device) for k, v in encoder.batch(contexts, items).items()}
            logits = net(**feats).view(len(idx), g)
            loss = torch.nn.functional.cross_entropy(logits, torch.as_tensor(train.positive[idx], device=device))
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            step += 1
            pairs_seen += len(contexts)
            running.append(loss.item())
            train_seconds += time.perf_counter() - t0
            bar.update(1)
            minutes = (time.perf_counter() - started) / 60
            if step % cfg.eval_every == 0 or step == total or minutes >= cfg.max_minutes:
                v = validate(net)
                record["curve"].append({"step": step, "train_loss": float(np.mean(running)), **v})
                running = []
                bar.set_postfix(val_loss=f"{v['loss']:.3f}", ndcg=f"{v['ndcg@10']:.4f}")
                if v["ndcg@10"] > best:
                    best, best_state, bad, best_step = v["ndcg@10"], copy.deepcopy(net.state_dict()), 0, step
                else:
                    bad += 1
                if step == total:
                    pass  # all planned steps ran: "completed"
                elif bad >= cfg.patience:
                    record["stopped"], stop = f"early stop: {bad} checks without NDCG@10 gain", True
                elif minutes >= cfg.max_minutes:
                    record["stopped"], stop = f"time budget {cfg.max_minutes} min", True
            if stop:
                break
        if stop:
            break
    bar.close()
    net.load_state_dict(best_state)
    net.eval()
    record.update(steps=step, best_step=best_step, pairs_seen=pairs_seen, best_val_ndcg=best,
                  train_seconds=round(train_seconds, 1), wall_seconds=round(time.perf_counter() - started, 1),
                  train_pairs_per_s=round(pairs_seen / max(train_seconds, 1e-9), 2), device=device)
    return record
