"""The cross-encoder network and its inputs: token budgets, pair batches, weights on disk.

Input layout: ``[CLS] context [SEP] item [SEP]`` (BERT pair encoding, token types 0 / 1). The
context is cut to ``context_tokens`` and the item to ``item_tokens`` word pieces, so a pair is at
most ``max_length`` tokens. Both are tokenised once and cached (:class:`PairEncoder`): a request
tokenises its context once for all its candidates, and an item's tokens are reused across requests.

Weights: the encoder as a Hugging Face BERT directory + tokenizer, the scoring head of
:class:`CrossEncoderNet` as ``head.pt`` (:func:`save_network`, :func:`load_network`); the split
reranker (:mod:`ranker.split`) reuses the same files. Speed: fewer layers than MiniLM's 6 (chosen
at training time) and dynamic int8 quantisation of the Linear layers (:func:`quantize_int8`).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


@dataclass(frozen=True)
class EncoderConfig:
    """Token budgets of a pair. ``max_length`` = 3 special tokens + context + item."""

    context_tokens: int = 48
    item_tokens: int = 24

    @property
    def max_length(self) -> int:
        return self.context_tokens + self.item_tokens + 3


class PairEncoder:
    """Tokenises contexts and items once (LRU caches) and assembles padded pair batches."""

    def __init__(self, tokenizer, cfg: EncoderConfig, cache_size: int = 100_000):
        self.tokenizer, self.cfg, self.cache_size = tokenizer, cfg, cache_size
        self.cls, self.sep = tokenizer.cls_token_id, tokenizer.sep_token_id
        self.pad = tokenizer.pad_token_id or 0
        self._items: OrderedDict[str, list[int]] = OrderedDict()
        self._contexts: OrderedDict[str, list[int]] = OrderedDict()

    def _ids(self, cache: OrderedDict[str, list[int]], text: str, limit: int) -> list[int]:
        ids = cache.get(text)
        if ids is None:
            # Cut characters first so a pathological text is never tokenised in full (~6 chars/token).
            ids = self.tokenizer(text[: limit * 8], add_special_tokens=False)["input_ids"][:limit]
            cache[text] = ids
            if len(cache) > self.cache_size:
                cache.popitem(last=False)
        else:
            cache.move_to_end(text)
        return ids

    def context_ids(self, text: str) -> list[int]:
        return self._ids(self._contexts, text, self.cfg.context_tokens)

    def item_ids(self, texts: Sequence[str]) -> list[list[int]]:
        return [self._ids(self._items, t, self.cfg.item_tokens) for t in texts]

    def batch(self, contexts: Sequence[str], items: Sequence[str]) -> dict[str, torch.Tensor]:
        """Pairs ``(contexts[i], items[i])`` -> input_ids / token_type_ids / attention_mask, (n, L) int64.

        L is the longest pair in the batch (dynamic padding), at most ``cfg.max_length``.
        """
        ctx = [self.context_ids(c) for c in contexts]
        its = self.item_ids(items)
        lengths = [len(c) + len(i) + 3 for c, i in zip(ctx, its)]
        n, width = len(lengths), max(lengths, default=3)
        ids = np.full((n, width), self.pad, dtype=np.int64)
        types = np.zeros((n, width), dtype=np.int64)
        mask = np.zeros((n, width), dtype=np.int64)
        for r, (c, i) in enumerate(zip(ctx, its)):
            row = [self.cls, *c, self.sep, *i, self.sep]
            ids[r, : len(row)] = row
            types[r, len(c) + 2: len(row)] = 1
            mask[r, : len(row)] = 1
        return {"input_ids": torch.from_numpy(ids), "token_type_ids": torch.from_numpy(types),
                "attention_mask": torch.from_numpy(mask)}


class CrossEncoderNet(torch.nn.Module):
    """BERT encoder over the pair + a scoring head; ``forward`` -> (n,) float logits.

    logit = w . dropout(mean of all token states) + b + s * cos(mean context state, mean item state)

    The cosine term is the similarity the sentence model was trained for (mean pooling), taken
    over the two segments of the jointly encoded pair, so training starts from the zero-shot text
    match (s = 10 at init, w = 0) instead of from a random head on an untrained [CLS] pooler, which
    barely moved with the few thousand groups a 2-core machine can train on.
    """

    def __init__(self, encoder: torch.nn.Module, dropout: float = 0.1, cos_scale: float = 10.0):
        super().__init__()
        self.encoder = encoder
        d = encoder.config.hidden_size
        self.dropout = torch.nn.Dropout(dropout)
        self.linear = torch.nn.Linear(d, 1)
        torch.nn.init.zeros_(self.linear.weight)
        torch.nn.init.zeros_(self.linear.bias)
        self.cos_scale = torch.nn.Parameter(torch.tensor(float(cos_scale)))

    @property
    def config(self):
        return self.encoder.config

    def head_parameters(self) -> list[torch.nn.Parameter]:
        return [*self.linear.parameters(), self.cos_scale]

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor, attention_mask: torch.Tensor
                ) -> torch.Tensor:
        h = self.encoder(input_ids=input_ids, token_type_ids=token_type_ids,
                         attention_mask=attention_mask).last_hidden_state
        m = attention_mask.unsqueeze(-1).to(h.dtype)
        item_m = m * token_type_ids.unsqueeze(-1).to(h.dtype)
        ctx_m = m - item_m

        def mean(mask: torch.Tensor) -> torch.Tensor:
            return (h * mask).sum(1) / mask.sum(1).clamp(min=1.0)

        cos = torch.nn.functional.cosine_similarity(mean(ctx_m), mean(item_m), dim=-1)
        return self.linear(self.dropout(mean(m)))[:, 0] + self.cos_scale * cos


def build_network(base_dir: str | os.PathLike, num_layers: int | None = None) -> tuple[CrossEncoderNet, object]:
    """A fresh (untrained head) network and tokenizer from a Hugging Face BERT directory.

    ``num_layers`` keeps only the first layers of the encoder (the rest of the checkpoint is
    ignored): fewer layers, proportionally less compute per pair.
    """
    import transformers
    from transformers import AutoModel, AutoTokenizer

    transformers.logging.set_verbosity_error()  # the load report lists the dropped layers
    kwargs = {} if num_layers is None else {"num_hidden_layers": num_layers}
    encoder = AutoModel.from_pretrained(str(base_dir), add_pooling_layer=False, **kwargs)
    return CrossEncoderNet(encoder), AutoTokenizer.from_pretrained(str(base_dir))


HEAD_FILE = "head.pt"


def save_network(net: CrossEncoderNet, tokenizer, model_dir: Path) -> None:
    """Encoder + tokenizer as a Hugging Face directory, the head as ``head.pt``."""
    net.encoder.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    torch.save({k: v.detach().cpu() for k, v in net.state_dict().items() if not k.startswith("encoder.")},
               model_dir / HEAD_FILE)


def load_network(model_dir: str | os.PathLike) -> tuple[CrossEncoderNet, object]:
    """The trained network saved by :func:`save_network`."""
    net, tok = build_network(model_dir)
    head = torch.load(Path(model_dir) / HEAD_FILE, map_location="cpu", weights_only=True)
    net.load_state_dict({**{k: v for k, v in net.state_dict().items() if k.startswith("encoder.")}, **head})
    return net, tok


def quantize_int8(net: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``net`` with every ``nn.Linear`` dynamically quantised to int8 weights (CPU)."""
    import copy
    import warnings

    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch marks its quantised tensor factories deprecated
        return quantize_dynamic(copy.deepcopy(net).eval(), {torch.nn.Linear}, dtype=torch.qint8)


@torch.inference_mode()
def score_pairs(net: torch.nn.Module, encoder: PairEncoder, contexts: Sequence[str], items: Sequence[str],
                batch_size: int = 64, device: str = "cpu") -> np.ndarray:
    """Logits for pairs ``(contexts[i], items[i])`` -> float32 ``(n,)``. Higher = more likely next.

    Pairs are sorted by length before batching so padding stays small; output is in input order.
    """
    n = len(items)
    out = np.zeros(n, dtype=np.float32)
    if n == 0:
        return out
    lengths = np.array([len(encoder.context_ids(c)) + len(i) for c, i in zip(contexts, encoder.item_ids(items))])
    order = np.argsort(-lengths, kind="stable")
    for start in range(0, n, batch_size):
        rows = order[start:start + batch_size]
        feats = encoder.batch([contexts[r] for r in rows], [items[r] for r in rows])
        logits = net(**{k: v.to(device) for k, v in feats.items()})
        out[rows] = logits.float().cpu().numpy()
    return out
