"""Precomputed item states of a split reranker, kept in step with an item index.

:class:`ItemStates` holds, per live label of an :class:`indexer.store.ItemIndex`, the item's
token states after the split reranker's lower layers (``(Li, d)`` float16, Li <= item_tokens + 1):
the part of a pair's work that does not depend on the shopper. It computes them for every live item
when attached (outside the index lock, see :meth:`ItemStates.attach`) and follows the index with
:meth:`ItemIndex.subscribe`: an upsert computes the new labels' states (under the index lock, so a
reader never sees a label without them), a delete (or the label an upsert replaced) drops them,
and a renumbering of labels (``ItemIndex.compact_labels``, "relabel") moves each state to its
item's new label. States are recomputed at each load, not persisted: ~20 tokens x 384 x 2 bytes
≈ 15 KB per item (Beauty's 12,101 items: ~180 MB).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


class ItemStates:
    """label -> lower-layer states of that item, for the live labels of one index.

    encode: item texts -> one float16 (Li, d) array per text (``SplitScorer.encode_items``);
    texts_for: item records -> the texts the reranker reads (``Reranker.texts_for``).
    """

    def __init__(self, encode: Callable[[list[str]], list[np.ndarray]],
                 texts_for: Callable[[Sequence[dict]], list[str]], batch_size: int = 512):
        self.encode, self.texts_for, self.batch_size = encode, texts_for, batch_size
        self._states: dict[int, np.ndarray] = {}
        self.index = None

    def __len__(self) -> int:
        return len(self._states)

    @property
    def nbytes(self) -> int:
        return sum(s.nbytes for s in self._states.values())

    def attach(self, index) -> None:
        """Compute states for every live item of ``index`` and follow its updates.

        The bulk is encoded outside the index lock, keyed by text: under the lock it had blocked
        every request for the whole encoding (5-31 s for Beauty's 12,101 items on 2 cores, at a
        model swap). Under the lock only the texts that changed meanwhile are encoded, and each
        live label takes its text's states, so upserts, deletes and renumberings made during the
        bulk are all honoured."""
        if self.index is not None:
            raise RuntimeError("these item states already follow an index")
        with index.lock:
            texts = self._texts(index, index.table.label_of.values())
        bulk = self._encode_new(texts)
        with index.lock:
            labels = list(index.table.label_of.values())
            self._states = self._states_for(index, labels, bulk)
            index.subscribe(self._on_update)
            self.index = index

    def _texts(self, index, labels) -> list[str]:
        """The texts the reranker reads for ``labels`` (call under the index lock)."""
        return self.texts_for([index.table.records[int(lab)] for lab in labels])

    def _encode_new(self, texts: list[str], known: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """text -> states for each distinct text of ``texts``, encoding only those not in ``known``."""
        out = dict(known or {})
        todo = [t for t in dict.fromkeys(texts) if t not in out]
        for start in range(0, len(todo), self.batch_size):
            part = todo[start:start + self.batch_size]
            out.update(zip(part, self.encode(part)))
        return out

    def _states_for(self, index, labels, known: dict[str, np.ndarray] | None = None) -> dict[int, np.ndarray]:
        """label -> states of ``labels`` (call under the index lock); texts in ``known`` are not encoded again."""
        texts = self._texts(index, labels)
        done = self._encode_new(texts, known)
        return {int(lab): done[t] for lab, t in zip(labels, texts)}

    def detach(self) -> None:
        """Stop following the index (a newer model version replaced these states)."""
        if self.index is not None:
            with self.index.lock:
                self.index.unsubscribe(self._on_update)
            self.index = None

    def _add(self, index, labels: np.ndarray) -> None:
        self._states.update(self._states_for(index, labels))

    def _on_update(self, op: str, labels: np.ndarray) -> None:
        if op == "upsert":
            self._add(self.index, np.asarray(labels, dtype=np.int64))
        elif op == "delete":
            for lab in np.asarray(labels).tolist():
                self._states.pop(int(lab), None)
        elif op == "relabel":
            self._relabel(np.asarray(labels, dtype=np.int64))

    def _relabel(self, mapping: np.ndarray) -> None:
        """Labels renumbered (``ItemIndex.compact_labels``; ``mapping`` int64 (old n_labels,), the new
        label of each old one, -1 retired): each state moves to its item's new label, none is recomputed."""
        n = len(mapping)
        self._states = {int(mapping[old]): st for old, st in self._states.items()
                        if old < n and mapping[old] >= 0}

    def get(self, labels: Sequence[int]) -> list[np.ndarray]:
        """States of ``labels``; KeyError naming the first label that is not live."""
        try:
            return [self._states[int(lab)] for lab in labels]
        except KeyError as e:
            raise KeyError(f"label {e.args[0]} is not a live item of the attached index") from None

    def labels(self) -> np.ndarray:
        """The labels held, sorted (int64)."""
        return np.array(sorted(self._states), dtype=np.int64)
