"""A self-attentive sequence model over a shopper's history (SASRec, Kang & McAuley, ICDM 2018),
trained with softmax cross-entropy (full, or sampled over ``negatives``), in plain torch. One module serves two systems:

* the **SASRec baseline**: item embeddings are ID embeddings (``item_input="id"``);
* semrec's **history encoder**: an item's embedding is a projection of its text vector, plus an ID
  embedding for items seen in training (``item_input="text+id"``; ``"text"`` for none), so an item
  upserted a second ago has an embedding from its text alone and is retrievable at once.

Architecture (the reference port pmixer/SASRec.pytorch): item embedding scaled by sqrt(d) +
learned absolute position embedding (right-aligned), dropout, ``n_blocks`` of [LayerNorm ->
causal self-attention (residual from the normed query) -> LayerNorm -> point-wise feed-forward
with dropout (residual)], a final LayerNorm; padding zeroed after every block and masked as a key,
so a left-padded batch can be cut to its longest sequence without changing any output. The state
at position t scores every item by a dot product with the (shared) item embedding table.

Loss: cross-entropy of the next item at every position, over all items or (default) sampled
softmax against 1024 uniform negatives (with one sampled negative and BCE, SASRec reached NDCG@10
0.0214 on Beauty in our harness; eSASRec reports 0.052 with full and 0.053 with sampled softmax).
Item indexes are 0-based outside; inside, token i + 1 is item i and token 0 pads. Everything
here is state and math; the training loop is ``retriever.sequence_train``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

Array = np.ndarray
ITEM_INPUTS = ("id", "text", "text+id")


@dataclass(frozen=True)
class SequenceConfig:
    item_input: str = "id"       # "id" (SASRec), "text" or "text+id" (semrec's history encoder)
    max_len: int = 50
    hidden: int = 64
    n_blocks: int = 2
    n_heads: int = 1
    dropout: float = 0.5
    lr: float = 1e-3
    weight_decay: float = 0.0
    # 0: full softmax over all items; n: sampled softmax against n uniform negatives shared by the
    # batch. 1024 is 7.5x faster per Beauty epoch than the full softmax (5.3 vs 39.9 s, 1 thread).
    negatives: int = 1024
    batch_size: int = 128
    max_epochs: int = 200
    eval_every: int = 2          # epochs between validation checks
    patience: int = 3            # checks without improvement before stopping
    eval_users: int | None = 4000  # validation users sampled (seeded); None = all
    max_minutes: float | None = None
    seed: int = 0
    # 1 thread, not 2: on the shared 2-core box two threads made small-op epochs 6-20x slower
    # (OpenMP spinning under oversubscription; measured with the BCE SASRec).
    threads: int = 1

    def __post_init__(self) -> None:
        if self.item_input not in ITEM_INPUTS:
            raise ValueError(f"item_input must be one of {ITEM_INPUTS}, not {self.item_input!r}")


class _Block(nn.Module):
    def __init__(self, d: int, heads: int, dropout: float):
        super().__init__()
        self.attn_norm = nn.LayerNorm(d, eps=1e-8)
        self.attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.ffn_norm = nn.LayerNorm(d, eps=1e-8)
        self.ffn = nn.Sequential(nn.Linear(d, d), nn.Dropout(dropout), nn.ReLU(), nn.Linear(d, d),
                                 nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, mask: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        q = self.attn_norm(x)
        a, _ = self.attn(q, x, x, attn_mask=mask, need_weights=False)
        x = self.ffn_norm(q + a)
        x = x + self.ffn(x)
        return x * keep


class SequenceNet(nn.Module):
    """The network. ``text``: (n_items, t) float32 unit text vectors (needed unless item_input is
    "id"). ``item_table()`` -> (n_items + 1, d) embeddings, row 0 the pad."""

    def __init__(self, n_items: int, cfg: SequenceConfig, text: Array | None = None):
        super().__init__()
        d = cfg.hidden
        self.cfg, self.scale, self.n_heads = cfg, math.sqrt(d), cfg.n_heads
        self.item_emb = nn.Embedding(n_items + 1, d, padding_idx=0) if "id" in cfg.item_input else None
        if "text" in cfg.item_input:
            if text is None:
                raise ValueError(f"item_input {cfg.item_input!r} needs the items' text vectors")
            self.register_buffer("text", torch.as_tensor(np.asarray(text, np.float32)), persistent=False)
            self.text_proj = nn.Linear(self.text.shape[1], d, bias=False)
        self.pos_emb = nn.Embedding(cfg.max_len, d)
        self.emb_dropout = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList([_Block(d, cfg.n_heads, cfg.dropout) for _ in range(cfg.n_blocks)])
        self.last_norm = nn.LayerNorm(d, eps=1e-8)
        causal = torch.triu(torch.ones(cfg.max_len, cfg.max_len, dtype=torch.bool), diagonal=1)
        self.register_buffer("causal", causal, persistent=False)
        # Xavier-normal init of every matrix, as the reference code (torch's default N(0, 1)
        # embeddings times sqrt(d) saturate the logits; training then stalls at popularity level).
        for p in self.parameters():
            if p.dim() >= 2:
                nn.init.xavier_normal_(p)
        if self.item_emb is not None:
            with torch.no_grad():
                self.item_emb.weight[0].zero_()
                if "text" in cfg.item_input:
                    self.item_emb.weight.mul_(0.1)  # the text projection leads, IDs refine

    def project(self, text: torch.Tensor) -> torch.Tensor:
        """(m, t) text vectors -> (m, d) embeddings of items without an ID embedding (new items)."""
        return self.text_proj(text)

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """Embeddings of ``tokens`` (any shape, int64; 0 = pad -> 0) -> (..., d), computed for these
        rows only (the text projection of the whole catalog per batch would cost as much as the loss)."""
        out = 0.0
        if "text" in self.cfg.item_input:
            rows = self.text[(tokens - 1).clamp(min=0)]
            out = self.project(rows) * (tokens != 0).unsqueeze(-1).to(rows.dtype)
        if self.item_emb is not None:
            out = out + self.item_emb(tokens)
        return out

    def item_table(self) -> torch.Tensor:
        """(n_items + 1, d): every item's embedding, row 0 the pad (for full scoring)."""
        return self.embed(torch.arange(self.text.shape[0] + 1 if "text" in self.cfg.item_input
                                       else self.item_emb.num_embeddings))

    def encode(self, tokens: torch.Tensor, table: torch.Tensor | None = None) -> torch.Tensor:
        """tokens: (B, L') int64 with L' <= max_len, left-padded -> (B, L', d) states. ``table``:
        (n + 1, d) embeddings to look tokens up in (serving: one row per index label)."""
        length = tokens.shape[1]
        max_len = self.pos_emb.num_embeddings
        emb = self.embed(tokens) if table is None else table[tokens]
        x = emb * self.scale + self.pos_emb.weight[max_len - length:]
        x = self.emb_dropout(x)
        pad = tokens == 0
        keep = (~pad).unsqueeze(-1).to(x.dtype)
        x = x * keep
        # causal + key padding; every position may attend to itself so no row is fully masked
        mask = (self.causal[:length, :length] | pad[:, None, :]) & ~torch.eye(length, dtype=torch.bool)
        mask = mask.repeat_interleave(self.n_heads, dim=0)  # (B * heads, L', L')
        for block in self.blocks:
            x = block(x, mask, keep)
        return self.last_norm(x)

    def forward(self, tokens: torch.Tensor, targets: torch.Tensor, negatives: torch.Tensor | None = None
                ) -> torch.Tensor:
        """Mean cross-entropy of the next item over non-pad positions; tokens/targets (B, L) int64.

        ``negatives`` None: full softmax over every item. Else (m,) int64 tokens shared by the batch:
        sampled softmax of the target against them (a negative equal to the target is masked)."""
        h = self.encode(tokens)
        mask = targets != 0
        h, pos = h[mask], targets[mask]
        if negatives is None:
            logits = h @ self.item_table()[1:].T  # (positions, n_items): every item is a candidate
            return nn.functional.cross_entropy(logits, pos - 1)
        pos_logit = (h * self.embed(pos)).sum(-1, keepdim=True)
        neg_logit = (h @ self.embed(negatives).T).masked_fill(negatives[None, :] == pos[:, None], float("-inf"))
        logits = torch.cat([pos_logit, neg_logit], dim=1)
        return nn.functional.cross_entropy(logits, torch.zeros(len(pos), dtype=torch.long))

    def last_state(self, tokens: torch.Tensor, table: torch.Tensor | None = None) -> torch.Tensor:
        """(B, d) state at the last position: the shopper's next-item query vector."""
        return self.encode(tokens, table)[:, -1, :]


def left_pad(sequences, length: int, offset: int = 1) -> Array:
    """(n, length) int64: the last ``length`` items of each sequence plus ``offset``, left-padded with 0."""
    out = np.zeros((len(sequences), length), dtype=np.int64)
    for r, s in enumerate(sequences):
        s = np.asarray(s[-length:], dtype=np.int64) if length else np.asarray(s)[:0]
        if len(s):
            out[r, length - len(s):] = s + offset
    return out


@torch.no_grad()
def user_states(net: SequenceNet, histories, table: torch.Tensor | None = None) -> Array:
    """(n, d) float32 next-item query vectors of ``histories`` (item indexes, oldest first); an
    empty history gives zeros."""
    was = net.training
    net.eval()
    width = max(1, min(net.cfg.max_len, max((len(h) for h in histories), default=1)))
    tokens = torch.from_numpy(left_pad(histories, width))
    out = net.last_state(tokens, table).numpy().astype(np.float32)
    out[[len(h) == 0 for h in histories]] = 0.0
    net.train(was)
    return out
