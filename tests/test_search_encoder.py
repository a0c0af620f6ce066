"""Fine-tuning the search embedder: pairs never touch the held-out reviews, and training moves the model."""

import os

import numpy as np
import torch

from evaluation import search_cases
from evaluation.search_encoder import EncoderTuneConfig, distinct_batches, fine_tune, in_batch_loss, training_pairs
from indexer.embed import load_embedder
from indexer.loaders import load_dataset

from .conftest import shared_data


def test_pairs_leave_out_the_evaluated_reviews_and_batches_hold_distinct_items():
    cat = load_dataset("subscription-boxes", shared_data("amazon-subscription-boxes-2023"))
    test, dev = search_cases.test_and_dev(cat.reviews, 200, 100, 0)
    held = {c.review_id for c in test + dev}
    pairs = training_pairs(cat, held)
    r = cat.reviews
    held_titles = set(r.loc[r["review_id"].isin(held), "title"].str.strip())
    held_texts = set(r.loc[r["review_id"].isin(held), "text"].str.strip()) - {""}
    kept_titles = set(r.loc[~r["review_id"].isin(held), "title"].str.strip())
    assert len(pairs) > 1000
    assert not {q for q, _, _ in pairs} & (held_titles - kept_titles)  # no evaluated headline is a query
    assert not any(t in p for _, p, _ in pairs for t in held_texts if len(t) > 80)  # nor any positive's text
    items = [i for _, _, i in pairs]
    batches = list(distinct_batches(items, 16, np.random.default_rng(0)))
    assert len(batches) >= 0.9 * len(pairs) / 16  # only a popular item's last rows wait to the end
    assert all(len({items[n] for n in b}) == 16 for b in batches)
    flat = np.concatenate(batches)
    assert len(flat) == len(set(flat.tolist()))  # each pair at most once per epoch


def test_fine_tuning_lowers_the_in_batch_loss_and_saves_a_servable_model(tmp_path):
    cat = load_dataset("subscription-boxes", shared_data("amazon-subscription-boxes-2023"))
    pairs = training_pairs(cat, set())
    seen, chosen = set(), []
    for p in pairs:  # 16 pairs of distinct items: one batch
        if p[2] not in seen and len(chosen) < 16:
            seen.add(p[2])
            chosen.append(p)

    def loss(model) -> float:
        q = model.encode([p[0] for p in chosen], convert_to_tensor=True)
        d = model.encode([p[1] for p in chosen], convert_to_tensor=True)
        return float(in_batch_loss(q, d, 20.0))

    before = loss(load_embedder("minilm").model)
    out = fine_tune(chosen, tmp_path, EncoderTuneConfig(batch=16, epochs=6, lr=1e-4, max_tokens=64, warmup=0.2),
                    progress=False)
    tuned = load_embedder(str(out))
    assert out.name == "v0001" and (out / "model_card.json").exists()
    assert tuned.dim == 384 and tuned.max_tokens == 256  # trained on 64 tokens, serves the model's own limit
    with torch.no_grad():
        assert loss(tuned.model) < 0.7 * before
    # vector caches key on the folder's weights: a model retrained in place reads no old vectors
    key, weights = tuned.cache_key, next(out.rglob("*.safetensors"))
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    assert key.startswith(str(out)) and tuned.cache_key != key
    assert load_embedder("minilm").cache_key == "minilm"
