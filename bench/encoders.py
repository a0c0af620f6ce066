"""Index-time encoding per embedder backend: throughput and retrieval quality (a section of
``semrec bench foundation``; alone: ``semrec bench foundation --backends-only``).

* Throughput: the documents of ``encode_items`` (512) seeded-random Beauty items, encoded by
  every backend in turn (``rounds`` rounds, interleaved so load from other jobs hits all alike) on
  ``threads`` threads, batch 64: items/s, tokens/s, and GFLOP/s (analytic, 6 MiniLM layers at each
  text's token count) against the fp32 GEMM and int8 Linear peaks measured in the same run
  (:mod:`bench.rerank`). Export / load time is reported apart (exports are cached).
* Retrieval quality: a dense Beauty sample -- the ``quality_items`` (3000) most-reviewed items and
  the users with 5+ interactions among them, leave-one-out on each user's last item: user vector =
  recency-decayed mean of the history's item vectors (``retriever.collaborative.text_scores``,
  decay 0.8), full ranking over the sample's items, history excluded. NDCG@10 / Recall@10 per
  backend, each with item vectors from that backend, and the change against torch with a 95%
  paired-bootstrap interval. Beauty has no review text, so these vectors are exactly the index's.
"""

from __future__ import annotations

import time

import numpy as np

from .kit import loadavg

BACKENDS = ("torch", "onnx", "onnx-int8", "openvino", "openvino-int8")


def encoder_flops(tokens: np.ndarray, layers: int = 6, d: int = 384, f: int = 1536) -> float:
    """Forward FLOPs of a BERT encoder over texts of ``tokens`` tokens each (no padding)."""
    t = tokens.astype(np.float64)
    return float(layers * (8 * t * d * d + 4 * t * t * d + 4 * t * d * f).sum())


def quality_sample(catalog, n_items: int = 3000, min_interactions: int = 5):
    """(items frame, histories (list of int64 arrays, oldest first), targets (n,) int64) of the dense sample."""
    from evaluation.protocol import sequences_from_reviews

    top = set(catalog.reviews["item_id"].value_counts().index[:n_items])
    reviews = catalog.reviews[catalog.reviews["item_id"].isin(top)]
    sizes = reviews.groupby("user_id").size()
    reviews = reviews[reviews["user_id"].isin(set(sizes[sizes >= min_interactions].index))]
    sequences, item_ids, _ = sequences_from_reviews(reviews.reset_index(drop=True))
    frame = catalog.items.drop_duplicates("item_id").set_index("item_id", drop=False).loc[item_ids.tolist()]
    return frame.reset_index(drop=True), [s[:-1] for s in sequences], np.array([s[-1] for s in sequences])


def retrieval_ranks(vectors: np.ndarray, histories: list[np.ndarray], targets: np.ndarray) -> np.ndarray:
    """0-based rank of each target among all sample items (history excluded), (n,) int64."""
    from retriever.collaborative import exclude_items, target_ranks, text_scores

    ranks = []
    for start in range(0, len(histories), 512):
        h = histories[start:start + 512]
        s = exclude_items(text_scores(h, vectors, 0.8), h)
        ranks.append(target_ranks(s, targets[start:start + 512]))
    return np.concatenate(ranks)


def run(catalog, backends: tuple[str, ...] = BACKENDS, threads: int = 2, encode_items: int = 512, rounds: int = 2,
        quality_items: int = 3000, seed: int = 0) -> dict:
    import torch

    from evaluation.metrics import ndcg_at_k, paired_interval, recall_at_k
    from indexer.documents import documents
    from indexer.embed import load_embedder

    from .rerank import fp32_peak_gflops, int8_peak_gflops

    torch.set_num_threads(threads)
    out: dict = {"load_start": loadavg(), "threads": threads}
    out["fp32_peak"], out["int8_peak"] = fp32_peak_gflops(), int8_peak_gflops()
    print(f"    peaks on {threads} threads: fp32 GEMM {out['fp32_peak']:.0f} GFLOP/s, int8 dynamic Linear "
          f"{out['int8_peak']:.0f} GFLOP/s-equivalent; load {out['load_start']}", flush=True)
    rng = np.random.default_rng(seed)
    items = catalog.items.iloc[np.sort(rng.choice(len(catalog.items), min(encode_items, len(catalog.items)),
                                                  replace=False))]
    texts = documents(items.reset_index(drop=True))
    embedders, rows = {}, {}
    for b in backends:
        t = time.perf_counter()
        embedders[b] = load_embedder("minilm", backend=b, threads=threads)
        embedders[b].encode(texts[:64])  # warm-up
        rows[b] = {"load_s": round(time.perf_counter() - t, 1), "seconds": []}
    tok = embedders[backends[0]].model.tokenizer if backends[0] == "torch" else embedders[backends[0]].tokenizer
    cap = 256 * 6
    tokens = np.array([min(len(x), 256) for x in tok([t[:cap] for t in texts], truncation=True, max_length=256)
                       ["input_ids"]])
    work = encoder_flops(tokens)
    for _ in range(rounds):
        for b, e in embedders.items():
            t = time.perf_counter()
            e.encode(texts, batch_size=64)
            rows[b]["seconds"].append(time.perf_counter() - t)
    sample, histories, targets = quality_sample(catalog, quality_items)
    docs = documents(sample)
    ranks = {}
    for b, e in embedders.items():
        ranks[b] = retrieval_ranks(e.encode(docs, batch_size=64), histories, targets)
        r = rows[b]
        sec = float(np.mean(r.pop("seconds")))
        r.update(items_per_s=len(texts) / sec, tokens_per_s=tokens.sum() / sec, gflops=work / sec / 1e9,
                 ndcg=ndcg_at_k(ranks[b], 10), recall=recall_at_k(ranks[b], 10))
    base = "torch" if "torch" in rows else backends[0]
    out.update(rows=rows, items=len(texts), mean_tokens=float(tokens.mean()), quality_items=len(sample),
               quality_users=len(targets), load_end=loadavg())
    print(f"    {len(texts)} Beauty documents (mean {tokens.mean():.0f} tokens), batch 64, {rounds} interleaved "
          f"rounds; quality: {len(sample)} items, {len(targets)} users")
    print("| backend | load/export s | items/s | vs torch | tokens/s | GFLOP/s | of fp32 peak | of int8 peak | "
          "NDCG@10 | vs torch (95% CI) | Recall@10 |\n|---|---|---|---|---|---|---|---|---|---|---|")
    for b, r in rows.items():
        lo, hi = paired_interval(ranks[b], ranks[base]) if b != base else (0.0, 0.0)
        r["ndcg_vs_torch"] = r["ndcg"] / rows[base]["ndcg"] - 1
        r["ndcg_vs_torch_ci"] = (lo, hi)
        print(f"| {b} | {r['load_s']} | {r['items_per_s']:.1f} | {r['items_per_s'] / rows[base]['items_per_s']:.2f}x | "
              f"{r['tokens_per_s']:.0f} | {r['gflops']:.0f} | {r['gflops'] / out['fp32_peak']:.0%} | "
              f"{r['gflops'] / out['int8_peak']:.0%} | {r['ndcg']:.4f} | {r['ndcg_vs_torch']:+.2%} "
              f"[{lo:+.2%}, {hi:+.2%}] | {r['recall']:.4f} |")
    print(f"    load average at end {out['load_end']}", flush=True)
    return out
