"""Distil a split-layer reranker (:mod:`ranker.split`) from a trained cross-encoder.

    python -m ranker.distill --teacher runs/ranker/v0001 --data-dir /work/shared/data/amazon-beauty-2014 \\
        --out runs/ranker --joint-layers 1

Student: :class:`ranker.split.SplitNet` initialised with the teacher's weights (same layers, same
head); only who attends to whom changes, so training starts near the teacher. Data: the teacher's
own training groups and validation lists (:func:`ranker.train.prepare` with the teacher's recorded
settings and split seed), plus ``lists`` extra lists: the text retriever's top-``list_size``
candidates of sampled training histories -- the kind of list the reranker sees when serving.

By default (``train_lower`` False) the student's lower layers and embeddings stay the teacher's:
their states for every context and item are computed once (:class:`LowerCache`), and only the
joint layers and the head train -- ~50x less work per step, which is what 2 shared cores allow.

Loss per list: ``tau^2 * KL(softmax(teacher / tau) || softmax(student / tau))`` (the teacher's
logits, fp32, computed once before training) plus ``hard_weight`` x the listwise cross-entropy of
the observed next item on the training groups (as :mod:`ranker.train`). AdamW, linear warm-up and
decay; every ``eval_every`` steps validation NDCG@10 on ``val_groups`` lists (more than the
teacher's 40, so the 1% comparison is less noisy); the best checkpoint is kept; int8 becomes the
default variant if it keeps NDCG@10 within ``int8_tolerance``. Output: ``out/vNNNN/`` as
:mod:`ranker.train` writes it, ``ranker.json`` with ``architecture: "split"``.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from evaluation.metrics import ndcg_at_k, recall_at_k
from indexer.schema import Catalog
from retriever.collaborative import exclude_items, text_scores, top_k

from .card import model_card_md
from .model import PairEncoder, Reranker, quantize_int8, save_network, write_manifest
from .pairs import Groups, PairConfig, history_context
from .split import SplitNet, from_cross_encoder, pad_batch, stack_states
from .train import TrainConfig, list_loss, list_ranks, machine, next_version, prepare, score_groups

Array = np.ndarray


@dataclass(frozen=True)
class DistillConfig:
    joint_layers: int = 1          # top layers run per pair (the rest: context and item apart)
    query: str = "tokens"          # "tokens": every item token joins; "pooled": one (mean) token per item
    train_lower: bool = False      # False: lower layers stay the teacher's, their states are computed once
    lists: int = 800               # extra retrieved lists of training histories, teacher-labelled
    teacher_variant: str = "int8"  # the teacher's logits: int8 is its served variant and ~3x faster
    list_size: int = 20
    tau: float = 1.0               # distillation temperature
    hard_weight: float = 0.5       # weight of the observed-next-item cross-entropy (training groups)
    lr: float = 1e-4
    head_lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: float = 0.1
    batch_lists: int = 8
    epochs: int = 2
    max_minutes: float = 15.0
    eval_every: int = 100
    patience: int = 4
    val_groups: int = 200          # validation lists scored per check (teacher trained with 40)
    int8_tolerance: float = 0.01
    seed: int = 0
    threads: int = 2


def teacher_config(card: dict) -> TrainConfig:
    """The teacher's TrainConfig from its model card's hyper-parameters."""
    from .model import EncoderConfig

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


def split_group_scores(net: SplitNet, encoder: PairEncoder, groups: Groups, texts: list[str], batch: int = 16,
                       grad: bool = False) -> torch.Tensor:
    """(n, m) logits of every candidate of every group (padding -1 -> -inf), contexts encoded once per group."""
    n, m = groups.items.shape
    out = []
    for start in range(0, n, batch):
        rows = range(start, min(n, start + batch))
        ctx_ids, ctx_mask = pad_batch([[encoder.cls, *encoder.context_ids(groups.contexts[r]), encoder.sep]
                                       for r in rows], encoder.pad)
        items = groups.items[list(rows)]
        r_idx, c_idx = np.nonzero(items >= 0)
        toks = [[*t, encoder.sep] for t in encoder.item_ids([texts[i] for i in items[r_idx, c_idx]])]
        item_ids, item_mask = pad_batch(toks, encoder.pad)
        with torch.set_grad_enabled(grad):
            s = net(ctx_ids, ctx_mask, item_ids, item_mask, torch.as_tensor(r_idx))
        full = torch.full((len(rows), m), -torch.inf)
        full[torch.as_tensor(r_idx), torch.as_tensor(c_idx)] = s
        out.append(full)
    return torch.cat(out) if out else torch.zeros((0, m))


class LowerCache:
    """States after the (frozen) lower layers of every context and item the lists hold, computed once:
    training then runs only the joint layers and the head, ~50x less work per step for 1 of 3 layers."""

    def __init__(self, net: SplitNet, encoder: PairEncoder, texts: list[str]):
        self.net, self.encoder, self.texts = net, encoder, texts
        self.ctx: dict[str, np.ndarray] = {}
        self.items: dict[int, np.ndarray] = {}

    @torch.no_grad()
    def fill(self, groups: Groups, batch: int = 128) -> None:
        enc, was = self.encoder, self.net.training
        self.net.eval()
        todo = [c for c in dict.fromkeys(groups.contexts) if c not in self.ctx]
        for start in range(0, len(todo), batch):
            part = todo[start:start + batch]
            ids, mask = pad_batch([[enc.cls, *enc.context_ids(c), enc.sep] for c in part], enc.pad)
            h = self.net.context_lower(ids, mask).numpy()
            self.ctx.update((c, h[r, : int(mask[r].sum())]) for r, c in enumerate(part))
        items = [int(i) for i in np.unique(groups.items) if i >= 0 and int(i) not in self.items]
        for start in range(0, len(items), batch):
            part = items[start:start + batch]
            toks = [[*t, enc.sep] for t in enc.item_ids([self.texts[i] for i in part])]
            ids, mask = pad_batch(toks, enc.pad)
            store = self.net.item_store(self.net.encode_items(ids, mask), mask).numpy()
            self.items.update((i, store[r, : min(len(toks[r]), store.shape[1])]) for r, i in enumerate(part))
        self.net.train(was)

    def scores(self, groups: Groups, grad: bool = False) -> torch.Tensor:
        """(n, m) logits of every candidate (padding -inf), from the cached lower states."""
        n, m = groups.items.shape
        h, cmask = stack_states([self.ctx[c] for c in groups.contexts])
        r_idx, c_idx = np.nonzero(groups.items >= 0)
        store, imask = stack_states([self.items[int(i)] for i in groups.items[r_idx, c_idx]])
        with torch.set_grad_enabled(grad):
            ctx = self.net.context_upper(h, cmask)
            s = self.net.score_stored(ctx, store, imask, torch.as_tensor(r_idx))
        full = torch.full((n, m), -torch.inf)
        full[torch.as_tensor(r_idx), torch.as_tensor(c_idx)] = s
        return full


def validate(net: SplitNet, encoder: PairEncoder, groups: Groups, texts: list[str],
             cache: LowerCache | None = None) -> dict[str, float]:
    was = net.training
    net.eval()
    if cache is None:
        s = split_group_scores(net, encoder, groups, texts, batch=32).numpy()
    else:
        s = np.concatenate([cache.scores(groups.subset(np.arange(i, min(i + 64, len(groups))))).numpy()
                            for i in range(0, len(groups), 64)])
    net.train(was)
    ranks = list_ranks(s, groups.positive)
    return {"loss": list_loss(s, groups.positive), "ndcg@10": ndcg_at_k(ranks, 10), "recall@10": recall_at_k(ranks, 10)}


def _kl(student: torch.Tensor, teacher: torch.Tensor, tau: float) -> torch.Tensor:
    """Mean over rows of tau^2 KL(softmax(teacher/tau) || softmax(student/tau)); -inf entries are padding."""
    live = torch.isfinite(teacher)
    t = torch.log_softmax(teacher.masked_fill(~live, -1e9) / tau, dim=1)
    s = torch.log_softmax(student.masked_fill(~live, -1e9) / tau, dim=1)
    return (tau ** 2) * (t.exp() * (t - s)).masked_fill(~live, 0.0).sum(1).mean()


def fit(net: SplitNet, encoder: PairEncoder, train: Groups, soft: Array, valid: Groups, texts: list[str],
        cfg: DistillConfig) -> dict:
    """Train ``net`` in place on ``train`` lists (positive column, -1 = none) with teacher logits ``soft``."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng([cfg.seed, 71])
    net.encoder.embeddings.word_embeddings.weight.requires_grad_(False)
    cache = None
    if not cfg.train_lower:
        for p in [*net.encoder.embeddings.parameters(), *net.layers[: net.lower].parameters()]:
            p.requires_grad_(False)
        cache = LowerCache(net, encoder, texts)
        t0 = time.perf_counter()
        cache.fill(train)
        cache.fill(valid)
        print(f"lower-layer states of {len(cache.ctx)} contexts and {len(cache.items)} items in "
              f"{time.perf_counter() - t0:.0f} s", flush=True)

    def scores(part: Groups, grad: bool) -> torch.Tensor:
        if cache is not None:
            return cache.scores(part, grad)
        return split_group_scores(net, encoder, part, texts, batch=len(part), grad=grad)

    head = {id(p) for p in net.head_parameters()}
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW([{"params": [p for p in params if id(p) not in head], "lr": cfg.lr},
                             {"params": net.head_parameters(), "lr": cfg.head_lr, "weight_decay": 0.0}],
                            weight_decay=cfg.weight_decay)
    per_epoch = math.ceil(len(train) / cfg.batch_lists)
    total = max(1, per_epoch * cfg.epochs)
    warm = max(1, int(cfg.warmup * total))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (total - s) / max(1, total - warm))))
    first = validate(net, encoder, valid, texts, cache)
    record: dict = {"curve": [{"step": 0, "train_loss": None, **first}], "steps_planned": total, "stopped": "completed"}
    best, best_state, bad, best_step, step, running = first["ndcg@10"], copy.deepcopy(net.state_dict()), 0, 0, 0, []
    started, train_s, pairs_seen = time.perf_counter(), 0.0, 0
    net.train()
    for _ in range(cfg.epochs):
        for idx in np.array_split(rng.permutation(len(train)), per_epoch):
            t0 = time.perf_counter()
            part = train.subset(idx)
            s = scores(part, True)
            loss = _kl(s, torch.as_tensor(soft[idx]), cfg.tau)
            hard = part.positive >= 0
            if hard.any() and cfg.hard_weight:
                loss = loss + cfg.hard_weight * torch.nn.functional.cross_entropy(
                    s[torch.as_tensor(hard)], torch.as_tensor(part.positive[hard]))
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            step, pairs_seen = step + 1, pairs_seen + int((part.items >= 0).sum())
            running.append(loss.item())
            train_s += time.perf_counter() - t0
            minutes = (time.perf_counter() - started) / 60
            if step % cfg.eval_every == 0 or step == total or minutes >= cfg.max_minutes:
                v = validate(net, encoder, valid, texts, cache)
                record["curve"].append({"step": step, "train_loss": float(np.mean(running)), **v})
                print(f"step {step}/{total}: train loss {np.mean(running):.4f}, val NDCG@10 {v['ndcg@10']:.4f}",
                      flush=True)
                running = []
                if v["ndcg@10"] > best:
                    best, best_state, bad, best_step = v["ndcg@10"], copy.deepcopy(net.state_dict()), 0, step
                else:
                    bad += 1
                if step < total and bad >= cfg.patience:
                    record["stopped"] = f"early stop: {bad} checks without NDCG@10 gain"
                elif step < total and minutes >= cfg.max_minutes:
                    record["stopped"] = f"time budget {cfg.max_minutes} min"
                if record["stopped"] != "completed":
                    break
        if record["stopped"] != "completed":
            break
    net.load_state_dict(best_state)
    net.eval()
    record.update(steps=step, best_step=best_step, pairs_seen=pairs_seen, best_val_ndcg=best,
                  train_seconds=round(train_s, 1), wall_seconds=round(time.perf_counter() - started, 1),
                  train_pairs_per_s=round(pairs_seen / max(train_s, 1e-9), 2), device="cpu")
    return record


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
    record = fit(net, encoder, train, soft, data.valid, data.full_texts, cfg)
    fp32 = validate(net, encoder, data.valid, data.full_texts)
    int8 = validate(quantize_int8(net), encoder, data.valid, data.full_texts)
    inference = "int8" if int8["ndcg@10"] >= (1 - cfg.int8_tolerance) * fp32["ndcg@10"] else "fp32"
    root = Path(out_dir)
    final = next_version(root)
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
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
    for f in tmp.rglob("*"):
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    os.replace(tmp, final)
    return final


def _teacher_logits(teacher: Reranker, cfg: DistillConfig, lists: Groups, texts: list[str],
                    cache_dir: str | None) -> Array:
    """(n, m) teacher logits of ``lists``, cached as .npy under ``cache_dir`` keyed by the teacher's
    weights, the variant and the pairs (minutes on 2 cores; several students share them)."""
    import hashlib

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
        np.save(cache.with_suffix(".tmp.npy"), soft)
        cache.with_suffix(".tmp.npy").replace(cache)
    return soft


def _validate_cross(teacher: Reranker, groups: Groups, texts: list[str]) -> dict[str, float]:
    s = score_groups(teacher.net, teacher.encoder, groups, texts)
    ranks = list_ranks(s, groups.positive)
    return {"loss": list_loss(s, groups.positive), "ndcg@10": ndcg_at_k(ranks, 10), "recall@10": recall_at_k(ranks, 10)}


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(prog="python -m ranker.distill", description="Distil a split-layer reranker.")
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
                        max_minutes=a.minutes,
                        seed=a.seed)
    out = distill(load_dataset(a.dataset, a.data_dir), a.teacher, a.out, cfg,
                  command="python -m ranker.distill " + " ".join(argv or []))
    print(out)
    print((out / "MODEL_CARD.md").read_text())
    return out


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
