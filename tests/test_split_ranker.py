"""The split-layer reranker: its fast path equals a brute-force computation, its item states follow
the index, int8 stays close to fp32 on real pairs, and bad model directories fail clearly."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from indexer.build import build_index
from indexer.embed import minilm_path
from ranker.model import Reranker, RerankerLoadError
from ranker.network import EncoderConfig, PairEncoder, build_network
from ranker.split import SplitScorer, from_cross_encoder, layer_forward, project_kv, reference_scores

CONTEXT = "search: gloss | recent: Matte red lipstick | Rouge ; Ionic hair dryer 1800W"
ITEMS = ["Creamy nude lipstick | Rouge | Lips", "Two-person camping tent, waterproof | Trail | Camping",
         "Burr coffee grinder | Bean & Co | Coffee", "Matte red lipstick long lasting | Rouge | Lips", "x"]


@pytest.fixture(scope="module")
def three_layers(one_thread):
    """Packaged MiniLM cut to 3 layers with a non-zero head (the weights need no training here)."""
    torch.manual_seed(0)
    net, tok = build_network(minilm_path(), 3)
    torch.nn.init.normal_(net.linear.weight, std=0.2)
    return net.eval(), PairEncoder(tok, EncoderConfig())


def test_own_layer_math_equals_hugging_face_bert(three_layers):
    net, enc = three_layers
    f = enc.batch([CONTEXT, "recent: tent"], ITEMS[:2])
    with torch.inference_mode():
        ref = net.encoder(**f).last_hidden_state
        h = net.encoder.embeddings(input_ids=f["input_ids"], token_type_ids=f["token_type_ids"])
        for layer in net.encoder.encoder.layer:
            h = layer_forward(layer, h, *project_kv(layer, h, 12), f["attention_mask"].bool(), 12)
    live = f["attention_mask"].bool()
    assert torch.allclose(h[live], ref[live], atol=1e-5)


@pytest.mark.parametrize("joint,query", [(1, "tokens"), (2, "tokens"), (3, "tokens"), (1, "pooled"),
                                         (2, "pooled")])
def test_split_scores_equal_the_brute_force_reference(three_layers, joint, query):
    net, enc = three_layers
    split = from_cross_encoder(net, joint, enc.cfg.context_tokens + 2, query).eval()
    scorer = SplitScorer(split, split, enc, batch_size=2)  # batches of 2: padding and order across batches
    fast = scorer.score(CONTEXT, ITEMS)
    slow = reference_scores(split, enc.context_ids(CONTEXT), enc.item_ids(ITEMS), enc.cls, enc.sep).numpy()
    assert np.abs(fast - slow).max() < 2e-3  # item states are stored as float16 (1e-4 when written)
    assert np.argsort(fast).tolist() == np.argsort(slow).tolist()
    # another split of the same weights scores differently, so the comparison above would notice a
    # fast path that ignored ``joint`` or ``query``
    other_joint, other_query = (1, "pooled") if query == "tokens" else (2, "tokens")
    other = from_cross_encoder(net, other_joint, enc.cfg.context_tokens + 2, other_query).eval()
    assert np.abs(SplitScorer(other, other, enc).score(CONTEXT, ITEMS) - fast).max() > 1e-2


def test_item_states_do_not_depend_on_the_context(three_layers):
    net, enc = three_layers
    split = from_cross_encoder(net, 1, enc.cfg.context_tokens + 2).eval()
    scorer = SplitScorer(split, split, enc)
    before = scorer.score(CONTEXT, ITEMS)
    scorer.score("recent: tent", ITEMS)  # fills the item cache under another context
    assert np.array_equal(scorer.score(CONTEXT, ITEMS[::-1])[::-1], before)


def test_distilled_split_loads_scores_and_tracks_the_teacher(trained_split, trained_ranker, beauty_small):
    path, card = trained_split
    meta = json.loads((path / "ranker.json").read_text())
    assert meta["format_version"] == 2 and meta["architecture"] == "split" and meta["joint_layers"] == 1
    assert card["teacher"]["validation"]["fp32"]["ndcg@10"] > 0
    assert (path / "MODEL_CARD.md").read_text().count("Split-layer late-interaction") == 1
    curve = card["validation"]["curve"]
    assert card["validation"]["fp32"]["ndcg@10"] >= curve[0]["ndcg@10"]  # the kept checkpoint
    rr = Reranker(path, variant="fp32")
    assert rr.architecture == "split" and rr.info()["joint_layers"] == 1
    catalog, _ = beauty_small
    records = catalog.items.to_dict("records")[:40]
    context = rr.context_for(records[:4])
    texts = rr.texts_for(records[4:])
    s = rr.score(context, texts)
    assert s.dtype == np.float32 and s.shape == (36,)
    teacher = Reranker(trained_ranker[0], variant="fp32").score(context, texts)
    assert np.corrcoef(s, teacher)[0, 1] > 0.5  # distilled: it orders like its teacher (0.9 when written)
    int8 = Reranker(path, variant="int8").score(context, texts)
    assert np.corrcoef(s, int8)[0, 1] > 0.98 and np.abs(s - int8).max() < 0.1 * np.ptp(s)  # real pairs


def test_item_states_follow_upserts_and_deletes(trained_split, tiny_catalog, embedder):
    index = build_index(tiny_catalog, embedder, kind="flat", progress=False)
    rr = Reranker(trained_split[0], variant="fp32")
    rr.attach(index)
    assert len(rr.states) == len(index) and rr.states.nbytes > 0
    ctx = rr.context_for([index.table.get("dryer")])
    labels = index.table.labels(["lipstick-red", "tent", "espresso"])
    texts = rr.texts_for([index.table.records[lab] for lab in labels])
    np.testing.assert_allclose(rr.score_items(ctx, labels), rr.score(ctx, texts), atol=1e-5)
    # an upsert of a new item and of a changed one: new labels get states, the replaced label loses its own
    old = int(index.table.label_of["tent"])
    new_items = pd.DataFrame([
        {"item_id": "diffuser", "title": "Hair dryer diffuser attachment", "brand": "Breeze",
         "categories": ["Beauty", "Hair Care"]},
        {"item_id": "tent", "title": "Ultralight one-person tent", "brand": "Trail",
         "categories": ["Sports", "Camping"]}])
    index.add(new_items, embedder.encode(["Hair dryer diffuser attachment", "Ultralight one-person tent"]))
    assert len(rr.states) == len(index)
    fresh = index.table.labels(["diffuser", "tent"])
    texts = rr.texts_for([index.table.records[lab] for lab in fresh])
    assert "Ultralight" in texts[1]
    np.testing.assert_allclose(rr.score_items(ctx, fresh), rr.score(ctx, texts), atol=1e-5)
    with pytest.raises(KeyError, match=f"label {old} is not a live item"):
        rr.score_items(ctx, [old])
    index.delete("diffuser")
    with pytest.raises(KeyError):
        rr.score_items(ctx, [int(fresh[0])])
    assert len(rr.states) == len(index) and rr.score_items(ctx, []).shape == (0,)


def test_item_states_follow_a_label_renumbering(trained_split, tiny_catalog, embedder):
    index = build_index(tiny_catalog, embedder, kind="flat", progress=False)
    rr = Reranker(trained_split[0], variant="fp32")
    rr.attach(index)
    ctx = rr.context_for([index.table.get("dryer")])
    # retire labels (a delete near the front, an upsert), then renumber the live items 0..n-1
    index.delete(index.table.records[0]["item_id"])
    index.add(pd.DataFrame([{"item_id": "tent", "title": "Ultralight one-person tent", "brand": "Trail",
                             "categories": ["Sports", "Camping"]}]), embedder.encode(["Ultralight one-person tent"]))
    assert index.compact_labels() and index.table.n_labels == len(index) == len(rr.states)
    labels = np.arange(len(index))
    texts = rr.texts_for([index.table.records[lab] for lab in labels])
    assert any("Ultralight" in t for t in texts)
    # every new label scores its own item: states moved with their items, none left at an old label
    np.testing.assert_allclose(rr.score_items(ctx, labels), rr.score(ctx, texts), atol=1e-5)
    with pytest.raises(KeyError):
        rr.score_items(ctx, [len(index)])


def test_attach_encodes_outside_the_index_lock_and_honours_writes_made_meanwhile(trained_split, tiny_catalog,
                                                                                 embedder):
    # Under the lock, a model swap on Beauty blocked every request for 5-31 s while the catalog encoded.
    import threading

    from ranker.states import ItemStates

    index = build_index(tiny_catalog, embedder, kind="flat", progress=False)
    rr = Reranker(trained_split[0], variant="fp32")
    seen = {"calls": 0, "free": None}

    def encode(texts):
        seen["calls"] += 1
        if seen["calls"] == 1:  # the bulk: another thread can take the lock, and writes meanwhile
            def writer():
                seen["free"] = index.lock.acquire(timeout=5)
                index.lock.release()
                index.add(pd.DataFrame([{"item_id": "tent", "title": "Ultralight one-person tent", "brand": "Trail",
                                         "categories": ["Sports", "Camping"]}]),
                          embedder.encode(["Ultralight one-person tent"]))
                index.delete("espresso")
            t = threading.Thread(target=writer)
            t.start()
            t.join()
        return rr.split.encode_items(texts)

    states = ItemStates(encode, rr.texts_for)
    states.attach(index)
    assert seen["free"] is True and seen["calls"] == 2  # the bulk, then only the changed text
    assert sorted(states.labels().tolist()) == sorted(index.table.label_of.values())
    tent = int(index.table.label_of["tent"])
    text = rr.texts_for([index.table.records[tent]])
    assert "Ultralight" in text[0]
    np.testing.assert_allclose(states.get([tent])[0].astype(np.float32),
                               rr.split.encode_items(text)[0].astype(np.float32), atol=1e-3)


def test_the_rerank_stage_scores_attached_items_by_label(trained_split, tiny_catalog, embedder):
    from ranker.rerank import cross_scores

    index = build_index(tiny_catalog, embedder, kind="flat", progress=False)
    rr = Reranker(trained_split[0], variant="fp32")
    ctx = rr.context_for([index.table.get("dryer")])
    labels = np.array([*index.table.labels(["lipstick-red", "tent", "espresso"]), -1])
    by_text = Reranker(trained_split[0], variant="fp32")
    want = cross_scores(by_text, index, labels, ctx)  # not attached: the texts are read and encoded
    assert len(by_text.split._cache) == 3 and want[3] == 0
    rr.attach(index)
    assert rr.attached_to(index) and not by_text.attached_to(index)
    np.testing.assert_allclose(cross_scores(rr, index, labels, ctx), want, atol=1e-5)
    assert len(rr.split._cache) == 0  # served from the states attach computed, no text encoded
    # an upsert retires a candidate's label while a request holds it: its old text is scored, no error
    index.add(pd.DataFrame([{"item_id": "tent", "title": "Ultralight one-person tent", "brand": "Trail",
                             "categories": ["Sports", "Camping"]}]), embedder.encode(["Ultralight one-person tent"]))
    np.testing.assert_allclose(cross_scores(rr, index, labels, ctx), want, atol=1e-5)


def test_cross_encoder_serves_labels_too(trained_ranker, tiny_index):
    rr = Reranker(trained_ranker[0], variant="fp32")
    with pytest.raises(RuntimeError, match="attach"):
        rr.score_items("recent: x", [0])
    rr.attach(tiny_index)
    labels = tiny_index.table.labels(["dryer", "tent"])
    texts = rr.texts_for([tiny_index.table.records[lab] for lab in labels])
    np.testing.assert_allclose(rr.score_items("recent: hair", labels), rr.score("recent: hair", texts), atol=1e-6)
    with pytest.raises(KeyError):
        rr.score_items("recent: hair", [10_000])


def test_split_dir_errors_are_clear(trained_split, trained_ranker, tmp_path):
    bad = tmp_path / "v0001"
    shutil.copytree(trained_split[0], bad)
    meta = json.loads((bad / "ranker.json").read_text())
    for change, message in (({"joint_layers": 0}, "joint_layers in 1..1"), ({"joint_layers": "one"}, "joint_layers"),
                            ({"architecture": "bi"}, "architecture 'bi'"), ({"format_version": 3}, "format_version 3"),
                            ({"query": "mean"}, "split query 'mean'")):
        (bad / "ranker.json").write_text(json.dumps({**meta, **change}))
        with pytest.raises(RerankerLoadError, match=message):
            Reranker(bad)
    # a format-1 directory (written before the split architecture) is a cross-encoder and still loads
    old = tmp_path / "old"
    shutil.copytree(trained_ranker[0], old)
    cross_meta = json.loads((old / "ranker.json").read_text())
    cross_meta.pop("architecture")
    (old / "ranker.json").write_text(json.dumps({**cross_meta, "format_version": 1}))
    assert Reranker(old).architecture == "cross"
    with pytest.raises(ValueError, match="variant"):
        Reranker(trained_split[0], variant="int4")
    (bad / "ranker.json").write_text(json.dumps({**meta, "query": "pooled"}))  # the other split of 1 layer
    pooled = Reranker(bad, variant="fp32")
    assert pooled.info()["query"] == "pooled" and pooled.score("recent: lipstick", ITEMS).shape == (len(ITEMS),)
