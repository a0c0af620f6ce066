"""The history encoder as a candidate source: a trained ``retriever.sequence.SequenceNet`` over
text-projected item embeddings, searched in FAISS.

Every item of the index has an embedding: an item the model was trained on gets its trained row
(text projection + ID embedding); any other item (added later, or never interacted with) the
projection of its index vector alone, so a product upserted a second ago is retrievable from its
text at once. The embeddings live in a FAISS inner-product index whose labels are the item
index's labels, kept in step through ``ItemIndex.subscribe`` (deleted items are masked out by the
caller's ``allowed``, as everywhere). A shopper's query vector is the network's last state over
their latest items; scores are dot products.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from indexer.store import ItemIndex
from indexer.table import GrowableArray
from indexer.vectors import make_index

from .sequence import SequenceConfig, SequenceNet, left_pad

Array = np.ndarray


class HistoryEncoder:
    """State: the network, the training item ids, and (once attached) one embedding per index label."""

    def __init__(self, net: SequenceNet, item_ids: Sequence[str], info: dict | None = None):
        if "text" not in net.cfg.item_input:
            raise ValueError("the history encoder reads item text: item_input must be 'text' or 'text+id'")
        self.net = net.eval()
        self.item_ids = [str(i) for i in item_ids]
        self.row_of = {item: r for r, item in enumerate(self.item_ids)}
        self.info = dict(info or {})
        with torch.no_grad():
            self._trained = net.item_table()[1:].numpy().astype(np.float32)  # (n_items, d)
        self.dim = self._trained.shape[1]
        self.lock = threading.Lock()
        self.table = GrowableArray((self.dim,), np.float32)
        self.search_index = make_index("flat", self.dim)
        self.index: ItemIndex | None = None

    # ---- keeping one embedding per label --------------------------------------------------------
    def attach(self, index: ItemIndex) -> HistoryEncoder:
        """Embed every label of ``index`` and follow its updates (call once, at load)."""
        with index.lock:
            self.index = index
            self._add(np.arange(index.table.n_labels, dtype=np.int64))
            index.subscribe(self._on_update)
        return self

    def detach(self) -> None:
        """Stop following the index (a newer model version replaced this one)."""
        if self.index is not None:
            with self.index.lock:
                self.index.unsubscribe(self._on_update)

    def _on_update(self, op: str, labels: np.ndarray) -> None:
        if op == "upsert":  # new labels are always the next ones: the tables stay aligned
            self._add(labels)
        elif op == "relabel":
            self._relabel(labels)

    def _relabel(self, mapping: np.ndarray) -> None:
        """Labels renumbered (``ItemIndex.compact_labels``; ``mapping`` int64 (old n_labels,), new
        label of each old one, -1 retired): each live row moves to its new label, in fresh tables."""
        old = np.flatnonzero(mapping >= 0)
        old = old[np.argsort(mapping[old], kind="stable")]  # new labels are 0..n-1
        with self.lock:
            emb = self.table.view[old]
            table = GrowableArray((self.dim,), np.float32, capacity=max(1024, len(emb)))
            table.extend(emb)
            search_index = make_index("flat", self.dim)
            if len(emb):
                search_index.add(emb)
            self.table, self.search_index = table, search_index

    @torch.no_grad()
    def _add(self, labels: np.ndarray) -> None:
        if not len(labels):
            return
        ids = [self.index.table.records[lab]["item_id"] for lab in labels.tolist()]
        rows = np.array([self.row_of.get(i, -1) for i in ids], dtype=np.int64)
        emb = np.empty((len(labels), self.dim), dtype=np.float32)
        known = rows >= 0
        emb[known] = self._trained[rows[known]]
        if (~known).any():
            text = torch.from_numpy(np.ascontiguousarray(self.index.vectors.view[labels[~known]]))
            emb[~known] = self.net.project(text).numpy()
        with self.lock:
            if self.search_index.ntotal != labels[0]:
                raise RuntimeError(f"encoder table out of step: {self.search_index.ntotal} rows, label {labels[0]}")
            self.table.extend(emb)
            self.search_index.add(emb)

    # ---- queries ------------------------------------------------------------------------------
    @torch.no_grad()
    def user_vectors(self, histories: Sequence[Sequence[int]]) -> Array:
        """(n, d) float32 query vectors from histories of index labels (oldest first); empty -> 0."""
        with self.lock:
            table = torch.from_numpy(np.vstack([np.zeros((1, self.dim), np.float32), self.table.view]))
        width = max(1, min(self.net.cfg.max_len, max((len(h) for h in histories), default=1)))
        tokens = torch.from_numpy(left_pad([np.asarray(h, dtype=np.int64) for h in histories], width))
        out = self.net.last_state(tokens, table).numpy().astype(np.float32)
        out[[len(h) == 0 for h in histories]] = 0.0
        return out

    def candidates(self, index: ItemIndex, user: Array, n: int, allowed: Array) -> tuple[Array, Array]:
        """The ``n`` best allowed labels by ``embedding . user`` -> (labels, scores), best first.
        ``index``: the one attached (the source interface MF and EASE share; the table follows it)."""
        if not np.any(user):
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        with self.lock:
            n_rows = self.table.view.shape[0]
            labels, scores = self.search_index.search(user[None].astype(np.float32), n, allowed[:n_rows])
        live = labels[0] >= 0
        return labels[0][live], scores[0][live]

    def scores_of(self, index: ItemIndex, user: Array, labels: Array) -> Array:
        """float32 (m,) ``embedding . user`` of each label of the attached ``index`` (0 at padding)."""
        labels = np.asarray(labels, dtype=np.int64)
        with self.lock:
            emb = self.table.view[np.maximum(labels, 0)]
        return np.where(labels >= 0, emb @ user, 0.0).astype(np.float32)

    # ---- persistence ----------------------------------------------------------------------------
    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        torch.save({k: v for k, v in self.net.state_dict().items()}, folder / "encoder.pt")
        np.save(folder / "text.npy", self.net.text.numpy())
        (folder / "encoder.json").write_text(json.dumps({"config": asdict(self.net.cfg), "item_ids": self.item_ids,
                                                         "info": self.info}))

    @classmethod
    def load(cls, folder: str | Path) -> HistoryEncoder:
        folder = Path(folder)
        meta = json.loads((folder / "encoder.json").read_text())
        cfg = SequenceConfig(**meta["config"])
        net = SequenceNet(len(meta["item_ids"]), cfg, np.load(folder / "text.npy"))
        net.load_state_dict(torch.load(folder / "encoder.pt", map_location="cpu", weights_only=True))
        return cls(net, meta["item_ids"], meta["info"])
