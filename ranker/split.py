"""Split-layer late interaction: the reranker whose cost grows with the candidates, not candidates x context.

The cross-encoder (:class:`ranker.network.CrossEncoderNet`) runs every layer over ``[CLS] context
[SEP] item [SEP]`` for every pair, so a list of 50 candidates encodes the same shopper context 50
times. :class:`SplitNet` keeps the same BERT layers (it starts from the trained cross-encoder's
weights) but changes who may attend to whom:

* lower ``L = num_layers - joint_layers`` layers: the context attends only to the context, an item
  only to itself. The context's states are computed once per request, an item's once at index time
  (:class:`ranker.states.ItemStates`) -- both independent of the other side.
* top ``joint_layers`` layers: the context still attends only to itself (once per request), and
  the item attends to ``[context ; item]``. ``query`` says what of the item joins:

  - ``"tokens"``: every item token (<= ``item_tokens`` + 1, ~20), so a pair costs ``joint_layers``
    layers over ~20 query tokens instead of ``num_layers`` layers over ~72 (0.07 vs 0.79 GFLOP
    for 1 of 3 layers); stored per item: its lower token states (Li, d).
  - ``"pooled"``: the item enters the joint layers as ONE token, the mean of its lower states,
    attending to the context's tokens and itself: ~3 MFLOP per pair and joint layer, so the
    request's cost is the context's own encoding (~0.5 GFLOP) plus little per candidate; stored
    per item: that mean (1, d).

  FLOPs per request at the measured token counts: ``bench/rerank.py``.

Positions: context tokens 0..; item tokens start at ``context_tokens + 2`` whatever the context's
length (as if the context were full), so an item's lower states do not depend on the context.
Token types 0 (context) / 1 (item), as in the cross-encoder.

Score (a logit, higher = more likely next), mirroring the cross-encoder's head::

    logit = w . dropout(mean item state) + b + s * cos(mean context state, mean item state)

over the last layer's states (the context's from its own pass; "pooled": the item's one token).
Shapes below: ``n`` items, ``Lc`` context tokens, ``Li`` item tokens (padded), ``d`` hidden size,
``H`` heads.

:func:`reference_scores` computes the same logits the slow way (each pair as one sequence, every
token through every layer under a per-layer visibility mask): the tests check the fast path
against it.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

Tensor = torch.Tensor
QUERIES = ("tokens", "pooled")


# ----------------------------------------------------------------------------- BERT layer math
def _heads(x: Tensor, heads: int) -> Tensor:
    """(n, L, d) -> (n, H, L, d / H)."""
    n, length, d = x.shape
    return x.view(n, length, heads, d // heads).transpose(1, 2)


def project_kv(layer, h: Tensor, heads: int) -> tuple[Tensor, Tensor]:
    """Keys and values of a BERT layer for states ``h`` (n, L, d) -> two (n, H, L, d/H)."""
    att = layer.attention.self
    return _heads(att.key(h), heads), _heads(att.value(h), heads)


def layer_forward(layer, h: Tensor, k: Tensor, v: Tensor, key_mask: Tensor, heads: int) -> Tensor:
    """One BERT layer for query states ``h`` (n, Lq, d) over keys / values ``k``, ``v`` (n, H, Lk, d/H).

    key_mask: bool, (n, Lk) (the same keys for every query) or (n, Lq, Lk); True = may attend.
    Returns the layer's output states (n, Lq, d). Dropout is active only in training mode.
    """
    att = layer.attention
    q = _heads(att.self.query(h), heads)
    mask = key_mask[:, None, None, :] if key_mask.dim() == 2 else key_mask[:, None]
    p = att.self.dropout.p if layer.training else 0.0
    ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
    return layer_out(layer, h, ctx.transpose(1, 2).reshape(h.shape))


def layer_out(layer, h: Tensor, attended: Tensor) -> Tensor:
    """The rest of a BERT layer after attention: output projection, residual + LayerNorm, feed-forward."""
    att = layer.attention
    a = att.output.LayerNorm(att.output.dropout(att.output.dense(attended)) + h)
    f = layer.output.dense(layer.intermediate.intermediate_act_fn(layer.intermediate.dense(a)))
    return layer.output.LayerNorm(layer.output.dropout(f) + a)


def pooled_layer(layer, q_in: Tensor, kc: Tensor, vc: Tensor, cmask: Tensor, heads: int) -> Tensor:
    """One BERT layer for one token per item over ``[context ; that token]``, the context not copied.

    q_in: (n, d) the items' tokens (their mean lower state); kc, vc: (B, H, Lc, d/H) context keys /
    values, B = n, or 1 shared by all items; cmask: (B, Lc) bool. Returns the token's output (n, d).
    """
    n, d = q_in.shape
    att = layer.attention.self
    q = att.query(q_in).view(n, heads, d // heads)                              # (n, H, dh)
    ki, vi = att.key(q_in).view(n, heads, d // heads), att.value(q_in).view(n, heads, d // heads)
    scale = 1.0 / math.sqrt(d // heads)
    shared = kc.shape[0] == 1  # one context for every item: batched over heads, no (n, H, Lc, dh) copy
    sc = torch.einsum("nhd,hkd->nhk", q, kc[0]) if shared else torch.einsum("nhd,nhkd->nhk", q, kc)
    sc = sc.masked_fill(~cmask[:, None, :], -torch.inf)                        # (n, H, Lc)
    si = (q * ki).sum(-1, keepdim=True)                                         # (n, H, 1)
    p = torch.softmax(torch.cat([sc, si], dim=-1) * scale, dim=-1)
    if layer.training:
        p = att.dropout(p)
    lc = kc.shape[2]
    pc = p[..., :lc]
    out = torch.einsum("nhk,hkd->nhd", pc, vc[0]) if shared else torch.einsum("nhk,nhkd->nhd", pc, vc)
    return layer_out(layer, q_in, (out + p[..., lc:] * vi).reshape(n, d))


def masked_mean(h: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``h`` (n, L, d) over positions where ``mask`` (n, L) is true -> (n, d)."""
    m = mask.unsqueeze(-1).to(h.dtype)
    return (h * m).sum(1) / m.sum(1).clamp(min=1.0)


@dataclass
class ContextStates:
    """One request's context, encoded once (batch of ``B`` contexts in training, 1 at serving).

    kv: per joint layer, the context's keys and values at that layer, each (B, H, Lc, d/H);
    mask: (B, Lc) bool; mean: (B, d) mean of its last-layer states.
    """

    kv: list[tuple[Tensor, Tensor]]
    mask: Tensor
    mean: Tensor


class SplitNet(torch.nn.Module):
    """The split-layer scorer (module docstring). ``encoder``: a Hugging Face BERT model.

    Args:
        encoder: BertModel (no pooler) with ``num_hidden_layers`` layers.
        joint_layers: top layers in which the item tokens attend to the context (1..num_layers).
        item_offset: first position id of item tokens (``context_tokens + 2``).
    """

    def __init__(self, encoder: torch.nn.Module, joint_layers: int, item_offset: int, query: str = "tokens",
                 dropout: float = 0.1, cos_scale: float = 10.0):
        super().__init__()
        n = encoder.config.num_hidden_layers
        if not 1 <= joint_layers <= n:
            raise ValueError(f"joint_layers must be in 1..{n}, not {joint_layers}")
        if query not in QUERIES:
            raise ValueError(f"query must be one of {QUERIES}, not {query!r}")
        self.encoder, self.joint_layers, self.item_offset, self.query = encoder, joint_layers, item_offset, query
        self.heads = encoder.config.num_attention_heads
        d = encoder.config.hidden_size
        self.dropout = torch.nn.Dropout(dropout)
        self.linear = torch.nn.Linear(d, 1)
        torch.nn.init.zeros_(self.linear.weight)
        torch.nn.init.zeros_(self.linear.bias)
        self.cos_scale = torch.nn.Parameter(torch.tensor(float(cos_scale)))

    @property
    def config(self):
        return self.encoder.config

    @property
    def layers(self):
        return self.encoder.encoder.layer

    @property
    def lower(self) -> int:
        return len(self.layers) - self.joint_layers

    def head_parameters(self) -> list[torch.nn.Parameter]:
        return [*self.linear.parameters(), self.cos_scale]

    def embed(self, ids: Tensor, token_type: int, offset: int) -> Tensor:
        """Embeddings of token ids (n, L) with one token type and positions offset.. -> (n, L, d)."""
        pos = torch.arange(offset, offset + ids.shape[1], device=ids.device).expand_as(ids)
        return self.encoder.embeddings(input_ids=ids, token_type_ids=torch.full_like(ids, token_type),
                                       position_ids=pos)

    def encode_context(self, ids: Tensor, mask: Tensor) -> ContextStates:
        """Contexts ``[CLS] context [SEP]`` (B, Lc) int64 with mask (B, Lc) bool, through every layer."""
        return self.context_upper(self.context_lower(ids, mask), mask)

    def context_lower(self, ids: Tensor, mask: Tensor) -> Tensor:
        """Contexts through the lower layers only -> (B, Lc, d)."""
        h = self.embed(ids, 0, 0)
        for layer in self.layers[: self.lower]:
            h = layer_forward(layer, h, *project_kv(layer, h, self.heads), mask, self.heads)
        return h

    def context_upper(self, h: Tensor, mask: Tensor) -> ContextStates:
        """Context states after the lower layers (B, Lc, d) through the joint layers -> ContextStates."""
        kv = []
        for layer in self.layers[self.lower:]:
            k, v = project_kv(layer, h, self.heads)
            kv.append((k, v))
            h = layer_forward(layer, h, k, v, mask, self.heads)
        return ContextStates(kv, mask, masked_mean(h, mask))

    def encode_items(self, ids: Tensor, mask: Tensor) -> Tensor:
        """Items ``item [SEP]`` (n, Li) int64, mask (n, Li) bool -> states after the lower layers (n, Li, d).

        Independent of any context: computed once per item (at index time) and stored.
        """
        h = self.embed(ids, 1, self.item_offset)
        for layer in self.layers[: self.lower]:
            k, v = project_kv(layer, h, self.heads)
            h = layer_forward(layer, h, k, v, mask, self.heads)
        return h

    def item_store(self, h: Tensor, mask: Tensor) -> Tensor:
        """What is stored per item (context-independent), from lower states ``h`` (n, Li, d):
        "tokens": ``h`` itself; "pooled": the item's mean state (n, 1, d)."""
        return h if self.query == "tokens" else masked_mean(h, mask)[:, None]

    def score_stored(self, ctx: ContextStates, items: Tensor, item_mask: Tensor, owner: Tensor | None = None
                     ) -> Tensor:
        """The per-pair part: stored item states (n, Li, d) + mask (n, Li) -> logits (n,).

        owner: (n,) int64 row of ``ctx`` each item is scored against; None = every item against
        context row 0 (serving: one context per request, shared, not copied per item).
        """
        if self.query == "pooled":
            z = items[:, 0]
            cm = ctx.mask if owner is None else ctx.mask[owner]
            for j, layer in enumerate(self.layers[self.lower:]):
                kc, vc = ctx.kv[j] if owner is None else (ctx.kv[j][0][owner], ctx.kv[j][1][owner])
                z = pooled_layer(layer, z, kc, vc, cm, self.heads)
            return self._head(ctx, z, owner)
        h, n = items, items.shape[0]

        def rows(x: Tensor) -> Tensor:
            return x.expand(n, *x.shape[1:]) if owner is None else x[owner]

        keys = torch.cat([rows(ctx.mask), item_mask], dim=1)
        for j, layer in enumerate(self.layers[self.lower:]):
            kc, vc = ctx.kv[j]
            ki, vi = project_kv(layer, h, self.heads)
            k, v = torch.cat([rows(kc), ki], dim=2), torch.cat([rows(vc), vi], dim=2)
            h = layer_forward(layer, h, k, v, keys, self.heads)
        return self._head(ctx, masked_mean(h, item_mask), owner)

    def _head(self, ctx: ContextStates, mean: Tensor, owner: Tensor | None) -> Tensor:
        cmean = ctx.mean.expand(mean.shape[0], -1) if owner is None else ctx.mean[owner]
        cos = F.cosine_similarity(cmean, mean, dim=-1)
        return self.linear(self.dropout(mean))[:, 0] + self.cos_scale * cos

    def forward(self, ctx_ids: Tensor, ctx_mask: Tensor, item_ids: Tensor, item_mask: Tensor, owner: Tensor
                ) -> Tensor:
        """Training: B contexts, n items, item r scored against context ``owner[r]`` -> logits (n,)."""
        ctx = self.encode_context(ctx_ids, ctx_mask)
        store = self.item_store(self.encode_items(item_ids, item_mask), item_mask)
        return self.score_stored(ctx, store, item_mask[:, : store.shape[1]], owner)


def from_cross_encoder(net: torch.nn.Module, joint_layers: int, item_offset: int, query: str = "tokens"
                       ) -> SplitNet:
    """A SplitNet with the cross-encoder's encoder weights and head (a copy; ``net`` is untouched)."""
    import copy

    split = SplitNet(copy.deepcopy(net.encoder), joint_layers, item_offset, query)
    split.linear.load_state_dict(net.linear.state_dict())
    split.cos_scale.data.copy_(net.cos_scale.data)
    return split


# ----------------------------------------------------------------------------- the slow reference
@torch.inference_mode()
def reference_scores(net: SplitNet, ctx_ids: list[int], item_ids: list[list[int]], cls: int, sep: int) -> Tensor:
    """Logits (n,) computed pair by pair over one sequence ``[CLS] context [SEP] item [SEP]``: every
    token through every layer, with a per-layer visibility mask (lower layers: each segment sees
    itself; joint layers: the context sees itself, the item sees both). No caching, no split."""
    out = []
    for item in item_ids:
        c, i = [cls, *ctx_ids, sep], [*item, sep]
        ids = torch.tensor([c + i])
        pos = torch.tensor([list(range(len(c))) + list(range(net.item_offset, net.item_offset + len(i)))])
        types = torch.tensor([[0] * len(c) + [1] * len(i)])
        h = net.encoder.embeddings(input_ids=ids, token_type_ids=types, position_ids=pos)
        is_ctx = torch.tensor([True] * len(c) + [False] * len(i))
        own = is_ctx[:, None] == is_ctx[None, :]
        joint = own | ~is_ctx[:, None]  # item rows see every column, context rows only the context
        for j, layer in enumerate(net.layers):
            if net.query == "pooled" and j == net.lower:  # the item enters the joint layers as one token
                h = torch.cat([h[:, is_ctx], h[:, ~is_ctx].mean(1, keepdim=True)], dim=1)
                is_ctx = torch.tensor([True] * len(c) + [False])
                own = is_ctx[:, None] == is_ctx[None, :]
                joint = own | ~is_ctx[:, None]
            k, v = project_kv(layer, h, net.heads)
            h = layer_forward(layer, h, k, v, (joint if j >= net.lower else own)[None], net.heads)
        cm, im = h[0, is_ctx].mean(0), h[0, ~is_ctx].mean(0)
        out.append(net.linear(im)[0] + net.cos_scale * F.cosine_similarity(cm, im, dim=0))
    return torch.stack(out)


# ----------------------------------------------------------------------------- serving
def pad_batch(rows: list[list[int]], pad: int) -> tuple[Tensor, Tensor]:
    """Token id lists -> ids (n, L) int64 padded with ``pad``, mask (n, L) bool; L = longest row."""
    width = max((len(r) for r in rows), default=1)
    ids = torch.full((len(rows), width), pad, dtype=torch.int64)
    mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for r, row in enumerate(rows):
        ids[r, : len(row)] = torch.tensor(row, dtype=torch.int64)
        mask[r, : len(row)] = True
    return ids, mask


def stack_states(states: list) -> tuple[Tensor, Tensor]:
    """Stored item states, each (Li, d) float16 numpy -> (n, max Li, d) float32 tensor + mask (n, max Li)."""
    lengths = [s.shape[0] for s in states]
    width, d = max(lengths), states[0].shape[1]
    if all(n == width for n in lengths):  # e.g. pooled items (one row each): one copy
        return torch.from_numpy(np.stack(states).astype(np.float32)), torch.ones((len(states), width), dtype=torch.bool)
    h = torch.zeros((len(states), width, d), dtype=torch.float32)
    mask = torch.zeros((len(states), width), dtype=torch.bool)
    for r, s in enumerate(states):
        h[r, : s.shape[0]] = torch.from_numpy(s)
        mask[r, : s.shape[0]] = True
    return h, mask


class SplitScorer:
    """Serving state of a :class:`SplitNet`: token caches (``encoder``, a ``PairEncoder``), item states.

    item_net: the net that computes item lower states (fp32: once per item, so its precision is
    free); pair_net: the net for the context and the per-pair part (fp32 or int8-quantised).
    Item states of texts seen by :meth:`score` are kept in an LRU cache of ``cache_size`` texts.
    """

    def __init__(self, item_net: SplitNet, pair_net: torch.nn.Module, encoder, batch_size: int = 64,
                 cache_size: int = 20_000):
        self.item_net, self.pair_net, self.encoder = item_net.eval(), pair_net.eval(), encoder
        self.batch_size, self.cache_size = batch_size, cache_size
        self._cache: OrderedDict[str, object] = OrderedDict()

    @torch.inference_mode()
    def context(self, text: str) -> ContextStates:
        """One context text -> its states (computed once per request)."""
        ids, mask = pad_batch([[self.encoder.cls, *self.encoder.context_ids(text), self.encoder.sep]],
                              self.encoder.pad)
        return self.pair_net.encode_context(ids, mask)

    @torch.inference_mode()
    def encode_items(self, texts: list[str], batch_size: int = 256) -> list:
        """Item texts -> their lower-layer states, one float16 numpy array (Li, d) per text."""
        toks = [[*t, self.encoder.sep] for t in self.encoder.item_ids(texts)]
        out: list = [None] * len(toks)
        order = sorted(range(len(toks)), key=lambda r: -len(toks[r]))  # little padding per batch
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            ids, mask = pad_batch([toks[r] for r in rows], self.encoder.pad)
            store = self.item_net.item_store(self.item_net.encode_items(ids, mask), mask).to(torch.float16).numpy()
            for j, r in enumerate(rows):
                out[r] = store[j, : min(len(toks[r]), store.shape[1])].copy()
        return out

    def states_for(self, texts: list[str]) -> list:
        """Item states of ``texts`` from the LRU cache, computing the missing ones in one batch."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        for t, s in zip(missing, self.encode_items(missing) if missing else []):
            self._cache[t] = s
        out = []
        for t in texts:
            self._cache.move_to_end(t)
            out.append(self._cache[t])
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return out

    @torch.inference_mode()
    def score_states(self, ctx: ContextStates, states: list) -> np.ndarray:
        """Logits float32 (n,) of items given by their lower states against one context."""
        out = np.zeros(len(states), dtype=np.float32)
        order = sorted(range(len(states)), key=lambda r: -states[r].shape[0])
        for start in range(0, len(order), self.batch_size):
            rows = order[start:start + self.batch_size]
            h, mask = stack_states([states[r] for r in rows])
            out[rows] = self.pair_net.score_stored(ctx, h, mask).float().numpy()
        return out

    def score(self, context: str, texts: list[str]) -> np.ndarray:
        """Logits float32 (n,) of item texts for one context (items' states cached by text)."""
        if not texts:
            return np.zeros(0, dtype=np.float32)
        return self.score_states(self.context(context), self.states_for(list(texts)))
