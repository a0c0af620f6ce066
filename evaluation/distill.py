"""Distil a split-layer reranker (:mod:`ranker.split`) from a trained cross-encoder.

    python -m evaluation.distill --teacher runs/ranker/v0001 --data-dir ../shared/data/amazon-beauty-2014 \\
        --out runs/ranker --joint-layers 1 [--query pooled]

Data: the teacher's own training groups and validation lists (:func:`evaluation.training.prepare`
with the teacher's recorded settings and split seed), plus ``lists`` extra lists: the text
retriever's top-``list_size`` candidates of sampled training histories -- the kind of list the
reranker sees when serving. The teacher's logits (``teacher_variant``, int8 by default: its served
variant and ~3x faster) are computed once and cached. The loop (:func:`ranker.distill.fit`) is
validated on ``val_groups`` lists (more than the teacher's 40, so a 1% comparison is less noisy);
int8 becomes the default variant if it keeps NDCG@10 within ``int8_tolerance``. Output:
``out/vNNNN/`` as :func:`evaluation.training.train_ranker` writes it, ``ranker.json`` with
``architecture: "split"``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from indexer.files import replacing
from indexer.results import top_k
from indexer.schema import Catalog
from ranker.card import model_card_md
from ranker.distill import DistillConfig, fit, group_scores
from ranker.model import Reranker, write_manifest
from ranker.network import EncoderConfig, quantize_int8, save_network
from ranker.pairs import Groups, PairConfig
from ranker.split import from_cross_encoder
from ranker.texts import history_context
from ranker.train import TrainConfig, score_groups
from retriever.collaborative import exclude_items, text_scores

from .training import list_metrics, machine, prepare, publish, staging

Array = np.ndarray


def teacher_config(card: dict) -> TrainConfig:
    """The teacher's TrainConfig from its model card's hyper-parameters."""
    hp = dict(card["hyperparameters"])
    return TrainConfig(**{**hp, "pairs": PairConfig(**hp["pairs"]), "encoder": EncoderConfig(**hp["encoder"])})


def retrieved_lists(fit: list[Array], short: list[str], vectors: Array, cfg: TrainConfig, n: int, m: int,
                    seed: int) -> Groups:
    """``n`` lists: for sampled fit sequences, context = all but the last item, candidates = text top-m."""
    rng = np.random.default_rng([seed, 61])
    eligible = np.flatnonzero([len(s) >= 2 for s in fit])
    pick = np.sort(rng.choice(eligible, size=min(n, len(eligible)), replace=False))
    hist = [fit[u][:-1] for u in pick]
    cands = top_k(exclude_items(text_scores(hist, vectors, cfg.pairs.text_decay), hist), m)[0]
    contexts = [history_context(h, short, cfg.pairs.history_items) for h in hist]
    return Groups(contexts, cands, np.full(len(pick), -1, dtype=np.int64), pick.astype(np.int64))


def distill(catalog: Catalog, teacher_path: str | os.PathLike, out_dir: str | os.PathLike = "runs/ranker",
            cfg: DistillConfig = DistillConfig(), *, item_vectors: Array | None = None,
            vector_cache: str | None = "runs/cache", command: str = "") -> Path:
    """Distil a split reranker from the cross-encoder at ``teacher_path``; publish ``out_dir/vNNNN``."""
    started = time.perf_counter()
    torch.set_num_threads(cfg.threads)
    teacher = Reranker(teacher_path, variant="fp32")
    if teacher.architecture != "cross":
        raise ValueError(f"the teacher at {teacher.path} is a {teacher.architecture!r} reranker, not a cross-encoder")
    tcard = json.loads((teacher.path / "model_card.json").read_text())
    tcfg = teacher_config(tcard)
    data = prepare(catalog, replace(tcfg, max_val_groups=cfg.val_groups), item_vectors, vector_cache)
    extra = retrieved_lists(data.split.fit, data.short_texts, data.item_vectors, tcfg, cfg.lists, cfg.list_size,
                            cfg.seed)
    g = data.train.items.shape[1]
    width = max(g, cfg.list_size)

    def widen(x: Array, fill: int) -> Array:
        return np.pad(x, ((0, 0), (0, width - x.shape[1])), constant_values=fill)

    train = Groups(data.train.contexts + extra.contexts,
                   np.concatenate([widen(data.train.items, -1), widen(extra.items, -1)]),
                   np.concatenate([data.train.positive, extra.positive]),
                   np.concatenate([data.train.users, extra.users]))
    t0 = time.perf_counter()
    soft = _teacher_logits(teacher, cfg, train, data.full_texts, vector_cache)
    teacher_s = time.perf_counter() - t0
    teacher_val = {"fp32": _validate_cross(teacher, data.valid, data.full_texts)}
    print(f"teacher logits for {int((train.items >= 0).sum())} pairs in {teacher_s:.0f} s; teacher val NDCG@10 "
          f"{teacher_val['fp32']['ndcg@10']:.4f} on {len(data.valid)} lists", flush=True)
    net = from_cross_encoder(teacher.net, cfg.joint_layers, tcfg.encoder.context_tokens + 2, cfg.query)
    encoder = teacher.encoder
    prep_s = time.perf_counter() - started
    record = fit(net, encoder, train, soft, data.valid, data.full_texts, cfg, list_metrics)
    fp32 = list_metrics(group_scores(net, encoder, data.valid, data.full_texts), data.valid.positive)
    int8 = list_metrics(group_scores(quantize_int8(net), encoder, data.valid, data.full_texts), data.valid.positive)
    inference = "int8" if int8["ndcg@10"] >= (1 - cfg.int8_tolerance) * fp32["ndcg@10"] else "fp32"
    tmp, final = staging(out_dir)
    save_network(net, teacher.encoder.tokenizer, tmp / "model")
    split = data.split
    card = {
        "version": final.name, "command": command, "architecture": "split",
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "teacher": {"path": str(teacher.path), "validation": teacher_val, "logit_seconds": round(teacher_s, 1)},
        "data": {**tcard["data"], "n_fit_sequences": len(split.fit)},
        "subsample": {**tcard["subsample"], "train_groups": len(data.train), "extra_lists": len(extra),
                      "list_size": cfg.list_size, "train_pairs": int((train.items >= 0).sum()),
                      "pairs_seen": record["pairs_seen"], "val_groups": len(data.valid)},
        "hyperparameters": {**asdict(tcfg), "num_layers": tcfg.num_layers, "distill": asdict(cfg)},
        "validation": {"retrieval_order": {"ndcg@10": data.valid_retrieval_ndcg}, "fp32": fp32, "int8": int8,
                       "curve": record["curve"]},
        "inference": inference,
        "training": {k: record[k] for k in ("steps", "steps_planned", "best_step", "stopped", "train_seconds",
                                            "wall_seconds", "train_pairs_per_s", "device")},
        "prepare_seconds": round(prep_s, 1), "total_seconds": round(time.perf_counter() - started, 1),
        "machine": machine(),
    }
    write_manifest(tmp, encoder=tcfg.encoder, num_layers=tcfg.num_layers, base_model=str(teacher.path),
                   inference=inference, architecture="split", text=teacher.meta["text"],
                   extra={"joint_layers": cfg.joint_layers, "query": cfg.query,
                          "validation": {"fp32": fp32, "int8": int8},
                          "teacher_validation": teacher_val})
    (tmp / "model_card.json").write_text(json.dumps(card, indent=2))
    (tmp / "MODEL_CARD.md").write_text(model_card_md(card))
    return publish(tmp, final)


def _teacher_logits(teacher: Reranker, cfg: DistillConfig, lists: Groups, texts: list[str],
                    cache_dir: str | None) -> Array:
    """(n, m) teacher logits of ``lists``, cached as .npy under ``cache_dir`` keyed by the teacher's
    weights, the variant and the pairs (minutes on 2 cores; several students share them)."""
    h = hashlib.sha256(cfg.teacher_variant.encode())
    h.update((teacher.path / "model" / "head.pt").read_bytes())
    for f in sorted((teacher.path / "model").glob("*.safetensors")):
        h.update(f.read_bytes())
    h.update(lists.items.tobytes())
    for c in lists.contexts:
        h.update(c.encode())
    cache = Path(cache_dir) / f"teacher-logits-{h.hexdigest()[:16]}.npy" if cache_dir else None
    if cache is not None and cache.exists():
        return np.load(cache)
    labeller = teacher if cfg.teacher_variant == "fp32" else Reranker(teacher.path, variant=cfg.teacher_variant)
    soft = score_groups(labeller.net, labeller.encoder, lists, texts)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with replacing(cache) as tmp, open(tmp, "wb") as fh:
            np.save(fh, soft)
    return soft


def _validate_cross(teacher: Reranker, groups: Groups, texts: list[str]) -> dict[str, float]:
    return list_metrics(score_groups(teacher.net, teacher.encoder, groups, texts), groups.positive)


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(prog="python -m evaluation.distill", description="Distil a split-layer reranker.")
    p.add_argument("--teacher", required=True, help="a cross-encoder version dir (or a root: newest version)")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--dataset", default="beauty")
    p.add_argument("--out", default="runs/ranker")
    p.add_argument("--joint-layers", type=int, default=DistillConfig.joint_layers)
    p.add_argument("--query", choices=("tokens", "pooled"), default=DistillConfig.query)
    p.add_argument("--lists", type=int, default=DistillConfig.lists)
    p.add_argument("--epochs", type=int, default=DistillConfig.epochs)
    p.add_argument("--minutes", type=float, default=DistillConfig.max_minutes)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    from indexer.loaders import load_dataset

    cfg = DistillConfig(joint_layers=a.joint_layers, query=a.query, lists=a.lists, epochs=a.epochs,
                        max_minutes=a.minutes, seed=a.seed)
    out = distill(load_dataset(a.dataset, a.data_dir), a.teacher, a.out, cfg,
                  command="python -m evaluation.distill " + " ".join(argv or []))
    print(out)
    print((out / "MODEL_CARD.md").read_text())
    return out


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
