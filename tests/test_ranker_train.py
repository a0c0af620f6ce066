"""Reranker training on a small real slice of Beauty: it learns, it round-trips, bad dirs fail clearly.

One tiny run (1 encoder layer, short token budgets, ~100 training groups) is shared by the module.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest

from evaluation.training import prepare, validate
from ranker.model import Reranker, RerankerLoadError
from ranker.network import build_network
from ranker.pairs import training_groups
from ranker.train import list_loss, list_ranks, score_groups

from .conftest import TINY_RANKER_CFG as CFG


def test_training_groups_respect_the_time_split(beauty_small):
    catalog, vectors = beauty_small
    data = prepare(catalog, CFG, vectors)
    split = data.split
    assert data.train.items.shape[1] == CFG.pairs.group_size == 5
    for g in range(len(data.train)):
        u = data.train.users[g]
        seq = split.fit[u]
        pos, negs = data.train.items[g, 0], data.train.items[g, 1:]
        assert pos in seq[1:]  # the positive is a later item of the fit part, never a held-out item
        assert not set(negs.tolist()) & set(seq.tolist())  # negatives were not chosen by this user
    # validation lists hold each user's second-last item, which training never saw as a positive
    assert len(data.valid) > 0
    assert all(data.valid.items[i, data.valid.positive[i]] >= 0 for i in range(len(data.valid)))
    same = training_groups(split.fit, data.short_texts, vectors, CFG.pairs)
    assert np.array_equal(same.items, data.train.items)  # seeded
    # only decisions the retrievers offered become groups (module docstring of ranker.pairs)
    unfiltered = training_groups(split.fit, data.short_texts, vectors, replace(CFG.pairs, require_retrieved=False))
    assert len(unfiltered) > len(data.train) > 0


def test_tiny_training_learns(trained_ranker, beauty_small):
    path, card = trained_ranker
    curve = card["validation"]["curve"]
    assert curve[-1]["loss"] < curve[0]["loss"] - 0.2  # validation loss drops (2.34 -> 1.92 when written)
    assert curve[-1]["train_loss"] < curve[1]["train_loss"]  # training loss drops (1.44 -> 1.32)
    assert card["validation"]["fp32"]["ndcg@10"] > curve[0]["ndcg@10"]  # the kept checkpoint ranks better
    assert card["training"]["steps"] == card["training"]["steps_planned"]
    # known positives (each training group's next item) outrank their negatives after training
    catalog, vectors = beauty_small
    data = prepare(catalog, CFG, vectors)
    rr = Reranker(path, variant="fp32")
    untrained, _ = build_network(card["hyperparameters"]["base_model"] or _minilm(), CFG.num_layers)
    after = score_groups(rr.net, rr.encoder, data.train, data.full_texts)
    before = score_groups(untrained.eval(), rr.encoder, data.train, data.full_texts)
    top_after = np.mean(list_ranks(after, data.train.positive) == 0)
    top_before = np.mean(list_ranks(before, data.train.positive) == 0)
    assert top_after > top_before and top_after > 0.5  # 0.35 -> 0.61 when written
    assert list_loss(after, data.train.positive) < list_loss(before, data.train.positive) - 0.3  # 1.55 -> 1.07


def test_model_dir_round_trips(trained_ranker, beauty_small):
    path, card = trained_ranker
    catalog, vectors = beauty_small
    data = prepare(catalog, CFG, vectors)
    rr = Reranker(path.parent, variant="fp32")  # the root resolves to its newest version
    assert rr.path == path and rr.history_items == CFG.pairs.history_items
    again = validate(rr.net, rr.encoder, data.valid, data.full_texts)
    assert again["loss"] == pytest.approx(card["validation"]["fp32"]["loss"], abs=1e-5)
    assert (path / "MODEL_CARD.md").read_text().startswith(f"# semrec reranker {path.name}")
    for key in ("data", "subsample", "hyperparameters", "validation", "training", "machine"):
        assert key in card
    labels, scores = rr.rerank(data.valid.contexts[0], np.arange(4), [data.full_texts[i] for i in range(4)], top_n=3)
    assert labels.shape == scores.shape == (1, 3) and np.all(np.diff(scores[0]) <= 0)
    records = catalog.items.to_dict("records")
    row = {item: r for r, item in enumerate(data.split.item_ids.tolist())}
    newest_first = [data.short_texts[row[r["item_id"]]] for r in records[:5][::-1][: CFG.pairs.history_items]]
    assert rr.context_for(records[:5]) == "recent: " + " ; ".join(newest_first)  # as in training
    assert rr.texts_for(records[:2]) == [data.full_texts[row[r["item_id"]]] for r in records[:2]]
    int8 = Reranker(path, variant="int8")
    s = int8.score(data.valid.contexts[0], data.full_texts[:5])
    assert s.dtype == np.float32 and s.shape == (5,)


def test_missing_or_incompatible_dir_is_a_clear_error(trained_ranker, tmp_path):
    path, _ = trained_ranker
    with pytest.raises(RerankerLoadError, match="no such directory") as e:
        Reranker(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(e.value)
    with pytest.raises(RerankerLoadError, match="no ranker.json and no vNNNN"):
        Reranker(tmp_path)
    bad = tmp_path / "v0001"
    shutil.copytree(path, bad)
    meta = json.loads((bad / "ranker.json").read_text())
    (bad / "ranker.json").write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(RerankerLoadError, match="format_version 99"):
        Reranker(bad)
    (bad / "ranker.json").write_text(json.dumps(meta))
    import torch

    head = torch.load(bad / "model" / "head.pt", weights_only=True)
    torch.save({**head, "linear.weight": torch.zeros(2, head["linear.weight"].shape[1])}, bad / "model" / "head.pt")
    with pytest.raises(RerankerLoadError, match="expected a single score"):
        Reranker(bad)
    shutil.rmtree(bad / "model")
    with pytest.raises(RerankerLoadError, match="lacks config.json"):
        Reranker(bad)


def _minilm() -> str:
    from indexer.embed import minilm_path

    return minilm_path()
