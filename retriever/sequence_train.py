"""Training loop of ``retriever.sequence.SequenceNet`` (never imported by the server).

Each epoch visits every fit sequence once (shuffled, bucketed by length so a batch is cut to its
longest sequence): input = s[:-1], targets = s[1:] (last ``max_len`` steps, left-padded),
cross-entropy at every position (full softmax, or sampled softmax against ``cfg.negatives``
uniform negatives shared by the batch), Adam(lr, betas 0.9/0.98). Every ``eval_every`` epochs the
caller's ``validate(net) -> float`` (e.g. validation NDCG@10 from ``evaluation.metrics``) decides
early stopping: after ``patience`` checks without improvement the best weights are restored.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .sequence import SequenceConfig, SequenceNet, left_pad

Array = np.ndarray
Validate = Callable[[SequenceNet], float]


def length_batches(lengths: Array, batch_size: int, rng: np.random.Generator, pool: int = 50) -> list[Array]:
    """Shuffled mini-batches of row indexes, similar lengths together (bucketing).

    Rows are shuffled, cut into pools of ``pool`` batches, sorted by length inside each pool and
    batched; the batch order is shuffled again. Each row appears once. lengths: (n,) int.
    """
    perm = rng.permutation(len(lengths))
    batches = []
    for start in range(0, len(perm), batch_size * pool):
        chunk = perm[start:start + batch_size * pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def fit_sequence_model(sequences: Sequence[Array], n_items: int, cfg: SequenceConfig, *, text: Array | None = None,
                       validate: Validate | None = None, progress: bool = False) -> tuple[SequenceNet, dict]:
    """Train a :class:`SequenceNet` on ``sequences`` (int64 item indexes, oldest first). Returns the
    network (best validated weights, eval mode) and the training record (curve, timings, stop)."""
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    net = SequenceNet(n_items, cfg, text)
    train = [s for s in sequences if len(s) >= 2]
    tokens = torch.from_numpy(left_pad([s[:-1] for s in train], cfg.max_len))
    targets = torch.from_numpy(left_pad([s[1:] for s in train], cfg.max_len))
    lengths = (tokens != 0).sum(dim=1).numpy()
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, betas=(0.9, 0.98), weight_decay=cfg.weight_decay)
    record: dict = {"curve": [], "epoch_seconds": [], "stopped_by": "max_epochs", "best_epoch": 0}
    best, best_state, bad = -np.inf, copy.deepcopy(net.state_dict()), 0
    started = time.perf_counter()
    bar = tqdm(range(1, cfg.max_epochs + 1), desc=f"sequence ({cfg.item_input})", disable=not progress, leave=False)
    for epoch in bar:
        t0, total = time.perf_counter(), 0.0
        net.train()
        for idx in length_batches(lengths, cfg.batch_size, rng):
            width = int(lengths[idx].max())
            negatives = None if not cfg.negatives else \
                torch.from_numpy(rng.integers(1, n_items + 1, size=cfg.negatives))
            loss = net(tokens[idx, -width:], targets[idx, -width:], negatives)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        record["epoch_seconds"].append(round(time.perf_counter() - t0, 2))
        point = {"epoch": epoch, "loss": total / max(len(train), 1)}
        out_of_time = cfg.max_minutes is not None and time.perf_counter() - started > 60 * cfg.max_minutes
        if validate is not None and (epoch % cfg.eval_every == 0 or epoch == cfg.max_epochs or out_of_time):
            point["valid"] = float(validate(net))
            if point["valid"] > best:
                best, best_state, bad, record["best_epoch"] = point["valid"], copy.deepcopy(net.state_dict()), 0, epoch
            else:
                bad += 1
            bar.set_postfix(loss=f"{point['loss']:.3f}", valid=f"{point['valid']:.4f}")
            if bad >= cfg.patience:
                record["curve"].append(point)
                record["stopped_by"] = "early_stopping"
                break
        record["curve"].append(point)
        if out_of_time:
            record["stopped_by"] = "max_minutes"
            break
    if validate is not None:
        net.load_state_dict(best_state)
        record["best_valid"] = best
    else:
        record["best_epoch"] = len(record["epoch_seconds"])
    record["train_seconds"] = round(time.perf_counter() - started, 1)
    net.eval()
    return net, record
