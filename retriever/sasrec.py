"""SASRec (Kang & McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018) in plain torch.

Architecture as in the paper and its reference port (pmixer/SASRec.pytorch): item embedding scaled
by sqrt(d) + learned absolute position embedding, dropout, then ``n_blocks`` of
[LayerNorm -> causal self-attention (residual from the normed query) -> LayerNorm -> point-wise
feed-forward d->d->d with ReLU and dropout (residual)], a final LayerNorm. Padding positions (item
0) are zeroed after every block. The hidden state at position t scores the item at t+1 by a dot
product with the shared item embedding table.

One deliberate difference from the reference code: padding positions are masked as attention keys
(the reference lets queries attend to the zeroed padding). With position embeddings aligned to the
right end, a left-padded batch can then be cut to its longest sequence without changing any
output, and mini-batches are bucketed by length (``length_batches``). Beauty's sequences are short
(mean ~5 inputs of the 50 slots), so this makes CPU training several times faster.

Training: each epoch visits every fit sequence once (shuffled); input = s[:-1], positives = s[1:]
(last ``max_len`` steps, left-padded); one uniformly sampled negative per position (resampled if
it equals that position's positive; collisions with other items of the sequence are not checked,
p ~ len/n_items); binary cross-entropy on positives vs negatives; Adam(lr, betas 0.9/0.98).

Early stopping: every ``eval_every`` epochs, NDCG@10 on the validation histories/targets with a
full ranking over all items (history items excluded); stop after ``patience`` checks without
improvement and restore the best weights.

Defaults = the paper's setting for sparse Amazon data (Beauty): max_len 50, hidden 50, 2 blocks,
1 head, dropout 0.5, lr 1e-3, batch 128, up to 200 epochs. Runs on CPU with ``threads`` torch
threads (default 1, see ``SASRecConfig``). Measured on Beauty (20k fit sequences, 1 thread, a
2-core box shared with other jobs, load average 6-16): mean 7.4 s per epoch (about 5 s when
the box was quieter); a validation check over all 22k users adds 15-30 s. The full run
early-stopped after 85 epochs (best validation NDCG@10 0.0212 at epoch 60) in 15 minutes.
``SASRec.epoch_seconds`` records each run. Also as in the reference code: Xavier-normal init.

Item indexes are 0-based outside this module; inside, index i is token i + 1 and token 0 pads.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Self

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from retriever.collaborative import Recommender, exclude_items, target_ranks

Array = np.ndarray


@dataclass(frozen=True)
class SASRecConfig:
    max_len: int = 50
    hidden: int = 50
    n_blocks: int = 2
    n_heads: int = 1
    dropout: float = 0.5
    lr: float = 1e-3
    batch_size: int = 128
    max_epochs: int = 200
    eval_every: int = 5  # epochs between validation checks
    patience: int = 5  # checks without improvement before stopping
    eval_users: int | None = None  # validate on this many (seeded) users; None = all
    max_minutes: float | None = None  # stop training after this much wall time (checked per epoch)
    seed: int = 0
    # torch intra-op threads. 1, not 2: on the shared 2-core dev box 2 threads made an epoch 6-20x
    # slower (OpenMP spinning under oversubscription, tiny ops); 1 thread: ~5 s/epoch on Beauty.
    threads: int = 1


class _Block(nn.Module):
    def __init__(self, d: int, heads: int, dropout: float):
        super().__init__()
        self.attn_norm = nn.LayerNorm(d, eps=1e-8)
        self.attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.ffn_norm = nn.LayerNorm(d, eps=1e-8)
        self.ffn = nn.Sequential(
            nn.Linear(d, d), nn.Dropout(dropout), nn.ReLU(), nn.Linear(d, d), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        q = self.attn_norm(x)
        a, _ = self.attn(q, x, x, attn_mask=mask, need_weights=False)
        x = self.ffn_norm(q + a)
        x = x + self.ffn(x)
        return x * keep


class SASRecNet(nn.Module):
    """The network. ``encode`` maps (B, L) int64 tokens (0 = pad, left-padded) to (B, L, d)."""

    def __init__(self, n_items: int, cfg: SASRecConfig):
        super().__init__()
        d = cfg.hidden
        self.scale = math.sqrt(d)
        self.n_heads = cfg.n_heads
        self.item_emb = nn.Embedding(n_items + 1, d, padding_idx=0)
        self.pos_emb = nn.Embedding(cfg.max_len, d)
        self.emb_dropout = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList([_Block(d, cfg.n_heads, cfg.dropout) for _ in range(cfg.n_blocks)])
        self.last_norm = nn.LayerNorm(d, eps=1e-8)
        causal = torch.triu(torch.ones(cfg.max_len, cfg.max_len, dtype=torch.bool), diagonal=1)
        self.register_buffer("causal", causal, persistent=False)
        # as the reference code: Xavier-normal init of every matrix, embeddings included. (torch's
        # default N(0, 1) embeddings times sqrt(d) saturate the logits; training then stalls at
        # popularity level, measured on Beauty.)
        for p in self.parameters():
            if p.dim() >= 2:
                nn.init.xavier_normal_(p)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: (B, L') with L' <= max_len, left-padded; position embeddings are right-aligned,
        so cutting leading all-pad columns does not change the result."""
        length = tokens.shape[1]
        max_len = self.pos_emb.num_embeddings
        x = self.item_emb(tokens) * self.scale + self.pos_emb.weight[max_len - length :]
        x = self.emb_dropout(x)
        pad = tokens == 0
        keep = (~pad).unsqueeze(-1).to(x.dtype)
        x = x * keep
        # causal + key padding; every position may attend to itself so no row is fully masked
        mask = self.causal[:length, :length] | pad[:, None, :]
        mask = mask & ~torch.eye(length, dtype=torch.bool)
        mask = mask.repeat_interleave(self.n_heads, dim=0)  # (B * heads, L', L')
        for block in self.blocks:
            x = block(x, mask, keep)
        return self.last_norm(x)

    def forward(self, tokens: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        """BCE loss over non-pad positions. tokens/pos/neg: (B, L) int64."""
        h = self.encode(tokens)
        pos_logit = (h * self.item_emb(pos)).sum(-1)
        neg_logit = (h * self.item_emb(neg)).sum(-1)
        mask = pos != 0
        loss = nn.functional.binary_cross_entropy_with_logits(
            pos_logit[mask], torch.ones_like(pos_logit[mask])
        ) + nn.functional.binary_cross_entropy_with_logits(neg_logit[mask], torch.zeros_like(neg_logit[mask]))
        return loss

    def last_state(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, d) hidden state at the last position."""
        return self.encode(tokens)[:, -1, :]


def left_pad(sequences: Sequence[Array], length: int, offset: int = 1) -> Array:
    """(n, length) int64: the last ``length`` items of each sequence plus ``offset``, left-padded with 0."""
    out = np.zeros((len(sequences), length), dtype=np.int64)
    for r, s in enumerate(sequences):
        s = np.asarray(s[-length:], dtype=np.int64) if length else s[:0]
        if len(s):
            out[r, length - len(s) :] = s + offset
    return out


def length_batches(lengths: Array, batch_size: int, rng: np.random.Generator, pool: int = 50) -> list[torch.Tensor]:
    """Shuffled mini-batches of row indexes, similar lengths together (bucketing).

    Rows are shuffled, cut into pools of ``pool`` batches, sorted by length inside each pool and
    batched; the batch order is shuffled again. Each row appears once. lengths: (n,) int.
    """
    perm = rng.permutation(len(lengths))
    batches = []
    for start in range(0, len(perm), batch_size * pool):
        chunk = perm[start : start + batch_size * pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [torch.from_numpy(chunk[i : i + batch_size]) for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


class SASRec(Recommender):
    """SASRec behind the ``Recommender`` interface. ``history`` records per-check validation NDCG@10."""

    name = "sasrec"

    def __init__(self, config: SASRecConfig | None = None, progress: bool = False, **overrides: object):
        base = config or SASRecConfig()
        self.config = SASRecConfig(**{**asdict(base), **overrides})
        self.progress = progress
        self.net: SASRecNet | None = None
        self.epoch_seconds: list[float] = []
        self.history: list[dict[str, float]] = []
        self.best_epoch = 0
        self.stopped_by = ""

    def fit(
        self,
        sequences: Sequence[Array],
        n_items: int,
        valid_histories: Sequence[Array] | None = None,
        valid_targets: Array | None = None,
    ) -> Self:
        """Train on ``sequences``; early-stop on (valid_histories, valid_targets) when given."""
        cfg = self.config
        torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        self._fit_popularity(sequences, n_items)
        net = SASRecNet(n_items, cfg)
        self.net = net
        train = [s for s in sequences if len(s) >= 2]
        tokens = torch.from_numpy(left_pad([s[:-1] for s in train], cfg.max_len))
        pos = torch.from_numpy(left_pad([s[1:] for s in train], cfg.max_len))
        lengths = (tokens != 0).sum(dim=1).numpy()
        opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, betas=(0.9, 0.98))
        if valid_histories is not None and cfg.eval_users is not None and cfg.eval_users < len(valid_histories):
            pick = np.sort(rng.choice(len(valid_histories), cfg.eval_users, replace=False))
            valid_histories = [valid_histories[i] for i in pick]
            valid_targets = np.asarray(valid_targets)[pick]
        best, best_state, bad = -1.0, copy.deepcopy(net.state_dict()), 0
        bar = tqdm(range(1, cfg.max_epochs + 1), desc="sasrec", disable=not self.progress, leave=False)
        started = time.perf_counter()
        self.stopped_by = "max_epochs"
        for epoch in bar:
            t0 = time.perf_counter()
            net.train()
            neg = torch.from_numpy(rng.integers(1, n_items + 1, size=pos.shape))
            clash = neg == pos
            while clash.any():
                neg[clash] = torch.from_numpy(rng.integers(1, n_items + 1, size=int(clash.sum())))
                clash = neg == pos
            total = 0.0
            for idx in length_batches(lengths, cfg.batch_size, rng):
                width = int(lengths[idx].max())
                loss = net(tokens[idx, -width:], pos[idx, -width:], neg[idx, -width:])
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
            self.epoch_seconds.append(time.perf_counter() - t0)
            record = {"epoch": epoch, "loss": total / max(len(train), 1), "seconds": self.epoch_seconds[-1]}
            out_of_time = cfg.max_minutes is not None and time.perf_counter() - started > 60 * cfg.max_minutes
            last = epoch == cfg.max_epochs or out_of_time
            if valid_histories is not None and (epoch % cfg.eval_every == 0 or last):
                ndcg = self.validation_ndcg(valid_histories, np.asarray(valid_targets))
                record["ndcg@10"] = ndcg
                if ndcg > best:
                    best, best_state, bad, self.best_epoch = ndcg, copy.deepcopy(net.state_dict()), 0, epoch
                else:
                    bad += 1
                self.history.append(record)
                bar.set_postfix(loss=f"{record['loss']:.4f}", ndcg=f"{ndcg:.4f}", best=f"{best:.4f}")
                if bad >= cfg.patience:
                    self.stopped_by = "early_stopping"
                    break
            else:
                self.history.append(record)
                bar.set_postfix(loss=f"{record['loss']:.4f}")
            if out_of_time:
                self.stopped_by = "max_minutes"
                break
        if valid_histories is not None:
            net.load_state_dict(best_state)
        else:
            self.best_epoch = len(self.epoch_seconds)
        net.eval()
        return self

    def validation_ndcg(self, histories: Sequence[Array], targets: Array, batch_size: int = 2048) -> float:
        """Mean NDCG@10 over all items, history excluded (one target per history)."""
        gains = []
        for start in range(0, len(histories), batch_size):
            batch = histories[start : start + batch_size]
            s = exclude_items(self.score(batch), batch)
            r = target_ranks(s, targets[start : start + batch_size])
            gains.append(np.where((r >= 0) & (r < 10), 1.0 / np.log2(np.maximum(r, 0) + 2.0), 0.0))
        return float(np.concatenate(gains).mean()) if gains else 0.0

    @torch.no_grad()
    def score(self, histories: Sequence[Array]) -> Array:
        if self.net is None:
            raise RuntimeError("SASRec.score before fit")
        was_training = self.net.training
        self.net.eval()
        width = max(1, min(self.config.max_len, max((len(h) for h in histories), default=1)))
        tokens = torch.from_numpy(left_pad(histories, width))
        h = self.net.last_state(tokens)
        s = (h @ self.net.item_emb.weight[1:].T).numpy().astype(np.float32)
        self.net.train(was_training)
        return self._empty_to_popularity(s, histories)
