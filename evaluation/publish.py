"""``semrec train``: the served pipeline's learned parts fitted on a catalog's interactions and
published as the next model version (``ranker.artifacts``), with a model card."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from ranker.artifacts import Models, save_models

from .learned import LearnedConfig, fit_learned
from .protocol import leave_one_out, sequences_from_reviews
from .served import Replay

Array = np.ndarray
MIN_SHOPPERS = 20


class TooFewShoppers(ValueError):
    """The interactions hold too few shoppers on the index's items to fit the learned parts."""


def train_and_publish(catalog, item_vectors: Array, out, embedder, *, cfg: LearnedConfig = LearnedConfig(),
                      command: str = "", workdir=None, seed: int = 0, progress: bool = True, reranker=None):
    """``semrec train``: the learned parts fitted on ``catalog``'s interactions (a public dataset or
    the service's own event log as reviews) and published as the next version under ``out``.

    ``item_vectors`` rows follow the sorted unique item ids of the reviews (as the harness's). The
    split is leave-one-out (standard protocol): MF and the encoder learn from everything but each
    shopper's last two interactions, the ranking from the second-last. ``reranker``
    (``ranker.model.Reranker``): its logit becomes a feature of the ranking, and it is published
    with the version (``reranker/``), so the service serves the two together. Returns the version dir.
    """
    started = time.perf_counter()
    sequences, item_ids, user_ids = sequences_from_reviews(catalog.reviews)
    split = leave_one_out(sequences, item_ids, user_ids, seed=seed, protocol="standard")
    with tempfile.TemporaryDirectory(prefix="semrec-train-") as tmp:  # the replayed event log goes here
        replay = Replay.build(split, catalog.items, item_vectors, embedder, Path(workdir or tmp), progress=progress,
                              reranker=reranker)
        try:
            record = fit_learned(replay, item_vectors, cfg, progress=progress)
        finally:
            replay.close()
    svc = replay.svc
    card = {"command": command, "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "data": {"source": catalog.source, "items": int(split.n_items), "users": int(len(user_ids)),
                     "interactions": int(len(catalog.reviews)), "fit_sequences": len(split.fit),
                     "validation_users": int(len(split.users)),
                     "split": "leave-one-out: fit = all but each shopper's last two interactions; the ranking "
                              "learns from the second-last"},
            "parts": record, "seconds": round(time.perf_counter() - started, 1)}
    if reranker is not None:  # published with the version: the ranking reads its logits
        card["parts"]["reranker"] = {**reranker.info(), "validation": reranker.meta.get("validation")}
        reranker.detach()  # from the replay's index
    return save_models(Models(svc.mf, svc.encoder, svc.ranking, svc.ease, reranker), out, card)


def train_for_index(index, reviews, out, embedder=None, *, cfg: LearnedConfig = LearnedConfig(), command: str = "",
                    source: str = "", seed: int = 0, progress: bool = True, reranker=None) -> Path:
    """:func:`train_and_publish` for a built index (``indexer.store.ItemIndex``): the interactions
    are the ``reviews`` (schema frame) of items the index holds, the items and their vectors the
    index's own, so the models see exactly what the service searches. ``embedder`` None: the
    index's own model, loaded once the data is known to suffice. Returns the version dir."""
    from indexer.embed import load_embedder
    from indexer.schema import Catalog

    known = index.table.label_of
    reviews = reviews[reviews["item_id"].astype(str).isin(known)]
    if reviews["user_id"].nunique() < MIN_SHOPPERS:
        raise TooFewShoppers(f"reviews: {reviews['user_id'].nunique()} shoppers with interactions on items of "
                             f"the index; the learned parts need at least {MIN_SHOPPERS}")
    item_ids = sorted(reviews["item_id"].astype(str).unique())
    items = index.table.live_frame().drop(columns="label")
    items = items[items["item_id"].isin(item_ids)]
    return train_and_publish(Catalog(items, reviews, source), index.vectors_of(item_ids), out,
                             embedder or load_embedder(index.model), cfg=cfg, command=command, seed=seed,
                             progress=progress, reranker=reranker)
