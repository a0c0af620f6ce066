"""Training jobs that need a time split and validation metrics: the cross-encoder reranker
(``semrec train-ranker``).

    python -m evaluation.training --data-dir ../shared/data/amazon-beauty-2014 --out runs/ranker

Split: leave-one-out (``evaluation.protocol``): training groups from the fit sequences, validation
lists from each validation user's text-retrieved candidates that contain its second-last item.
After training the int8 variant is scored on the same lists: it becomes the default inference
variant if its NDCG@10 is within ``int8_tolerance`` (relative) of fp32. Output: ``out/vNNNN/``
(next free number), written in a temporary folder and renamed when complete, with
``ranker.json``, ``model/``, ``MODEL_CARD.md`` and ``model_card.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from indexer.build import catalog_item_vectors
from indexer.results import top_k
from indexer.schema import Catalog
from ranker.card import model_card_md
from ranker.model import write_manifest
from ranker.network import PairEncoder, build_network, quantize_int8, save_network
from ranker.pairs import Groups, PairConfig, candidate_groups, texts_by_index, training_groups
from ranker.train import TrainConfig, fit, list_loss, list_ranks, score_groups
from ranker.versions import next_version
from retriever.collaborative import Markov, exclude_items, text_scores

from .metrics import ndcg_at_k, recall_at_k
from .protocol import Split, leave_one_out, sequences_from_reviews

Array = np.ndarray


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


def list_metrics(scores: Array, positive: Array) -> dict[str, float]:
    """Loss and NDCG@10 / Recall@10 of lists scored ``scores`` (n, m) whose positive is column ``positive`` (n,)."""
    ranks = list_ranks(scores, positive)
    return {"loss": list_loss(scores, positive), "ndcg@10": ndcg_at_k(ranks, 10), "recall@10": recall_at_k(ranks, 10)}


def validate(net, encoder: PairEncoder, groups: Groups, texts: list[str], device: str = "cpu") -> dict[str, float]:
    """Validation loss and NDCG@10 / Recall@10 within the validation lists."""
    was = net.training
    net.eval()
    s = score_groups(net, encoder, groups, texts, device=device)
    net.train(was)
    return list_metrics(s, groups.positive)


def staging(out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """``(tmp, final)``: an empty temporary folder to write a version in, and the ``vNNNN`` it becomes."""
    root = Path(out_dir)
    final = next_version(root)
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp, final


def publish(tmp: Path, final: Path) -> Path:
    """Flush every file of ``tmp`` to disk, then rename it to ``final`` (a reader sees all or nothing)."""
    for f in [*tmp.rglob("*")]:
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    os.replace(tmp, final)
    return final


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
    device = "cuda" if torch.cuda.is_available() else "cpu"
    record = fit(net, encoder, data.train, lambda m: validate(m, encoder, data.valid, data.full_texts, device),
                 data.full_texts, cfg, progress)
    net.cpu()
    fp32 = validate(net, encoder, data.valid, data.full_texts)
    int8 = validate(quantize_int8(net), encoder, data.valid, data.full_texts)
    inference = "int8" if int8["ndcg@10"] >= (1 - cfg.int8_tolerance) * fp32["ndcg@10"] else "fp32"
    tmp, final = staging(out_dir)
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
    return publish(tmp, final)


def _minilm() -> str:
    from indexer.embed import minilm_path

    return minilm_path()


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(prog="python -m evaluation.training", description="Fine-tune the reranker.")
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
    out = train_ranker(catalog, a.out, cfg, command="python -m evaluation.training " + " ".join(argv or []))
    print(out)
    print((out / "MODEL_CARD.md").read_text())
    return out


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
