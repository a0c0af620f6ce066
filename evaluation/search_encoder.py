"""Fine-tune the embedder on the shop's own (query, item) pairs, for the search box's dense half.

    python -m evaluation.search_encoder --dataset instruments --data-dir ../shared/data --out runs/search-encoder
    python -m evaluation.search_eval --dataset instruments --data-dir ../shared/data --model runs/search-encoder/v0001

Pairs: review headlines as queries for the reviewed item, as ``search_eval`` draws them; neither
a query nor a positive text comes from a review of its test or dev samples (the same draw), so
the run never sees the reviews it is measured on. A pair's positive text is what the index embeds
for the item: its metadata document, or one of its other reviews (Instruments has no metadata).
Loss: in-batch softmax over cosine similarities (multiple-negatives ranking, scale 20), every
batch holding distinct items, so no other row is a false negative. The output is a
sentence-transformers folder plus ``model_card.json``: ``semrec index --model DIR`` builds an
index with it and the service embeds queries with the index's own model.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from indexer.documents import documents, review_text
from indexer.embed import minilm_path
from indexer.loaders import DATASETS, load_dataset, shared_data_dir
from indexer.schema import Catalog

from .search_cases import query_pool, test_and_dev, twins, with_twins
from .training import machine, publish, staging


@dataclass(frozen=True)
class EncoderTuneConfig:
    batch: int = 32  # pairs per step, each with a distinct item
    lr: float = 3e-5
    warmup: float = 0.1  # share of the steps
    epochs: float = 1.0
    max_minutes: float = 20.0
    max_tokens: int = 128  # item texts truncated for training; the index embeds with the model's own limit
    scale: float = 20.0
    threads: int = 2
    seed: int = 0


def training_pairs(catalog: Catalog, held_out: set[str], seed: int = 0) -> list[tuple[str, str, str]]:
    """``(query, positive text, item id)`` for every queryable review not in ``held_out`` (review ids).

    The positive is the item's document, or one of its other reviews not held out, drawn at random.
    A held-out review's twins (the same text posted twice) are held out with it."""
    held_out = with_twins(held_out, twins(catalog.reviews))
    docs = dict(zip(catalog.items["item_id"], documents(catalog.items)))
    reviews = catalog.reviews[~catalog.reviews["review_id"].isin(held_out)]
    body = reviews[reviews["text"].str.strip().str.len() > 0]
    texts = {i: list(zip(g["review_id"], map(review_text, g["title"], g["text"])))
             for i, g in body.groupby("item_id", sort=False)}
    rng = np.random.default_rng(seed)
    pairs = []
    for rid, item, title in zip(*(query_pool(reviews)[c] for c in ("review_id", "item_id", "title"))):
        options = [t for r, t in texts.get(item, []) if r != rid]
        if docs.get(item, "").strip():
            options.append(docs[item])
        if options:
            pairs.append((title.strip(), options[int(rng.integers(len(options)))], item))
    return pairs


def distinct_batches(items: list[str], size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Row indices in batches of ``size`` with no item twice in a batch (a row that would repeat one
    waits for the next batch); the last short batch is dropped."""
    waiting: list[int] = []
    for n in rng.permutation(len(items)):
        waiting.append(int(n))
        batch, seen, rest = [], set(), []
        for m in waiting:
            if len(batch) < size and items[m] not in seen:
                batch.append(m)
                seen.add(items[m])
            else:
                rest.append(m)
        if len(batch) == size:
            yield np.asarray(batch)
            waiting = rest


def in_batch_loss(q: torch.Tensor, d: torch.Tensor, scale: float) -> torch.Tensor:
    """Cross-entropy of each query ``(b, dim)`` against the batch's positives ``(b, dim)``: row n's
    positive is row n, every other row a negative (cosine similarities times ``scale``)."""
    sims = torch.nn.functional.normalize(q, dim=-1) @ torch.nn.functional.normalize(d, dim=-1).T
    return torch.nn.functional.cross_entropy(sims * scale, torch.arange(len(q)))


def fine_tune(pairs: list[tuple[str, str, str]], out_dir: str | Path, cfg: EncoderTuneConfig = EncoderTuneConfig(),
              base: str | None = None, progress: bool = True) -> Path:
    """Fine-tune ``base`` (the packaged MiniLM) on ``pairs``; publish ``out_dir/vNNNN``."""
    from sentence_transformers import SentenceTransformer

    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    model = SentenceTransformer(base or minilm_path(), device="cpu")
    serve_tokens = model.max_seq_length
    model.max_seq_length = cfg.max_tokens
    items = [p[2] for p in pairs]
    rng = np.random.default_rng(cfg.seed)
    steps = max(1, int(cfg.epochs * len(pairs) / cfg.batch))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    warm = max(1, int(cfg.warmup * steps))
    # linear warm-up, then linear decay to 0 at the last planned step
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (steps - s) / max(1, steps - warm))))
    started, losses, step = time.perf_counter(), [], 0
    model.train()
    prepare = getattr(model, "preprocess", None) or model.tokenize  # "tokenize" before sentence-transformers 6
    batches = (b for _ in itertools.count() for b in distinct_batches(items, cfg.batch, rng))  # epochs on end
    while step < steps and time.perf_counter() - started < cfg.max_minutes * 60:
        rows = next(batches)
        q = model(prepare([pairs[n][0] for n in rows]))["sentence_embedding"]
        d = model(prepare([pairs[n][1] for n in rows]))["sentence_embedding"]
        loss = in_batch_loss(q, d, cfg.scale)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        step += 1
        if progress and step % 20 == 0:
            print(f"step {step}/{steps} loss {np.mean(losses[-20:]):.3f} "
                  f"{time.perf_counter() - started:.0f}s", flush=True)
    model.eval()
    model.max_seq_length = serve_tokens
    tmp, final = staging(out_dir)
    model.save(str(tmp))
    card = {"kind": "search embedder", "base_model": "all-MiniLM-L6-v2", "pairs": len(pairs), "steps": step,
            "planned_steps": steps, "stopped": "steps" if step >= steps else "time",
            "loss_first_20": round(float(np.mean(losses[:20])), 4),
            "loss_last_20": round(float(np.mean(losses[-20:])), 4),
            "train_seconds": round(time.perf_counter() - started, 1), "config": asdict(cfg), "machine": machine()}
    (tmp / "model_card.json").write_text(json.dumps(card, indent=2))
    return publish(tmp, final)


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(prog="python -m evaluation.search_encoder", description=__doc__.split("\n")[0])
    p.add_argument("--dataset", required=True, choices=sorted(DATASETS))
    p.add_argument("--data-dir", help="shared data root (holding the dataset folders) or one dataset's folder")
    p.add_argument("--out", default="runs/search-encoder")
    p.add_argument("--epochs", type=float, default=EncoderTuneConfig.epochs)
    p.add_argument("--minutes", type=float, default=EncoderTuneConfig.max_minutes)
    p.add_argument("--batch", type=int, default=EncoderTuneConfig.batch)
    p.add_argument("--lr", type=float, default=EncoderTuneConfig.lr)
    p.add_argument("--test-queries", type=int, default=1000, help="search_eval's test sample, kept out")
    p.add_argument("--dev-queries", type=int, default=500, help="search_eval's dev sample, kept out")
    a = p.parse_args(argv)
    root = Path(a.data_dir) if a.data_dir else shared_data_dir()
    folder = root if (root / "SOURCE.md").exists() else root / DATASETS[a.dataset]
    catalog = load_dataset(a.dataset, folder)
    test, dev = test_and_dev(catalog.reviews, a.test_queries, a.dev_queries, 0)
    pairs = training_pairs(catalog, {c.review_id for c in test + dev})
    print(f"{a.dataset}: {len(pairs)} training pairs over {len({q[2] for q in pairs})} items", flush=True)
    cfg = EncoderTuneConfig(epochs=a.epochs, max_minutes=a.minutes, batch=a.batch, lr=a.lr)
    out = fine_tune(pairs, a.out, cfg)
    print(out, (out / "model_card.json").read_text())
    return out


if __name__ == "__main__":
    main()
