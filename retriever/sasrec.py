"""SASRec as a harness baseline: ``retriever.sequence.SequenceNet`` with ID item embeddings and
cross-entropy (sampled softmax over 1,024 negatives by default; ``negatives=0``: full softmax),
behind the ``Recommender`` interface. The history encoder of the served pipeline is the same
network with text-projected item embeddings (``retriever.encoder``).

Defaults: the paper's setting for sparse Amazon data (max_len 50, 2 blocks, 1 head, dropout 0.5,
lr 1e-3, batch 128), hidden 64, at most 200 epochs with early stopping on the caller's validation
metric (``fit(..., validate=...)``: the harness passes validation NDCG@10, see evaluation.harness).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from typing import Self

import numpy as np
import torch

from .collaborative import Recommender
from .sequence import SequenceConfig, SequenceNet, user_states
from .sequence_train import fit_sequence_model

Array = np.ndarray


class SASRec(Recommender):
    """SASRec (Kang & McAuley 2018) trained with softmax cross-entropy. ``history``: the training curve."""

    name = "sasrec"

    def __init__(self, config: SequenceConfig | None = None, progress: bool = False, **overrides: object):
        self.config = replace(config or SequenceConfig(), **overrides)
        self.progress = progress
        self.net: SequenceNet | None = None
        self.epoch_seconds: list[float] = []
        self.history: list[dict] = []
        self.best_epoch = 0
        self.stopped_by = ""

    def fit(self, sequences: Sequence[Array], n_items: int,
            validate: Callable[[Recommender], float] | None = None) -> Self:
        """Train on ``sequences``; ``validate(self)`` (higher is better) drives early stopping."""
        self._fit_popularity(sequences, n_items)

        def check(net: SequenceNet) -> float:
            self.net = net
            return validate(self)

        net, record = fit_sequence_model(sequences, n_items, self.config, validate=check if validate else None,
                                         progress=self.progress)
        self.net = net
        self.epoch_seconds, self.history = record["epoch_seconds"], record["curve"]
        self.best_epoch, self.stopped_by = record["best_epoch"], record["stopped_by"]
        return self

    @torch.no_grad()
    def score(self, histories: Sequence[Array]) -> Array:
        if self.net is None:
            raise RuntimeError("SASRec.score before fit")
        table = self.net.item_table()
        s = user_states(self.net, histories, table) @ table[1:].numpy().T
        return self._empty_to_popularity(s.astype(np.float32), histories)

    def info(self) -> dict:
        return {"config": asdict(self.config)}
