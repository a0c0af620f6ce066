"""Fine-tune the cross-encoder reranker on interaction sequences (``semrec train-ranker``).

    python -m ranker.train --data-dir /work/shared/data/amazon-beauty-2014 --out runs/ranker

Model: all-MiniLM-L6-v2 (the packaged weights) as a cross-encoder, :class:`ranker.model.CrossEncoderNet`
(the encoder reads ``[CLS] context [SEP] item [SEP]``; its head starts from the cosine of the two
segments' mean states, see there), trained with a plain torch loop: less overhead than the
sentence-transformers ``CrossEncoder`` trainer on 2 CPU cores, and it reuses cached token ids.
A ``CrossEncoder(minilm_path(), num_labels=1)`` head on the untrained [CLS] pooler barely learned
in the few thousand groups this machine can afford (logits stayed flat over 15 steps). Only the
first ``num_layers`` encoder layers are kept and the word-embedding table is frozen: both cut CPU
time, the second also keeps the 11.7M-parameter table out of the optimiser.

Loss: listwise softmax cross-entropy over each group (positive + negatives, see
:mod:`ranker.pairs`); AdamW with linear warm-up and decay. Every ``eval_every`` steps the model
scores the validation lists (each validation user's retrieved candidates that contain its
second-last item) and records validation loss and NDCG@10; training stops after ``patience``
checks without improvement or at ``max_minutes``, and the best checkpoint is kept. Then the int8
variant is scored on the same lists: it becomes the default inference variant if its NDCG@10 is
within ``int8_tolerance`` (relative) of fp32.

Output: ``out/vNNNN/`` (next free number), written in a temporary folder and renamed when
complete, with ``ranker.json``, ``model/``, ``MODEL_CARD.md`` and ``model_card.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from evaluation.metrics import ndcg_at_k, recall_at_k
from evaluation.protocol import Split, leave_one_out, sequences_from_reviews
from indexer.schema import Catalog
from retriever.collaborative import Markov, exclude_items, text_scores, top_k

from .card import model_card_md
from .model import EncoderConfig, PairEncoder, build_network, quantize_int8, save_network, score_pairs, write_manifest
from .pairs import (
    Groups,
    PairConfig,
    candidate_groups,
    catalog_item_vectors,
    texts_by_index,
    training_groups,
)

Array = np.ndarray


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides the trained model. Defaults: the documented Beauty run on 2 CPU cores."""

    pairs: PairConfig = field(default_factory=PairConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    base_model: str = ""              # Hugging Face directory; "" = the packaged all-MiniLM-L6-v2
    num_layers: int = 3               # encoder layers kept (MiniLM has 6)
    freeze_embeddings: bool = True    # word-embedding table frozen (position/type embeddings train)
    lr: float = 5e-5                  # encoder
    head_lr: float = 1e-3             # scoring head (fresh weights learn faster)
    weight_decay: float = 0.01
    warmup: float = 0.1               # share of steps with linearly rising learning rate
    batch_groups: int = 4             # groups per optimiser step (x group_size pairs)
    epochs: int = 1
    max_minutes: float = 30.0         # wall-clock budget of the training loop
    eval_every: int = 50              # steps between validation checks
    patience: int = 3                 # checks without NDCG@10 gain before stopping
    val_users: int = 2000             # validation users sampled (seeded) before keeping lists with a hit
    val_candidates: int = 20          # retrieved candidates per validation list
    max_val_groups: int = 40          # validation lists scored per check
    int8_tolerance: float = 0.02      # int8 kept if its val NDCG@10 >= (1 - tol) * fp32's
    split_seed: int = 0               # leave-one-out split seed (= evaluation's)
    seed: int = 0
    threads: int = 2


@dataclass
class Prepared:
    """Data of one training run: split, texts, vectors and the groups built from them."""

    split: Split
    full_texts: list[str]
    short_texts: list[str]
    item_vectors: Array | None
    train: Groups
    valid: Groups
    valid_retrieval_ndcg: float  # NDCG@10 of the retrieval order on the validation lists


def beauty_split(catalog: Catalog, seed: int = 0) -> tuple[Split, list[Array]]:
    """The leave-one-out split over all users (evaluation's default cold slices) + raw sequences."""
    sequences, item_ids, user_ids = sequences_from_reviews(catalog.reviews)
    return leave_one_out(sequences, item_ids, user_ids, seed=seed), sequences


def prepare(catalog: Catalog, cfg: TrainConfig, item_vectors: Array | None = None,
            vector_cache: str | None = "runs/cache") -> Prepared:
    """Split, texts, item vectors (built if not given), training and validation groups."""
    split, sequences = beauty_split(catalog, cfg.split_seed)
    full, short = texts_by_index(catalog.items, split.item_ids.tolist(), cfg.pairs)
    if item_vectors is None:
        item_vectors = catalog_item_vectors(catalog.items, split.item_ids.tolist(), cache_dir=vector_cache)
    covisit = Markov(window=10, decay=0.8, symmetric=True).fit(split.fit, split.n_items)
    train = training_groups(split.fit, short, item_vectors, cfg.pairs, covisit=covisit)
    valid = validation_groups(split, short, item_vectors, cfg)
    return Prepared(split, full, short, item_vectors, train, valid, ndcg_at_k(valid.positive, 10))


def validation_groups(split: Split, short_texts: list[str], item_vectors: Array, cfg: TrainConfig) -> Groups:
    """Validation lists: a seeded sample of ``cfg.val_users`` evaluated users, each list = the text
    retriever's top ``cfg.val_candidates`` for the user's validation history, kept if it holds the
    validation item; the first ``cfg.max_val_groups`` lists."""
    rng = np.random.default_rng([cfg.seed, 21])
    pick = np.sort(rng.choice(len(split.users), size=min(cfg.val_users, len(split.users)), replace=False))
    hist = [split.valid_history[e] for e in pick]
    scores = exclude_items(text_scores(hist, item_vectors, cfg.pairs.text_decay), hist)
    cands = top_k(scores, cfg.val_candidates)[0]
    valid, _ = candidate_groups(hist, split.valid_target[pick], cands, short_texts, cfg.pairs.history_items,
                                users=split.users[pick])
    return valid.subset(np.arange(min(len(valid), cfg.max_val_groups)))


# ----------------------------------------------------------------------------- list metrics
def list_ranks(scores: Array, positive: Array) -> Array:
    """0-based rank of column ``positive[i]`` in row i of ``scores`` (n, m); ties -> earlier column first."""
    n, m = scores.shape
    s_t = scores[np.arange(n), positive][:, None]
    cols = np.arange(m)[None, :]
    return ((scores > s_t) | ((scores == s_t) & (cols < positive[:, None]))).sum(axis=1).astype(np.int64)


def list_loss(scores: Array, positive: Array) -> float:
    """Mean listwise softmax cross-entropy of the positives, in nats."""
    s = scores.astype(np.float64)
    s = s - s.max(axis=1, keepdims=True)
    logz = np.log(np.exp(s).sum(axis=1))
    return float(np.mean(logz - s[np.arange(len(s)), positive]))


def score_groups(net, encoder: PairEncoder, groups: Groups, texts: list[str], batch_size: int = 64,
                 device: str = "cpu") -> Array:
    """(n, m) float32 logits of every candidate of every group (padding -1 -> -inf)."""
    n, m = groups.items.shape
    valid = groups.items >= 0
    rows, cols = np.nonzero(valid)
    flat = score_pairs(net, encoder, [groups.contexts[r] for r in rows],
                       [texts[i] for i in groups.items[rows, cols]], batch_size, device)
    out = np.full((n, m), -np.inf, dtype=np.float32)
    out[rows, cols] = flat
    return out


def validate(net, encoder: PairEncoder, groups: Groups, texts: list[str], device: str = "cpu") -> dict[str, float]:
    """Validation loss and NDCG@10 / Recall@10 within the validation lists."""
    was = net.training
    net.eval()
    s = score_groups(net, encoder, groups, texts, device=device)
    net.train(was)
    ranks = list_ranks(s, groups.positive)
    return {"loss": list_loss(s, groups.positive), "ndcg@10": ndcg_at_k(ranks, 10), "recall@10": recall_at_k(ranks, 10)}


# ----------------------------------------------------------------------------- training
def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def fit(net, encoder: PairEncoder, train: Groups, valid: Groups, texts: list[str], cfg: TrainConfig,
        progress: bool = True) -> dict:
    """Train ``net`` in place (best checkpoint restored). Returns the training record."""
    device = _device()
    net.to(device)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng([cfg.seed, 31])
    if cfg.freeze_embeddings:
        net.encoder.embeddings.word_embeddings.weight.requires_grad_(False)
    params = [p for p in net.parameters() if p.requires_grad]
    head = {id(p) for p in net.head_parameters()}
    opt = torch.optim.AdamW([{"params": [p for p in params if id(p) not in head], "lr": cfg.lr},
                             {"params": net.head_parameters(), "lr": cfg.head_lr, "weight_decay": 0.0}],
                            weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(train) / cfg.batch_groups)
    total = max(1, steps_per_epoch * cfg.epochs)
    warm = max(1, int(cfg.warmup * total))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (total - s) / max(1, total - warm))))
    g = train.items.shape[1]
    record: dict = {"curve": [], "steps_planned": total, "stopped": "completed"}
    first = validate(net, encoder, valid, texts, device)
    record["curve"].append({"step": 0, "train_loss": None, **first})
    best, best_state, bad = first["ndcg@10"], copy.deepcopy(net.state_dict()), 0
    best_step, step, pairs_seen, started = 0, 0, 0, time.perf_counter()
    train_seconds, running = 0.0, []
    bar = tqdm(total=total, desc="train-ranker", disable=not progress)
    net.train()
    stop = False
    for _epoch in range(cfg.epochs):
        for idx in np.array_split(rng.permutation(len(train)), steps_per_epoch):
            t0 = time.perf_counter()
            contexts = [train.contexts[i] for i in idx for _ in range(g)]
            items = [texts[j] for j in train.items[idx].ravel()]
            feats = {k: v.to(device) for k, v in encoder.batch(contexts, items).items()}
            logits = net(**feats).view(len(idx), g)
            loss = torch.nn.functional.cross_entropy(logits, torch.as_tensor(train.positive[idx], device=device))
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            step += 1
            pairs_seen += len(contexts)
            running.append(loss.item())
            train_seconds += time.perf_counter() - t0
            bar.update(1)
            minutes = (time.perf_counter() - started) / 60
            if step % cfg.eval_every == 0 or step == total or minutes >= cfg.max_minutes:
                v = validate(net, encoder, valid, texts, device)
                record["curve"].append({"step": step, "train_loss": float(np.mean(running)), **v})
                running = []
                bar.set_postfix(val_loss=f"{v['loss']:.3f}", ndcg=f"{v['ndcg@10']:.4f}")
                if v["ndcg@10"] > best:
                    best, best_state, bad, best_step = v["ndcg@10"], copy.deepcopy(net.state_dict()), 0, step
                else:
                    bad += 1
                if step == total:
                    pass  # all planned steps ran: "completed"
                elif bad >= cfg.patience:
                    record["stopped"], stop = f"early stop: {bad} checks without NDCG@10 gain", True
                elif minutes >= cfg.max_minutes:
                    record["stopped"], stop = f"time budget {cfg.max_minutes} min", True
            if stop:
                break
        if stop:
            break
    bar.close()
    net.load_state_dict(best_state)
    net.eval()
    record.update(steps=step, best_step=best_step, pairs_seen=pairs_seen, best_val_ndcg=best,
                  train_seconds=round(train_seconds, 1), wall_seconds=round(time.perf_counter() - started, 1),
                  train_pairs_per_s=round(pairs_seen / max(train_seconds, 1e-9), 2), device=device)
    return record


def next_version(root: Path) -> Path:
    """``root/vNNNN`` with the next free number."""
    root.mkdir(parents=True, exist_ok=True)
    numbers = [int(d.name[1:]) for d in root.iterdir() if d.name.startswith("v") and d.name[1:].isdigit()]
    return root / f"v{max(numbers, default=0) + 1:04d}"


def machine() -> dict:
    cpu = ""
    if Path("/proc/cpuinfo").exists():
        cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                    if ln.startswith("model name")), "")
    return {"cpu": cpu, "cpus": len(os.sched_getaffinity(0)), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "python": platform.python_version(), "load_avg_1m_at_end": round(os.getloadavg()[0], 2)}


def train_ranker(catalog: Catalog, out_dir: str | os.PathLike = "runs/ranker", cfg: TrainConfig = TrainConfig(),
                 *, item_vectors: Array | None = None, vector_cache: str | None = "runs/cache",
                 progress: bool = True, command: str = "") -> Path:
    """Train a reranker on ``catalog``'s interactions and publish it as ``out_dir/vNNNN``.

    Args:
        catalog: items + reviews (interactions in time order; see :mod:`ranker.pairs`).
        out_dir: root of the versioned model directories.
        cfg: all settings; the defaults are the documented Beauty run.
        item_vectors: (n_items, d) float32 unit vectors in ``sequences_from_reviews`` item order;
            built with the MiniLM embedder (and cached under ``vector_cache``) when None.
        command: the command line, recorded in the model card.

    Returns the published version directory.
    """
    started = time.perf_counter()
    torch.set_num_threads(cfg.threads)
    data = prepare(catalog, cfg, item_vectors, vector_cache)
    prep_seconds = time.perf_counter() - started
    net, tok = build_network(cfg.base_model or _minilm(), cfg.num_layers)
    encoder = PairEncoder(tok, cfg.encoder)
    record = fit(net, encoder, data.train, data.valid, data.full_texts, cfg, progress)
    net.cpu()
    fp32 = validate(net, encoder, data.valid, data.full_texts)
    int8 = validate(quantize_int8(net), encoder, data.valid, data.full_texts)
    inference = "int8" if int8["ndcg@10"] >= (1 - cfg.int8_tolerance) * fp32["ndcg@10"] else "fp32"
    root = Path(out_dir)
    final = next_version(root)
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_network(net, tok, tmp / "model")
    split = data.split
    card = {
        "version": final.name,
        "command": command,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "data": {"source": catalog.source, "n_items": split.n_items, "n_users": len(split.user_ids),
                 "n_interactions": int(len(catalog.reviews)), "n_fit_sequences": len(split.fit),
                 "split": f"leave-one-out (seed {cfg.split_seed}): train = fit sequences (last two items held "
                          "out), validation = second-last item, test = last item; 10% cold items and 10% "
                          "simulated cold users as in evaluation.protocol"},
        "subsample": {"train_users": int(len(np.unique(data.train.users))), "train_groups": len(data.train),
                      "group_size": int(data.train.items.shape[1]), "train_pairs": int(data.train.items.size),
                      "pairs_seen": record["pairs_seen"], "val_users_sampled": cfg.val_users,
                      "val_groups": len(data.valid), "val_candidates": cfg.val_candidates},
        "hyperparameters": asdict(cfg),
        "validation": {"retrieval_order": {"ndcg@10": data.valid_retrieval_ndcg}, "fp32": fp32, "int8": int8,
                       "curve": record["curve"]},
        "inference": inference,
        "training": {k: record[k] for k in ("steps", "steps_planned", "best_step", "stopped", "train_seconds",
                                            "wall_seconds", "train_pairs_per_s", "device")},
        "prepare_seconds": round(prep_seconds, 1),
        "total_seconds": round(time.perf_counter() - started, 1),
        "machine": machine(),
    }
    write_manifest(tmp, encoder=cfg.encoder, num_layers=cfg.num_layers, base_model=cfg.base_model or "all-MiniLM-L6-v2",
                   inference=inference, text={"history_items": cfg.pairs.history_items,
                                              "words_per_item": cfg.pairs.words_per_item},
                   extra={"validation": {"fp32": fp32, "int8": int8}})
    (tmp / "model_card.json").write_text(json.dumps(card, indent=2))
    (tmp / "MODEL_CARD.md").write_text(model_card_md(card))
    for f in [*tmp.rglob("*")]:
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    os.replace(tmp, final)
    return final


def _minilm() -> str:
    from indexer.embed import minilm_path

    return minilm_path()


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(prog="python -m ranker.train", description="Fine-tune the reranker.")
    p.add_argument("--data-dir", required=True, help="Beauty folder (or any folder load_catalog reads)")
    p.add_argument("--dataset", default="beauty")
    p.add_argument("--out", default="runs/ranker")
    p.add_argument("--users", type=int, default=PairConfig.users, help="training users sampled")
    p.add_argument("--layers", type=int, default=TrainConfig.num_layers)
    p.add_argument("--minutes", type=float, default=TrainConfig.max_minutes)
    p.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    p.add_argument("--eval-every", type=int, default=TrainConfig.eval_every)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    from indexer.loaders import load_dataset

    cfg = TrainConfig(pairs=PairConfig(users=a.users, seed=a.seed), num_layers=a.layers, max_minutes=a.minutes,
                      epochs=a.epochs, eval_every=a.eval_every, seed=a.seed)
    catalog = load_dataset(a.dataset, a.data_dir)
    out = train_ranker(catalog, a.out, cfg, command="python -m ranker.train " + " ".join(argv or []))
    print(out)
    print((out / "MODEL_CARD.md").read_text())
    return out


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
