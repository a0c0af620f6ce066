"""The reranker at serving time: a fine-tuned scorer loaded from a versioned directory.

Two architectures, one serving API (:class:`Reranker`):

* ``"cross"``: the cross-encoder :class:`ranker.network.CrossEncoderNet` (written by
  :func:`evaluation.training.train_ranker`): every layer over ``[CLS] context [SEP] item [SEP]``
  for every pair. The teacher and the reference.
* ``"split"``: split-layer late interaction :class:`ranker.split.SplitNet` (distilled from a
  cross-encoder by :mod:`evaluation.distill`): the context is encoded once per request, each item's
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

Pair inputs, token budgets and weights on disk: :mod:`ranker.network`. Speed: fewer layers than
MiniLM's 6 and dynamic int8 quantisation; ``ranker.json`` records whether int8 kept validation
NDCG@10 (``inference``), and that is the default here.

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
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from .network import HEAD_FILE, EncoderConfig, PairEncoder, load_network, quantize_int8, score_pairs
from .split import QUERIES, SplitScorer, from_cross_encoder
from .states import ItemStates
from .versions import version_dirs

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


def resolve_version(path: str | os.PathLike) -> Path:
    """A version directory itself, or the newest ``vNNNN`` inside a root such as ``runs/ranker``."""
    p = Path(path)
    if not p.exists():
        raise RerankerLoadError(p, "no such directory; train one with `semrec train-ranker`")
    if not p.is_dir():
        raise RerankerLoadError(p, "not a directory")
    if (p / RANKER_FILE).exists():
        return p
    versions = version_dirs(p)
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
        from .texts import context_text, item_text

        recent = [item_text(r.get("title", ""), r.get("brand", ""), r.get("categories", []), self.words_per_item)
                  for r in list(history)[::-1][: self.history_items]]
        return context_text(recent, interests, query)

    @staticmethod
    def texts_for(items: Sequence[dict]) -> list[str]:
        """Candidate texts from item records (items schema dicts), as in training."""
        from .texts import item_text

        return [item_text(r.get("title", ""), r.get("brand", ""), r.get("categories", [])) for r in items]

    def score(self, context: str, item_texts: Sequence[str]) -> np.ndarray:
        """Scores of ``item_texts`` for one context -> float32 ``(len(item_texts),)`` (logits)."""
        if self.split is not None:
            return self.split.score(context, list(item_texts))
        return score_pairs(self.net, self.encoder, [context] * len(item_texts), list(item_texts), self.batch_size)

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

    def detach(self) -> None:
        """Stop following the attached index (a newer model version replaced this reranker)."""
        if self.states is not None:
            self.states.detach()
        self.index, self.states = None, None  # a request still holding it scores from the items' texts

    def attached_to(self, index) -> bool:
        """Whether :meth:`score_items` reads ``index``'s items from precomputed states (a split
        reranker attached to it): the serving path then skips reading and encoding item texts."""
        return self.states is not None and self.index is index

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
