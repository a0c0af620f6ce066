"""Ranking and beyond-accuracy metrics as plain functions over numpy arrays.

Conventions
    ranks   (n,) int64, 0-based rank of each query's single target in the full ranking over all
            items (ties -> lower item index first, see ``retriever.collaborative.top_k``); -1 when the
            target could not be ranked (it was excluded as a history item), which counts as a miss.
    ids     (n, k) int64 recommended item indexes, -1 = padding (ignored by every metric).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from tqdm.auto import tqdm

from indexer.results import top_k
from retriever.collaborative import ScoreFn, exclude_items, target_ranks

Array = np.ndarray


# ----------------------------------------------------------------------------- accuracy
def recall_at_k(ranks: Array, k: int) -> float:
    """Share of queries whose target is in the top k (= HitRate@k with one target per query)."""
    ranks = np.asarray(ranks)
    return float(np.mean((ranks >= 0) & (ranks < k))) if len(ranks) else float("nan")


def ndcg_at_k(ranks: Array, k: int) -> float:
    """Mean of 1 / log2(rank + 2) over queries with the target in the top k, 0 otherwise.

    With one relevant item the ideal DCG is 1, so no further normalisation is needed.
    """
    ranks = np.asarray(ranks)
    if not len(ranks):
        return float("nan")
    hit = (ranks >= 0) & (ranks < k)
    return float(np.mean(np.where(hit, 1.0 / np.log2(np.maximum(ranks, 0) + 2.0), 0.0)))


def paired_interval(ranks_a: Array, ranks_b: Array, k: int = 10, n_boot: int = 2000, seed: int = 0
                    ) -> tuple[float, float]:
    """95% paired-bootstrap interval of NDCG@k(a) / NDCG@k(b) - 1, the same queries resampled with
    replacement. ``ranks_a``, ``ranks_b``: (n,) 0-based target ranks of two systems (-1 = missed)."""
    def gains(r: Array) -> Array:
        r = np.asarray(r)
        return np.where((r >= 0) & (r < k), 1.0 / np.log2(np.maximum(r, 0) + 2.0), 0.0)

    ga, gb = gains(ranks_a), gains(ranks_b)
    idx = np.random.default_rng([seed, 51]).integers(0, len(ga), size=(n_boot, len(ga)))
    a, b = ga[idx].mean(axis=1), gb[idx].mean(axis=1)
    rel = a[b > 0] / b[b > 0] - 1
    return float(np.percentile(rel, 2.5)), float(np.percentile(rel, 97.5))


def mrr(ranks: Array, k: int | None = None) -> float:
    """Mean reciprocal rank 1 / (rank + 1) over the full ranking, or only the top k if given (MRR@k)."""
    ranks = np.asarray(ranks)
    if not len(ranks):
        return float("nan")
    hit = ranks >= 0 if k is None else (ranks >= 0) & (ranks < k)
    return float(np.mean(np.where(hit, 1.0 / (np.maximum(ranks, 0) + 1.0), 0.0)))


# ----------------------------------------------------------------------------- beyond accuracy
def catalog_coverage(ids: Array, n_items: int) -> float:
    """Share of the ``n_items`` catalog that appears in at least one list."""
    ids = np.asarray(ids)
    return float(len(np.unique(ids[ids >= 0])) / n_items) if n_items else float("nan")


def novelty(ids: Array, train_counts: Array) -> float:
    """Mean self-information -log2 p(i) of recommended items, in bits.

    p(i) = (count_i + 1) / (total + n_items) from training interaction counts (add-one smoothing,
    so items never seen in training have a finite, maximal novelty). train_counts: (n_items,).
    """
    ids = np.asarray(ids)
    valid = ids[ids >= 0]
    if not len(valid):
        return float("nan")
    counts = np.asarray(train_counts, dtype=np.float64)
    p = (counts + 1.0) / (counts.sum() + len(counts))
    return float(np.mean(-np.log2(p[valid])))


def intra_list_diversity(ids: Array, item_vectors: Array) -> float:
    """Mean over lists of 1 - (mean pairwise cosine similarity of the list's items).

    item_vectors: (n_items, d); rows are L2-normalised here (zero rows stay zero). Lists with fewer
    than two items are skipped.
    """
    ids = np.asarray(ids)
    vecs = np.asarray(item_vectors, dtype=np.float32)
    vecs = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
    values = []
    for start in range(0, len(ids), 4096):
        block = ids[start : start + 4096]
        valid = block >= 0
        v = vecs[np.where(valid, block, 0)] * valid[..., None]  # (b, k, d)
        n = valid.sum(axis=1).astype(np.float64)
        s = v.sum(axis=1)
        # sum over ordered pairs i != j of cos = |sum v|^2 - sum |v|^2
        pair_sum = np.einsum("bd,bd->b", s, s) - np.einsum("bkd,bkd->b", v, v)
        keep = n >= 2
        values.append(1.0 - pair_sum[keep] / (n[keep] * (n[keep] - 1)))
    values = np.concatenate(values) if values else np.empty(0)
    return float(values.mean()) if len(values) else float("nan")


def popular_share(ids: Array, train_counts: Array, top_frac: float = 0.2) -> float:
    """Share of recommended items among the ``top_frac`` most popular items by training count.

    The popular set is the first ceil(top_frac * n_items) items by count (ties -> lower index).
    """
    ids = np.asarray(ids)
    valid = ids[ids >= 0]
    if not len(valid):
        return float("nan")
    counts = np.asarray(train_counts)
    n_top = int(np.ceil(top_frac * len(counts)))
    popular = np.zeros(len(counts), dtype=bool)
    popular[np.argsort(-counts, kind="stable")[:n_top]] = True
    return float(np.mean(popular[valid]))


# ----------------------------------------------------------------------------- batched ranking
class Ranked(NamedTuple):
    """Top-k lists and target ranks of one ranking pass."""

    ids: Array  # (n, k) int64, -1 padding
    scores: Array  # (n, k) float32, -inf padding
    ranks: Array  # (n,) int64, -1 when the target was excluded




def list_ranks(ids: Array, targets: Array) -> Array:
    """0-based position of each row's target in its list ``ids`` (n, k); -1 when it is not there."""
    hit = np.asarray(ids) == np.asarray(targets)[:, None]
    return np.where(hit.any(axis=1), hit.argmax(axis=1), -1).astype(np.int64)


def rank_targets(
    score_fn: ScoreFn,
    histories: Sequence[Array],
    targets: Array,
    k: int,
    *,
    batch_size: int = 1024,
    desc: str | None = None,
) -> tuple[Ranked, Ranked]:
    """One scoring pass, two rankings: (history excluded, history included).

    histories: n int64 arrays; targets: (n,) int64. ``desc`` shows a tqdm bar with that label.
    """
    out: dict[bool, list[tuple[Array, Array, Array]]] = {True: [], False: []}
    starts = range(0, len(histories), batch_size)
    for start in tqdm(starts, desc=desc, disable=desc is None, leave=False):
        batch = histories[start : start + batch_size]
        t = np.asarray(targets[start : start + batch_size], dtype=np.int64)
        s = np.asarray(score_fn(batch), dtype=np.float32)
        out[False].append((*top_k(s, k), target_ranks(s, t)))
        exclude_items(s, batch)
        out[True].append((*top_k(s, k), target_ranks(s, t)))

    def join(parts: list[tuple[Array, Array, Array]]) -> Ranked:
        if not parts:
            return Ranked(np.empty((0, k), np.int64), np.empty((0, k), np.float32), np.empty(0, np.int64))
        return Ranked(*(np.concatenate(p) for p in zip(*parts)))

    return join(out[True]), join(out[False])


def summarize(
    ranked: Ranked,
    train_counts: Array,
    *,
    ks: Sequence[int] = (10, 20),
    item_vectors: Array | None = None,
    mask: Array | None = None,
) -> dict[str, float]:
    """All metrics for the queries selected by ``mask`` (default all) as a flat dict.

    Keys: n, recall@K, ndcg@K for each K in ks, mrr@max(ks) (a served list is that long, so it is
    the cut-off every system can be compared at), and on the top-10 lists coverage@10, novelty@10,
    popular_share@10 and (with item_vectors) diversity@10.
    """
    ids, ranks = ranked.ids, ranked.ranks
    if mask is not None:
        ids, ranks = ids[mask], ranks[mask]
    out: dict[str, float] = {"n": int(len(ranks))}
    for k in ks:
        out[f"recall@{k}"] = recall_at_k(ranks, k)
        out[f"ndcg@{k}"] = ndcg_at_k(ranks, k)
    out[f"mrr@{max(ks)}"] = mrr(ranks, max(ks))
    top10 = ids[:, :10]
    out["coverage@10"] = catalog_coverage(top10, len(train_counts))
    out["novelty@10"] = novelty(top10, train_counts)
    out["popular_share@10"] = popular_share(top10, train_counts)
    if item_vectors is not None:
        out["diversity@10"] = intra_list_diversity(top10, item_vectors)
    return out
