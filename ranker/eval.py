"""Does the reranker help? Full-catalog NDCG@10 / Recall@10 on Beauty, leave-one-out.

    python -m ranker.eval --data-dir /work/shared/data/amazon-beauty-2014 [--users 1000] [--model runs/ranker]

Same split as training (``evaluation.protocol.leave_one_out``, seed from the model card), a seeded
sample of evaluated users, test = each user's last item, history excluded, ranking over the
whole catalog. Rows of the table:

* ``markov``, ``text-zero-shot``: full-ranking baselines (the harness's settings).
* candidate sets, N = ``--top-n`` (50): ``text`` = text zero-shot top-N (user vector =
  recency-decayed mean of history item vectors); ``union`` = the top-N by reciprocal-rank fusion
  (k = 60) of the text and Markov top-N lists.
* per candidate set: ``retrieval`` (its own order), ``+pop`` (retrieval + popularity fusion, no
  reranker: an ablation), ``+reranker`` (reranker score alone), ``+fusion`` (reranker + retrieval
  + popularity, :mod:`ranker.fusion`), ``+fusion+mmr`` (:mod:`ranker.mmr`, lambda ``--mmr-lambda``).

A target outside the candidate list is a miss (rank -1) in every reordering of that list, so the
reranker is run only on lists that contain the target: the metrics equal those of reranking every
list, at a fraction of the CPU time. Fusion weights are picked on the validation stage (each
user's second-last item; half of the sampled users) from a small grid, then applied unchanged to
test. Diversity@10 (1 - mean pairwise cosine of item vectors) is over those lists with the
target, for every row alike.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np
import torch

from evaluation.metrics import intra_list_diversity, ndcg_at_k, rank_targets, recall_at_k
from indexer.loaders import load_dataset
from retriever.collaborative import Markov, exclude_items, text_scores, top_k

from .fusion import FusionWeights, fuse, popularity_prior, sort_rows
from .mmr import mmr
from .model import Reranker
from .pairs import catalog_item_vectors, history_context, popularity_counts, texts_by_index
from .train import PairConfig, beauty_split

Array = np.ndarray
RRF_K = 60
WEIGHT_GRID = {"retrieval": (0.0, 0.25, 0.5, 1.0), "popularity": (0.0, 0.1, 0.25, 0.5)}


def rrf_union(a: Array, b: Array, k: int) -> tuple[Array, Array]:
    """Top-``k`` of two ranked id lists (n, m) by reciprocal-rank fusion sum 1 / (RRF_K + rank).

    Ties keep the order of first appearance (a before b at equal rank). Returns (ids, scores) (n, k).
    """
    ids = np.full((len(a), k), -1, dtype=np.int64)
    vals = np.full((len(a), k), -np.inf, dtype=np.float32)
    for r in range(len(a)):
        score: dict[int, float] = {}
        for rank, (x, y) in enumerate(zip(a[r], b[r]), start=1):
            for item in (x, y):
                if item >= 0:
                    score[int(item)] = score.get(int(item), 0.0) + 1.0 / (RRF_K + rank)
        best = sorted(score.items(), key=lambda kv: -kv[1])[:k]  # stable: first appearance wins ties
        ids[r, : len(best)] = [i for i, _ in best]
        vals[r, : len(best)] = [s for _, s in best]
    return ids, vals


def list_ranks(labels: Array, targets: Array) -> Array:
    """0-based position of each row's target in ``labels`` (n, k); -1 when absent."""
    hit = labels == targets[:, None]
    return np.where(hit.any(axis=1), hit.argmax(axis=1), -1).astype(np.int64)


def paired_interval(ranks_a: Array, ranks_b: Array, n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% paired-bootstrap interval of NDCG@10(a) / NDCG@10(b) - 1 over users resampled with replacement."""
    def gains(r: Array) -> Array:
        return np.where((r >= 0) & (r < 10), 1.0 / np.log2(np.maximum(r, 0) + 2.0), 0.0)

    ga, gb = gains(ranks_a), gains(ranks_b)
    idx = np.random.default_rng([seed, 51]).integers(0, len(ga), size=(n_boot, len(ga)))
    a, b = ga[idx].mean(axis=1), gb[idx].mean(axis=1)
    rel = a[b > 0] / b[b > 0] - 1
    return float(np.percentile(rel, 2.5)), float(np.percentile(rel, 97.5))


COMPARISONS = (("text +reranker", "text retrieval"), ("text +fusion", "text retrieval"),
               ("text +fusion", "text +pop"), ("union +fusion", "text retrieval"), ("union +fusion", "union +pop"))


def metrics(labels: Array, targets: Array, vectors: Array, rows: Array) -> dict[str, float]:
    ranks = list_ranks(labels, targets)
    return {"ndcg@10": ndcg_at_k(ranks, 10), "recall@10": recall_at_k(ranks, 10),
            "diversity@10": intra_list_diversity(labels[rows, :10], vectors) if len(rows) else float("nan")}


class Scorer:
    """Reranker scores per (stage, row, item), computed once and shared by both candidate sets."""

    def __init__(self, reranker: Reranker, full_texts: list[str]):
        self.reranker, self.texts = reranker, full_texts
        self.cache: dict[tuple[str, int, int], float] = {}
        self.pairs = 0
        self.seconds = 0.0

    def scores(self, stage: str, contexts: dict[int, str], labels: Array, rows: Array) -> Array:
        """(n, k) float32 scores for ``rows`` of ``labels``; other rows (and padding) stay -inf."""
        todo = [(r, int(i)) for r in rows for i in labels[r] if i >= 0 and (stage, r, int(i)) not in self.cache]
        if todo:
            t = time.perf_counter()
            s = self.reranker.score_many([contexts[r] for r, _ in todo], [self.texts[i] for _, i in todo])
            self.seconds += time.perf_counter() - t
            self.pairs += len(todo)
            self.cache.update({(stage, r, i): float(v) for (r, i), v in zip(todo, s)})
        out = np.full(labels.shape, -np.inf, dtype=np.float32)
        for r in rows:
            for c, i in enumerate(labels[r]):
                if i >= 0:
                    out[r, c] = self.cache[(stage, r, int(i))]
        return out


def evaluate(data_dir: str, model: str = "runs/ranker", users: int = 1000, top_n: int = 50, mmr_lambda: float = 0.8,
             seed: int = 0, variant: str | None = None, threads: int = 2, valid_users: int | None = None) -> dict:
    """Run the comparison (module docstring) and return the results dict.

    ``valid_users``: how many of the sampled users pick the fusion weights (default: half).
    """
    t0 = time.perf_counter()
    torch.set_num_threads(threads)
    reranker = Reranker(model, variant=variant, threads=threads)
    card = json.loads((reranker.path / "model_card.json").read_text())
    catalog = load_dataset("beauty", data_dir)
    split, _ = beauty_split(catalog, card["hyperparameters"]["split_seed"])
    pcfg = PairConfig(history_items=reranker.history_items, words_per_item=reranker.words_per_item)
    full, short = texts_by_index(catalog.items, split.item_ids.tolist(), pcfg)
    vectors = catalog_item_vectors(catalog.items, split.item_ids.tolist())
    counts = popularity_counts(split.fit, split.n_items)
    rng = np.random.default_rng([seed, 41])
    sample = np.sort(rng.choice(len(split.users), size=min(users, len(split.users)), replace=False))
    markov = Markov(window=10, decay=0.8, symmetric=True).fit(split.fit, split.n_items)
    scorer = Scorer(reranker, full)
    stages: dict[str, dict] = {}
    n_valid = len(sample) // 2 if valid_users is None else min(valid_users, len(sample))
    for stage in ("valid", "test"):
        users_of = sample[:n_valid] if stage == "valid" else sample
        hist = [(split.valid_history if stage == "valid" else split.test_history)[e] for e in users_of]
        targets = (split.valid_target if stage == "valid" else split.test_target)[users_of]
        text_s = exclude_items(text_scores(hist, vectors), hist)
        mk_s = exclude_items(markov.score(hist), hist)
        full_rank = {name: rank_targets(lambda h, s=s: s.copy(), hist, targets, 10, batch_size=len(hist))
                     for name, s in (("text-zero-shot", text_s), ("markov", mk_s))}
        text = top_k(text_s, top_n)
        union = rrf_union(text[0], top_k(mk_s, top_n)[0], top_n)
        contexts = {r: history_context(hist[r], short, reranker.history_items) for r in range(len(hist))}
        cand = {}
        for name, (labels, retr) in (("text", text), ("union", union)):
            rows = np.flatnonzero(list_ranks(labels, targets) >= 0)
            cand[name] = {"labels": labels, "retrieval": retr, "rows": rows,
                          "rerank": scorer.scores(stage, contexts, labels, rows)}
        stages[stage] = {"targets": targets, "cand": cand, "full": full_rank}
    # Fusion weights: best validation NDCG@10 on the grid, with and without the reranker.
    chosen = {}
    for name in ("text", "union"):
        c, t = stages["valid"]["cand"][name], stages["valid"]["targets"]
        for key, rerank_w in (("fusion", 1.0), ("pop", 0.0)):
            grid = [FusionWeights(rerank_w, r, p) for r, p in itertools.product(*WEIGHT_GRID.values())
                    if rerank_w or r]
            chosen[(name, key)] = max(grid, key=lambda w, c=c, t=t: ndcg_at_k(list_ranks(_fused(c, counts, w), t), 10))
    table: dict[str, dict] = {}
    ranks_of: dict[str, Array] = {}
    test = stages["test"]
    t = test["targets"]
    for name in ("markov", "text-zero-shot"):
        ranked = test["full"][name][0]
        table[name] = {"ndcg@10": ndcg_at_k(ranked.ranks, 10), "recall@10": recall_at_k(ranked.ranks, 10),
                       "diversity@10": intra_list_diversity(ranked.ids[:, :10], vectors)}
    for name in ("text", "union"):
        c = test["cand"][name]
        rows = c["rows"]
        fused = _fused(c, counts, chosen[(name, "fusion")])
        fused_scores = fuse(c["labels"], np.where(np.isfinite(c["rerank"]), c["rerank"], 0.0), c["retrieval"],
                            popularity_prior(c["labels"], counts), chosen[(name, "fusion")])
        mmr_l = c["labels"].copy()
        mmr_l[rows] = mmr(c["labels"][rows], fused_scores[rows], vectors, top_n, mmr_lambda)[0]
        variants = {"retrieval": c["labels"], "+pop": _fused(c, counts, chosen[(name, "pop")]),
                    "+reranker": sort_rows(c["labels"], np.where(np.isin(np.arange(len(t)), rows)[:, None],
                                                                 c["rerank"], c["retrieval"]))[0],
                    "+fusion": fused, "+fusion+mmr": mmr_l}
        for v, labels in variants.items():
            table[f"{name} {v}"] = metrics(labels, t, vectors, rows)
            ranks_of[f"{name} {v}"] = list_ranks(labels, t)
        table[f"{name} retrieval"]["recall@N"] = float(len(rows) / len(t))
    base = table["text retrieval"]["ndcg@10"]
    for row in table.values():
        row["ndcg@10 vs text retrieval"] = (row["ndcg@10"] / base - 1) if base else float("nan")
    return {
        "users": int(len(sample)), "valid_users": int(n_valid), "top_n": top_n, "mmr_lambda": mmr_lambda,
        "model": str(reranker.path),
        "variant": reranker.variant, "fusion_weights": {f"{a}/{b}": vars(w) for (a, b), w in chosen.items()},
        "reranked_lists": {s: {n: int(len(stages[s]["cand"][n]["rows"])) for n in ("text", "union")} for s in stages},
        "reranker_pairs": scorer.pairs, "reranker_seconds": round(scorer.seconds, 1),
        "reranker_pairs_per_s": round(scorer.pairs / max(scorer.seconds, 1e-9), 1),
        "wall_seconds": round(time.perf_counter() - t0, 1), "table": table,
        "paired_bootstrap_95": {f"{a} vs {b}": paired_interval(ranks_of[a], ranks_of[b]) for a, b in COMPARISONS},
    }


def _fused(c: dict, counts: Array, w: FusionWeights) -> Array:
    """Candidate labels ordered by the fused score (rows without reranker scores use reranker weight 0)."""
    rerank = np.where(np.isfinite(c["rerank"]), c["rerank"], 0.0)
    pop = popularity_prior(c["labels"], counts)
    return sort_rows(c["labels"], fuse(c["labels"], rerank, c["retrieval"], pop, w))[0]


def markdown(res: dict) -> str:
    lines = [f"Beauty leave-one-out test, {res['users']} users ({res['valid_users']} of them for validation), "
             f"candidates N={res['top_n']}, reranker "
             f"{res['model']} ({res['variant']}), MMR lambda {res['mmr_lambda']}", "",
             "| system | NDCG@10 | Recall@10 | vs text retrieval | diversity@10* |", "|---|---|---|---|---|"]
    for name, m in res["table"].items():
        lines.append(f"| {name} | {m['ndcg@10']:.4f} | {m['recall@10']:.4f} | {m['ndcg@10 vs text retrieval']:+.1%} "
                     f"| {m['diversity@10']:.3f} |")
    lines += ["", "*full-ranking rows: over all users; candidate rows: over the lists that contain the target.",
              f"Recall@N of the candidates: text {res['table']['text retrieval']['recall@N']:.4f}, union "
              f"{res['table']['union retrieval']['recall@N']:.4f}. Fusion weights (picked on validation): "
              f"{json.dumps(res['fusion_weights'])}",
              "Relative NDCG@10 change, 95% paired-bootstrap interval over test users: "
              + "; ".join(f"{k}: [{lo:+.1%}, {hi:+.1%}]" for k, (lo, hi) in res["paired_bootstrap_95"].items()),
              f"Reranker: {res['reranker_pairs']} pairs in {res['reranker_seconds']} s "
              f"({res['reranker_pairs_per_s']} pairs/s); wall {res['wall_seconds']} s"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m ranker.eval", description="Reranker evaluation on Beauty.")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--model", default="runs/ranker")
    p.add_argument("--users", type=int, default=1000, help="test users (seeded sample of evaluated users)")
    p.add_argument("--valid-users", type=int, default=None, help="of those, used to pick fusion weights")
    p.add_argument("--top-n", type=int, default=50)
    p.add_argument("--mmr-lambda", type=float, default=0.8)
    p.add_argument("--variant", choices=("fp32", "int8"), default=None)
    p.add_argument("--out", default="runs/ranker-eval")
    a = p.parse_args(argv)
    res = evaluate(a.data_dir, a.model, a.users, a.top_n, a.mmr_lambda, variant=a.variant, valid_users=a.valid_users)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(res, indent=1, default=float))
    (out / "results.md").write_text(markdown(res))
    print(markdown(res))
    return res


if __name__ == "__main__":
    main()
