"""Reranker speed and quality in one run (a script, not a test): ``semrec bench rerank``.

    semrec bench rerank --cross runs/ranker/v0001 --split runs/ranker/v0002 [--split …] [--lists 200] [--repeats 20]

1. Peaks, measured here on ``--threads`` (2) threads: fp32 GEMM (2048^3 ``torch.matmul``) and an
   int8 dynamically quantised Linear (``torch.ao`` dynamic ``Linear`` 2048 x 2048 over 2048 rows,
   counted as the fp32 FLOPs it replaces), best of 5.
2. Real pairs: Beauty validation lists (the training split and seed of the cross-encoder's model
   card; each list = the text retriever's top ``--candidates`` (50) for a validation user's history,
   kept if it holds the validation item), contexts built as in training.
3. Variants, measured interleaved (one request of each in turn, so load from other jobs hits all
   alike): ``cross`` (the cross-encoder, the teacher and reference) and ``split`` (split-layer late
   interaction, its items' lower states precomputed by ``Reranker.attach`` on an index of the whole
   catalog), each fp32 and int8; and the peer, a sentence-transformers ``CrossEncoder`` over the
   cross-encoder's own 3-layer encoder (same model size, same pairs; its classification head is
   untrained, so it is a speed reference only): torch, and the graph exported to ONNX Runtime (fp32,
   dynamic int8) and OpenVINO (defaults: bf16 on AMX CPUs; static int8 by NNCF, calibrated on 64
   validation pairs). sentence-transformers' own ``backend="onnx"|"openvino"`` needs optimum, which
   does not install beside transformers 5 here, so the peer's ONNX / OpenVINO rows run the same
   graphs the way it would (tokenise every pair, pad, run, read the logits).
   * pairs/s and GFLOP/s: requests of 50 candidates, a new context each, on ``--threads`` threads,
     against the peaks (analytic FLOPs at the measured token counts: see :func:`cross_flops`,
     :func:`split_flops`).
   * p50 / p99 latency of one request of 20 and of 50 candidates on 1 thread (as served).
4. NDCG@10 and Recall@10 of every trained variant over the same ``--lists`` lists, and the
   relative NDCG@10 change against ``cross fp32`` with a 95% paired-bootstrap interval.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch

from evaluation.metrics import ndcg_at_k, paired_interval, recall_at_k
from ranker.model import Reranker

PEER_BACKENDS = ("torch", "onnx", "onnx-int8", "openvino", "openvino-int8")


# ----------------------------------------------------------------------------- peaks and FLOPs
def best_seconds(fn: Callable[[], object], repeats: int = 5) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def fp32_peak_gflops(n: int = 2048) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n ** 3 / best_seconds(lambda: a @ b) / 1e9


def int8_peak_gflops(n: int = 2048) -> float:
    """GFLOP/s-equivalent of a dynamically quantised int8 Linear (n x n weights, n rows) on torch's threads."""
    from ranker.network import quantize_int8

    lin = quantize_int8(torch.nn.Sequential(torch.nn.Linear(n, n)))
    x = torch.randn(n, n)
    with torch.inference_mode():
        return 2 * n ** 3 / best_seconds(lambda: lin(x)) / 1e9


def _layer_flops(q: float, k: float, d: int, f: int) -> float:
    """One BERT layer for q query tokens over k keys: QKV + output projections, attention, feed-forward."""
    return 8 * q * d * d + 4 * q * k * d + 4 * q * d * f


def cross_flops(config, tokens: float) -> float:
    """FLOPs of one pair of ``tokens`` tokens through every layer (+ a d -> 1 head)."""
    d, f = config.hidden_size, config.intermediate_size
    return config.num_hidden_layers * _layer_flops(tokens, tokens, d, f) + 2 * d


def split_flops(config, joint: int, ctx_tokens: float, item_tokens: float, query: str = "tokens"
                ) -> tuple[float, float]:
    """(per request: the context through every layer, per pair: the joint layers over the item's
    tokens, or its one pooled token). Item lower layers run at index time and are not counted."""
    d, f = config.hidden_size, config.intermediate_size
    ctx = config.num_hidden_layers * _layer_flops(ctx_tokens, ctx_tokens, d, f)
    if query == "pooled":
        return ctx, joint * _layer_flops(1, ctx_tokens + 1, d, f) + 2 * d
    return ctx, joint * _layer_flops(item_tokens, ctx_tokens + item_tokens, d, f) + 2 * d


# ----------------------------------------------------------------------------- data
@dataclass
class Lists:
    contexts: list[str]
    items: np.ndarray          # (n, m) int64 item indexes (= index labels), -1 padding
    positive: np.ndarray       # (n,) column of the validation item
    texts: list[str]           # candidate text per item index
    catalog: object
    item_ids: list[str]


def beauty_lists(data_dir: str, card: dict, n_lists: int, candidates: int) -> Lists:
    """Validation lists of the cross-encoder's split (module docstring, 2)."""
    from evaluation.distill import teacher_config
    from evaluation.training import beauty_split, validation_groups
    from indexer.build import catalog_item_vectors
    from indexer.loaders import load_dataset
    from ranker.pairs import texts_by_index

    cfg = teacher_config(card)
    cfg = replace(cfg, val_candidates=candidates, max_val_groups=n_lists, val_users=max(cfg.val_users, 4 * n_lists))
    catalog = load_dataset("beauty", data_dir)
    split, _ = beauty_split(catalog, cfg.split_seed)
    ids = split.item_ids.tolist()
    full, short = texts_by_index(catalog.items, ids, cfg.pairs)
    vectors = catalog_item_vectors(catalog.items, ids)
    g = validation_groups(split, short, vectors, cfg)
    return Lists(g.contexts, g.items, g.positive, full, catalog, ids)


def attached_index(lists: Lists):
    """An ItemIndex of the whole catalog in item-index order (label i = item i), for ``Reranker.attach``."""
    from indexer.build import catalog_item_vectors
    from indexer.store import ItemIndex

    items = lists.catalog.items.drop_duplicates("item_id").set_index("item_id", drop=False).loc[lists.item_ids]
    vectors = catalog_item_vectors(lists.catalog.items, lists.item_ids)
    index = ItemIndex(model="minilm", dim=vectors.shape[1], kind="flat")
    index.add(items.reset_index(drop=True), vectors)
    return index


# ----------------------------------------------------------------------------- variants
class Variant:
    """One way to score a request: ``score(context, item indexes) -> (n,) float32``."""

    def __init__(self, name: str, score: Callable[[str, np.ndarray], np.ndarray], threads: Callable[[int], None],
                 flops: Callable[[str, np.ndarray], float], trained: bool):
        self.name, self.score, self.set_threads, self.flops, self.trained = name, score, threads, flops, trained


def _torch_threads(n: int) -> None:
    torch.set_num_threads(n)


def reranker_variant(rr: Reranker, lists: Lists, index) -> Variant:
    enc = rr.encoder
    if rr.split is not None:
        rr.attach(index)
        joint = int(rr.meta["joint_layers"])

        def flops(ctx: str, items: np.ndarray) -> float:
            lc = len(enc.context_ids(ctx)) + 2
            li = np.mean([len(t) + 1 for t in enc.item_ids([lists.texts[i] for i in items])])
            per_req, per_pair = split_flops(rr.net.config, joint, lc, li, rr.meta["query"])
            return per_req + len(items) * per_pair
        return Variant(f"split-{rr.meta['query']}-{joint} {rr.variant}", lambda c, items: rr.score_items(c, items),
                       _torch_threads, flops, True)

    def cross(ctx: str, items: np.ndarray) -> float:
        lc = len(enc.context_ids(ctx))
        return sum(cross_flops(rr.net.config, lc + len(t) + 3) for t in enc.item_ids([lists.texts[i] for i in items]))
    return Variant(f"cross {rr.variant}", lambda c, items: rr.score(c, [lists.texts[i] for i in items]),
                   _torch_threads, cross, True)


def peer_variants(model_dir, lists: Lists, backends: tuple[str, ...], max_length: int, threads: int) -> list[Variant]:
    """The sentence-transformers CrossEncoder peer on each backend (module docstring, 3)."""
    from sentence_transformers import CrossEncoder
    from transformers import AutoConfig, AutoTokenizer

    from indexer.backends import open_backend

    config = AutoConfig.from_pretrained(str(model_dir))
    tok = AutoTokenizer.from_pretrained(str(model_dir))

    def feeds(ctx: str, items: np.ndarray) -> dict:
        f = tok([ctx] * len(items), [lists.texts[i] for i in items], padding=True, truncation=True,
                max_length=max_length, return_tensors="np")
        return {k: f[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}

    def flops(ctx: str, items: np.ndarray) -> float:  # useful tokens only (padding not counted)
        return float(sum(cross_flops(config, int(n)) for n in feeds(ctx, items)["attention_mask"].sum(1)))

    out = []
    for b in backends:
        if b == "torch":
            ce = CrossEncoder(str(model_dir), num_labels=1, max_length=max_length, device="cpu")
            out.append(Variant("peer ST torch", lambda c, items, ce=ce: ce.predict(
                [(c, lists.texts[i]) for i in items], batch_size=64, show_progress_bar=False), _torch_threads,
                flops, False))
            continue
        n = len(lists.contexts)
        calib = [feeds(lists.contexts[r % n], lists.items[r % n][r // n: r // n + 1]) for r in range(64)] \
            if b == "openvino-int8" else None
        sessions = {n: open_backend(model_dir, b, task="sequence-classification", threads=n, calibration=calib)
                    for n in sorted({1, threads})}
        state = {"threads": threads}

        def score(c, items, sessions=sessions, state=state):
            return sessions[state["threads"]].run(feeds(c, items))[:, 0]

        def set_threads(n, state=state):
            state["threads"] = n
        out.append(Variant(f"peer ST {b}", score, set_threads, flops, False))
    return out


# ----------------------------------------------------------------------------- measurements
def timed(variants: list[Variant], lists: Lists, n: int, threads: int, repeats: int) -> dict[str, list[float]]:
    """Seconds of ``repeats`` requests of ``n`` candidates per variant, interleaved; a new list each time."""
    for v in variants:
        v.set_threads(threads)
        v.score(lists.contexts[0], lists.items[0][:n])  # warm-up
    out: dict[str, list[float]] = {v.name: [] for v in variants}
    for r in range(repeats):
        row = (r + 1) % len(lists.contexts)
        items = lists.items[row][lists.items[row] >= 0][:n]
        for v in variants:
            t = time.perf_counter()
            v.score(lists.contexts[row] + f" #{n}-{r}", items)  # a fresh context: tokenised per request
            out[v.name].append(time.perf_counter() - t)
    return out


def quality(variants: list[Variant], lists: Lists, threads: int) -> dict[str, dict]:
    """NDCG@10 / Recall@10 of each trained variant over every list, ranks kept for paired intervals."""
    from ranker.train import list_ranks

    out = {}
    for v in variants:
        if not v.trained:
            continue
        v.set_threads(threads)
        s = np.full(lists.items.shape, -np.inf, dtype=np.float32)
        for r, row in enumerate(lists.items):
            live = np.flatnonzero(row >= 0)
            s[r, live] = v.score(lists.contexts[r], row[live])
        ranks = list_ranks(s, lists.positive)
        out[v.name] = {"ndcg@10": ndcg_at_k(ranks, 10), "recall@10": recall_at_k(ranks, 10), "ranks": ranks}
    return out


def run(cross: str, splits: list[str], data_dir: str, threads: int = 2, n_lists: int = 200, candidates: int = 50,
        repeats: int = 20, peers: tuple[str, ...] = PEER_BACKENDS) -> dict:
    torch.set_num_threads(threads)
    load = [round(x, 2) for x in os.getloadavg()]
    res: dict = {"load_start": load, "threads": threads}
    res["fp32_peak"], res["int8_peak"] = fp32_peak_gflops(), int8_peak_gflops()
    print(f"load average {load}; peaks on {threads} threads: fp32 GEMM {res['fp32_peak']:.0f} GFLOP/s, "
          f"int8 dynamic Linear {res['int8_peak']:.0f} GFLOP/s-equivalent", flush=True)
    teacher = Reranker(cross, variant="fp32")
    card = json.loads((teacher.path / "model_card.json").read_text())
    lists = beauty_lists(data_dir, card, n_lists, candidates)
    print(f"{len(lists.contexts)} Beauty validation lists of {candidates} candidates", flush=True)
    index = attached_index(lists) if splits else None
    variants = [reranker_variant(rr, lists, index) for rr in (teacher, Reranker(cross, variant="int8"))]
    for path in splits:
        for variant in ("fp32", "int8"):
            rr = Reranker(path, variant=variant)
            t = time.perf_counter()
            variants.append(reranker_variant(rr, lists, index))
            st, sec = rr.states, time.perf_counter() - t
            res[f"attach_s {variants[-1].name}"] = round(sec, 1)
            print(f"{variants[-1].name} ({rr.path}): item states of {len(st):,} items precomputed in {sec:.1f} s, "
                  f"{st.nbytes / len(st) / 1024:.2f} KiB/item", flush=True)
    max_length = teacher.encoder.cfg.max_length
    variants += peer_variants(teacher.path / "model", lists, peers, max_length, threads)
    rows = {v.name: {} for v in variants}
    through = timed(variants, lists, candidates, threads, repeats)
    row = lists.items[1][lists.items[1] >= 0][:candidates]
    for v in variants:
        work = v.flops(lists.contexts[1], row)
        sec = float(np.mean(through[v.name]))
        rows[v.name].update(pairs_per_s=len(row) / sec, gflops=work / sec / 1e9)
    for n in (20, 50):
        lat = timed(variants, lists, n, 1, repeats)
        for v in variants:
            rows[v.name][f"p50@{n}"] = float(np.percentile(lat[v.name], 50)) * 1000
            rows[v.name][f"p99@{n}"] = float(np.percentile(lat[v.name], 99)) * 1000
    q = quality(variants, lists, threads)
    ref = q.get("cross fp32")
    for name, m in q.items():
        rows[name].update({k: m[k] for k in ("ndcg@10", "recall@10")})
        if ref is not None and name != "cross fp32":
            rows[name]["vs_cross"] = m["ndcg@10"] / ref["ndcg@10"] - 1
            rows[name]["vs_cross_ci"] = paired_interval(m["ranks"], ref["ranks"])
    res["rows"], res["load_end"] = rows, [round(x, 2) for x in os.getloadavg()]
    print_table(res, len(lists.contexts), repeats)
    return res


def print_table(res: dict, n_lists: int, repeats: int) -> None:
    """The table and one line per variant against the goal."""
    rows = res["rows"]
    print(f"\n| variant | pairs/s ({res['threads']} thr) | GFLOP/s | of fp32 peak | of int8 peak | p50/p99 ms @20 "
          f"| p50/p99 ms @50 | NDCG@10 | vs cross fp32 (95% CI) |\n|---|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        nd = f"{r['ndcg@10']:.4f}" if "ndcg@10" in r else "n/a (speed peer)"
        vs = (f"{r['vs_cross']:+.1%} [{r['vs_cross_ci'][0]:+.1%}, {r['vs_cross_ci'][1]:+.1%}]"
              if "vs_cross" in r else "")
        print(f"| {name} | {r['pairs_per_s']:.0f} | {r['gflops']:.0f} | {r['gflops'] / res['fp32_peak']:.0%} | "
              f"{r['gflops'] / res['int8_peak']:.0%} | {r['p50@20']:.1f} / {r['p99@20']:.1f} | "
              f"{r['p50@50']:.1f} / {r['p99@50']:.1f} | {nd} | {vs} |")
    peers = {k: v for k, v in rows.items() if k.startswith("peer")}
    if peers:
        best = min(peers, key=lambda k: peers[k]["p50@50"])
        print(f"\nGoal: 50 candidates >= 5x faster than the best peer ({best}, p50 {peers[best]['p50@50']:.1f} ms "
              f"on 1 thread), NDCG@10 within 1% of cross fp32:")
        for name, r in rows.items():
            if name.startswith("peer"):
                continue
            speed = peers[best]["p50@50"] / r["p50@50"]
            vs = r.get("vs_cross", 0.0)
            met = "MET" if speed >= 5 and vs >= -0.01 else "not met"
            p99 = peers[best]["p99@50"] / r["p99@50"]
            print(f"  {name}: {speed:.1f}x (p99 {p99:.1f}x), NDCG@10 {vs:+.1%} -> {met}")
    print(f"{n_lists} lists for NDCG; {repeats} requests per latency figure; load average at start "
          f"{res['load_start']}, at end {res['load_end']} (shared machine: read figures next to it)")


def main(argv: list[str] | None = None) -> int:
    from indexer.loaders import shared_data_dir

    p = argparse.ArgumentParser(prog="semrec bench rerank", description=__doc__.split("\n")[0])
    p.add_argument("--cross", default="runs/ranker/cross", help="cross-encoder version dir (teacher, reference)")
    p.add_argument("--split", action="append", default=[],
                   help="a split reranker version dir (repeatable; none: cross-encoder rows only)")
    p.add_argument("--data-dir", default=str(shared_data_dir() / "amazon-beauty-2014"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--lists", type=int, default=200)
    p.add_argument("--candidates", type=int, default=50)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--peers", default=",".join(PEER_BACKENDS), help="peer backends, comma-separated ('' = none)")
    p.add_argument("--json", default=None, help="also write the figures here")
    a = p.parse_args(argv)
    peers = tuple(b for b in a.peers.split(",") if b)
    bad = [b for b in peers if b not in PEER_BACKENDS]
    if bad:
        p.error(f"unknown peer backend {bad[0]!r}; choose from {', '.join(PEER_BACKENDS)}")
    res = run(a.cross, a.split, a.data_dir, a.threads, a.lists, a.candidates, a.repeats, peers)
    if a.json:
        for r in res["rows"].values():
            r.pop("ranks", None)
        with open(a.json, "w") as fh:
            json.dump(res, fh, indent=2, default=float)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
