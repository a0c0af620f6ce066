"""The reranker at serving time: a fine-tuned scorer loaded from a versioned directory.

Two architectures, one serving API (:class:`Reranker`):

* ``"cross"``: the cross-encoder :class:`CrossEncoderNet` (written by :func:`ranker.train.train_ranker`):
  every layer over ``[CLS] context [SEP] item [SEP]`` for every pair. The teacher and the reference.
* ``"split"``: split-layer late interaction :class:`ranker.split.SplitNet` (distilled from a
  cross-encoder by :mod:`ranker.distill`): the context is encoded once per request, each item's
  lower-layer states once (at index time with :meth:`Reranker.attach`, else cached by text), and
  only the top ``joint_layers`` run per pair, over the item's tokens (see :mod:`ranker.split`).

Model directory (written atomically)::

    runs/ranker/v0001/
        ranker.json       format version, architecture, token budgets, text settings, inference variant
        model/            the encoder as a Hugging Face BERT directory + tokenizer, and head.pt
                          (the scoring head: ``linear`` + ``cos_scale``, the same for both architectures)
        MODEL_CARD.md, model_card.json

``ranker.json`` format 2 adds ``architecture`` (and ``joint_layers`` for "split"); format 1
directories (no field) are cross-encoders and still load.

Input layout: ``[CLS] context [SEP] item [SEP]`` (BERT pair encoding, token types 0 / 1). The
context is cut to ``context_tokens`` and the item to ``item_tokens`` word pieces, so a pair is at
most ``max_length`` tokens. Both are tokenised once and cached: a request tokenises its context
once for all its candidates, and an item's tokens are reused across requests.

Speed: the encoder can run with fewer layers than MiniLM's 6 (chosen at training time) and with
dynamic int8 quantisation of its Linear layers (``torch.ao.quantization.quantize_dynamic``);
``ranker.json`` records whether int8 kept validation NDCG@10 (``inference``), and that is the
default here.

Serving::

    rr = Reranker("runs/ranker")                      # newest version, its recorded variant
    ctx = rr.context_for(history_records, interests, query)
    rr.score(ctx, rr.texts_for(records))              # float32 (n,) logits, any architecture
    rr.attach(index)                                  # split: precompute item states, follow upserts
    rr.score_items(ctx, labels)                       # float32 (n,) from the attached index's labels
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from .split import QUERIES, SplitScorer, from_cross_encoder
from .states import ItemStates

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)  # 1: cross-encoders written before the split architecture
ARCHITECTURES = ("cross", "split")
VARIANTS = ("fp32", "int8")
RANKER_FILE = "ranker.json"


class RerankerLoadError(RuntimeError):
    """A reranker directory is missing or cannot be used. Names the path and what is wrong."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"reranker at {self.path}: {reason}")


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


def resolve_version(path: str | os.PathLike) -> Path:
    """A version directory itself, or the newest ``vNNNN`` inside a root such as ``runs/ranker``."""
    p = Path(path)
    if not p.exists():
        raise RerankerLoadError(p, "no such directory; train one with `semrec train-ranker`")
    if not p.is_dir():
        raise RerankerLoadError(p, "not a directory")
    if (p / RANKER_FILE).exists():
        return p
    versions = sorted(d for d in p.iterdir() if d.is_dir() and d.name.startswith("v") and d.name[1:].isdigit())
    if not versions:
        raise RerankerLoadError(p, f"no {RANKER_FILE} and no vNNNN version directories inside")
    return versions[-1]


def read_manifest(version_dir: Path) -> dict:
    """``ranker.json`` of a version directory, checked for the fields and versions this code reads."""
    f = version_dir / RANKER_FILE
    if not f.is_file():
        raise RerankerLoadError(version_dir, f"missing {RANKER_FILE}: not a reranker directory")
    try:
        meta = json.loads(f.read_text())
    except json.JSONDecodeError as e:
        raise RerankerLoadError(version_dir, f"{RANKER_FILE} is not valid JSON ({e.msg})") from None
    if meta.get("format_version") not in READABLE_VERSIONS:
        raise RerankerLoadError(version_dir, f"format_version {meta.get('format_version')!r}, this code reads "
                                f"{' or '.join(map(str, READABLE_VERSIONS))}; retrain or use a matching semrec version")
    for key in ("encoder", "text", "num_layers"):
        if key not in meta:
            raise RerankerLoadError(version_dir, f"{RANKER_FILE} lacks {key!r}")
    meta.setdefault("architecture", "cross")
    if meta["architecture"] not in ARCHITECTURES:
        raise RerankerLoadError(version_dir, f"architecture {meta['architecture']!r}, expected one of {ARCHITECTURES}")
    if meta["architecture"] == "split" and not (isinstance(meta.get("joint_layers"), int)
                                                and 1 <= meta["joint_layers"] <= meta["num_layers"]):
        raise RerankerLoadError(version_dir, f"split reranker needs joint_layers in 1..{meta['num_layers']}, "
                                f"{RANKER_FILE} has {meta.get('joint_layers')!r}")
    if meta["architecture"] == "split":
        meta.setdefault("query", "tokens")
        if meta["query"] not in QUERIES:
            raise RerankerLoadError(version_dir, f"split query {meta['query']!r}, expected one of {QUERIES}")
    weights = version_dir / "model"
    if not (weights / "config.json").is_file() or not (weights / HEAD_FILE).is_file() or \
            not any(weights.glob("*.safetensors")) and not any(weights.glob("*.bin")):
        raise RerankerLoadError(version_dir, f"model/ lacks config.json, {HEAD_FILE} or weights")
    config = json.loads((weights / "config.json").read_text())
    if config.get("num_hidden_layers") != meta["num_layers"]:
        raise RerankerLoadError(version_dir, f"model/ has {config.get('num_hidden_layers')} layers, "
                                f"{RANKER_FILE} says {meta['num_layers']}")
    head = torch.load(weights / HEAD_FILE, map_location="cpu", weights_only=True)
    shape = tuple(head.get("linear.weight", torch.zeros(0)).shape)
    if shape != (1, config.get("hidden_size")):
        raise RerankerLoadError(version_dir, f"{HEAD_FILE} scores with weight shape {shape}, expected a single "
                                f"score from hidden size {config.get('hidden_size')} (1, {config.get('hidden_size')})")
    return meta


class Reranker:
    """A trained reranker (either architecture), loaded once. Errors surface at load (:class:`RerankerLoadError`).

    Args:
        path: a version directory or a root holding ``vNNNN`` versions (the newest is loaded).
        variant: "fp32", "int8", or None for the variant recorded at training (``inference``).
        threads: torch CPU threads (None leaves torch's setting).
        batch_size: pairs per forward pass.
    """

    def __init__(self, path: str | os.PathLike, *, variant: str | None = None, threads: int | None = None,
                 batch_size: int = 64):
        self.path = resolve_version(path)
        self.meta = read_manifest(self.path)
        self.variant = variant or self.meta.get("inference", "fp32")
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, not {self.variant!r}")
        if threads is not None:
            torch.set_num_threads(threads)
        self.architecture = self.meta["architecture"]
        net, tok = load_network(self.path / "model")
        net.eval()
        cfg = EncoderConfig(**self.meta["encoder"])
        self.encoder = PairEncoder(tok, cfg)
        self.batch_size = batch_size
        self.split: SplitScorer | None = None
        if self.architecture == "split":
            net = from_cross_encoder(net, int(self.meta["joint_layers"]), cfg.context_tokens + 2,
                                     self.meta["query"]).eval()
            self.split = SplitScorer(net, quantize_int8(net) if self.variant == "int8" else net, self.encoder,
                                     batch_size)
        self.net = quantize_int8(net) if self.variant == "int8" else net
        self.history_items = int(self.meta["text"]["history_items"])
        self.words_per_item = int(self.meta["text"]["words_per_item"])
        self.index = None
        self.states: ItemStates | None = None

    def context_for(self, history: Sequence[dict], interests: Sequence[str] = (), query: str = "") -> str:
        """Context text from item records (items schema dicts, oldest first), as in training."""
        from .pairs import context_text, item_text

        recent = [item_text(r.get("title", ""), r.get("brand", ""), r.get("categories", []), self.words_per_item)
                  for r in list(history)[::-1][: self.history_items]]
        return context_text(recent, interests, query)

    @staticmethod
    def texts_for(items: Sequence[dict]) -> list[str]:
        """Candidate texts from item records (items schema dicts), as in training."""
        from .pairs import item_text

        return [item_text(r.get("title", ""), r.get("brand", ""), r.get("categories", [])) for r in items]

    def score(self, context: str, item_texts: Sequence[str]) -> np.ndarray:
        """Scores of ``item_texts`` for one context -> float32 ``(len(item_texts),)`` (logits)."""
        if self.split is not None:
            return self.split.score(context, list(item_texts))
        return score_pairs(self.net, self.encoder, [context] * len(item_texts), list(item_texts), self.batch_size)

    def score_many(self, contexts: Sequence[str], item_texts: Sequence[str]) -> np.ndarray:
        """Scores of pairs ``(contexts[i], item_texts[i])`` -> float32 ``(n,)`` (offline evaluation).

        The split architecture encodes each distinct context once for all of its items.
        """
        if self.split is None:
            return score_pairs(self.net, self.encoder, list(contexts), list(item_texts), self.batch_size)
        out = np.zeros(len(item_texts), dtype=np.float32)
        groups: dict[str, list[int]] = {}
        for i, c in enumerate(contexts):
            groups.setdefault(c, []).append(i)
        for c, rows in groups.items():
            out[rows] = self.split.score(c, [item_texts[i] for i in rows])
        return out

    def attach(self, index) -> None:
        """Serve candidates of ``index`` (an :class:`indexer.store.ItemIndex`) by label (:meth:`score_items`).

        Split: computes the lower-layer states of every live item now (Beauty's 12,101 items: see
        ``bench/rerank.py``) and subscribes to the index so upserts and deletes keep them in step.
        Cross: remembers the index (texts are read per request). Attach once per index.
        """
        self.index = index
        if self.split is not None:
            self.states = ItemStates(self.split.encode_items, self.texts_for)
            self.states.attach(index)

    def score_items(self, context: str, labels: Sequence[int]) -> np.ndarray:
        """Scores of live items of the attached index by label (n,) int64 -> float32 ``(n,)`` logits.

        Raises KeyError for a label that is not live (deleted, replaced by an upsert, or unknown).
        """
        if self.index is None:
            raise RuntimeError("score_items needs an index: call attach(index) first")
        labels = [int(lab) for lab in labels]
        if self.states is None:
            with self.index.lock:
                for lab in labels:
                    if not (0 <= lab < self.index.table.n_labels and self.index.table.alive.view[lab]):
                        raise KeyError(f"label {lab} is not a live item")
                texts = self.texts_for([self.index.table.records[lab] for lab in labels])
            return self.score(context, texts)
        if not labels:
            return np.zeros(0, dtype=np.float32)
        with self.index.lock:
            states = self.states.get(labels)
        return self.split.score_states(self.split.context(context), states)

    def rerank(self, context: str, labels: np.ndarray, item_texts: Sequence[str], top_n: int = 50
               ) -> tuple[np.ndarray, np.ndarray]:
        """Reorder the first ``top_n`` candidates of one list by score; the rest are dropped.

        labels: (m,) int64 candidate labels (-1 padding is skipped); item_texts: (m,) their texts.
        Returns ``(labels, scores)``, each ``(1, min(top_n, m))``, best first, padded with -1 / -inf.
        """
        labels = np.asarray(labels)[:top_n]
        keep = np.flatnonzero(labels >= 0)
        s = self.score(context, [item_texts[i] for i in keep])
        order = np.argsort(-s, kind="stable")
        out_l = np.full((1, len(labels)), -1, dtype=np.int64)
        out_s = np.full((1, len(labels)), -np.inf, dtype=np.float32)
        out_l[0, : len(keep)] = labels[keep][order]
        out_s[0, : len(keep)] = s[order]
        return out_l, out_s

    def info(self) -> dict:
        extra = {k: self.meta[k] for k in ("joint_layers", "query")} if self.split is not None else {}
        return {"path": str(self.path), "variant": self.variant, "architecture": self.architecture,
                **{k: self.meta[k] for k in ("encoder", "num_layers")}, **extra}


def write_manifest(version_dir: Path, *, encoder: EncoderConfig, text: dict, num_layers: int, base_model: str,
                   inference: str, architecture: str = "cross", extra: dict | None = None) -> None:
    """Write ``ranker.json`` (called by training before the directory is published).

    A "split" architecture also needs ``extra={"joint_layers": T, ...}``.
    """
    meta = {"format_version": FORMAT_VERSION, "architecture": architecture, "encoder": asdict(encoder),
            "text": text, "num_layers": num_layers, "base_model": base_model, "inference": inference, **(extra or {})}
    (version_dir / RANKER_FILE).write_text(json.dumps(meta, indent=2))
