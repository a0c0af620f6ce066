"""Offline evaluation: load a dataset, split it, fit every system, rank all items, report.

    python -m evaluation.harness beauty --data-dir ../shared/data --out runs/beauty [--quick]

Systems: ``popularity``, ``markov``, ``als``, ``bpr``, ``sasrec``; when item vectors are given,
``text-zero-shot`` (recency-decayed mean of the history's item vectors; see
``retriever.collaborative.text_scores``) and semrec's own pipeline (``evaluation.semrec``):
``semrec-retrieval``, ``semrec-collab`` and, with a trained reranker (``ranker``),
``semrec-rerank`` and ``semrec-mmr``. Every system is fitted on ``split.fit`` and evaluated on
the validation and test cases with a full ranking over all items, history excluded (the headline
numbers) and not excluded, overall and on the warm / cold-item / cold-user slices
(``evaluation.protocol``). Outputs in ``out_dir``: ``results.json``, ``results.md``, PNG plots and
``split.json`` (the split, for reproduction).

``item_vectors`` rows must follow ``load_sequences(...)[2]`` (the sorted unique item ids of the
reviews); ``item_vector_order`` gives that order for a dataset without running anything.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from evaluation.metrics import rank_targets, summarize
from evaluation.protocol import Split, leave_one_out, sample_users, sequences_from_reviews, write_split
from evaluation.report import plot_results, write_markdown
from evaluation.semrec import PipelineConfig, RerankScores, SemrecPipeline
from indexer.schema import Catalog
from retriever.collaborative import ALS, BPR, Markov, Popularity, Recommender, VectorRecommender
from retriever.sasrec import SASRec

Array = np.ndarray

SYSTEMS: tuple[str, ...] = ("popularity", "markov", "als", "bpr", "sasrec")
TEXT_SYSTEM = "text-zero-shot"
MMR_LAMBDA = 0.8
SEMREC_SYSTEMS: dict[str, PipelineConfig] = {
    "semrec-retrieval": PipelineConfig(),
    "semrec-collab": PipelineConfig(collaborative=True),
    "semrec-rerank": PipelineConfig(collaborative=True, rerank=True),
    "semrec-mmr": PipelineConfig(collaborative=True, rerank=True, mmr_lambda=MMR_LAMBDA),
    "semrec-explore": PipelineConfig(collaborative=True, rerank=True, mmr_lambda=MMR_LAMBDA, explore_slots=1),
}
QUICK_USERS = 2000
KS = (10, 20)
ItemVectorFn = Callable[[Catalog, Array], Array]  # (catalog, item_ids (n_items,) str) -> (n_items, d)


def make_system(name: str, *, quick: bool, seed: int, item_vectors: Array | None = None,
                rerank: RerankScores | None = None) -> Recommender:
    """The recommender behind a system name, with the settings used by the harness.

    Settings were picked on Beauty's validation split (seed 0), not on test:
    Markov window 10 / decay 0.8 / symmetric (NDCG@10 0.0284 vs 0.0215 for window 3 / decay 0.5 /
    directed); ALS 64 factors, 15 iterations, alpha 10 (0.0415 vs 0.0287 at alpha 1); BPR 64
    factors, lr 0.05, reg 0.001, 200 iterations (0.0295 with least-squares fold-in); SASRec the
    paper's defaults, at most 200 epochs / 40 minutes, validation NDCG@10 every 5 epochs, patience 5.
    Quick runs: ALS 32 factors x 10 iterations, BPR 32 x 50, SASRec 10 epochs at lr 5e-3 (a smoke
    test: 2,000 users are far too few to train SASRec's 12k-item embedding table).
    """
    if name == "popularity":
        return Popularity()
    if name == "markov":
        return Markov(window=10, decay=0.8, symmetric=True)
    if name == "als":
        factors, iterations = (32, 10) if quick else (64, 15)
        return ALS(factors=factors, iterations=iterations, alpha=10.0, seed=seed)
    if name == "bpr":
        factors, iterations = (32, 50) if quick else (64, 200)
        return BPR(factors=factors, iterations=iterations, learning_rate=0.05, regularization=0.001, seed=seed)
    if name == "sasrec":
        if quick:
            return SASRec(max_epochs=10, eval_every=5, patience=1, lr=5e-3, seed=seed)
        return SASRec(seed=seed, max_minutes=40.0, progress=True)
    if name == TEXT_SYSTEM or name in SEMREC_SYSTEMS:
        if item_vectors is None:
            raise ValueError(f"{name!r} needs item_vectors")
        if name == TEXT_SYSTEM:
            return VectorRecommender(item_vectors)
        return SemrecPipeline(item_vectors, SEMREC_SYSTEMS[name], rerank, name=name, seed=seed, quick=quick)
    raise ValueError(f"unknown system {name!r}; known: {', '.join((*SYSTEMS, TEXT_SYSTEM, *SEMREC_SYSTEMS))}")


def dataset_folder(dataset: str, data_dir: str | Path) -> Path:
    """``data_dir`` itself, or ``data_dir/<the dataset's folder>`` when data_dir is the data root."""
    from indexer.loaders import DATASETS

    sub = Path(data_dir) / DATASETS.get(dataset, dataset)
    return sub if sub.is_dir() else Path(data_dir)


def load_sequences(dataset: str, data_dir: str | Path) -> tuple[Catalog, list[Array], Array, Array]:
    """(catalog, per-user item sequences, item_ids, user_ids) via ``indexer.loaders.load_dataset``."""
    from indexer.loaders import load_dataset

    catalog = load_dataset(dataset, dataset_folder(dataset, data_dir))
    sequences, item_ids, user_ids = sequences_from_reviews(catalog.reviews)
    return catalog, sequences, item_ids, user_ids


def item_vector_order(dataset: str, data_dir: str | Path) -> Array:
    """(n_items,) str: the item_id of each row that ``item_vectors`` must have for this dataset."""
    return load_sequences(dataset, data_dir)[2]


def category_vectors(catalog: Catalog, item_ids: Array) -> Array | None:
    """(n_items, n_categories) float32 multi-hot of each item's category path, rows L2-normalised.

    Used for intra-list diversity when no item vectors are given; None when no item has categories.
    """
    cats = dict(zip(catalog.items["item_id"].astype(str), catalog.items["categories"], strict=True))
    vocab: dict[str, int] = {}
    rows, cols = [], []
    for r, item in enumerate(item_ids.tolist()):
        for c in cats.get(item, []):
            rows.append(r)
            cols.append(vocab.setdefault(c, len(vocab)))
    if not vocab:
        return None
    out = np.zeros((len(item_ids), len(vocab)), dtype=np.float32)
    out[rows, cols] = 1.0
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def make_split(sequences: list[Array], item_ids: Array, user_ids: Array, *, quick: bool, seed: int) -> Split:
    """The harness split: leave-one-out, 10% cold items, 10% simulated cold users; quick runs keep
    a seeded sample of ``QUICK_USERS`` users with >= 3 interactions."""
    users = sample_users(sequences, QUICK_USERS, seed) if quick else None
    return leave_one_out(sequences, item_ids, user_ids, seed=seed, users=users)


def _split_stats(split: Split) -> dict[str, Any]:
    stats: dict[str, Any] = {
        "n_items": split.n_items,
        "n_users": len(split.user_ids),
        "n_eval_users": len(split.users),
        "n_fit_sequences": len(split.fit),
        "n_fit_interactions": int(sum(len(s) for s in split.fit)),
        "n_cold_items": len(split.cold_items),
    }
    for stage in ("valid", "test"):
        stats[f"{stage}_slices"] = {k: int(v.sum()) for k, v in split.slices(stage).items()}
    return stats


def evaluate_system(
    model: Recommender, split: Split, train_counts: Array, diversity_vectors: Array | None, name: str
) -> dict[str, Any]:
    """Metrics of a fitted model: {stage: {"excluded"|"included": {slice: metrics}}}."""
    out: dict[str, Any] = {}
    for stage in ("valid", "test"):
        histories = split.valid_history if stage == "valid" else split.test_history
        targets = split.valid_target if stage == "valid" else split.test_target
        excluded, included = rank_targets(model.score, histories, targets, max(KS), desc=f"{name} {stage}",
                                          pass_targets=isinstance(model, SemrecPipeline))
        slices = split.slices(stage)
        out[stage] = {
            mode: {
                s: summarize(ranked, train_counts, ks=KS, item_vectors=diversity_vectors, mask=m)
                for s, m in slices.items()
            }
            for mode, ranked in (("excluded", excluded), ("included", included))
        }
    return out


def _fit(model: Recommender, split: Split) -> None:
    if isinstance(model, SASRec | SemrecPipeline):
        model.fit(split.fit, split.n_items, split.valid_history, split.valid_target)
    else:
        model.fit(split.fit, split.n_items)


def _system_info(model: Recommender) -> dict[str, Any]:
    if isinstance(model, SASRec):
        secs = model.epoch_seconds
        return {
            "config": asdict(model.config),
            "epochs_run": len(secs),
            "best_epoch": model.best_epoch,
            "stopped_by": model.stopped_by,
            "seconds_per_epoch": float(np.mean(secs)) if secs else None,
            "epoch_seconds": [round(x, 3) for x in secs],
            "validation_curve": [h for h in model.history if "ndcg@10" in h],
        }
    if isinstance(model, SemrecPipeline):
        return {"config": asdict(model.cfg), "fusion_weights": asdict(model.weights),
                "reranker": model.rerank.reranker.info() if model.cfg.rerank else None}
    skip = {"model", "transitions", "popularity", "item_vectors"}
    params = {k: v for k, v in vars(model).items() if k not in skip and not k.startswith("_")}
    inner = getattr(model, "model", None)
    if inner is not None:
        for key in ("factors", "regularization", "alpha", "iterations", "learning_rate"):
            if hasattr(inner, key):
                params[key] = getattr(inner, key)
    return {"params": {k: v for k, v in params.items() if isinstance(v, int | float | str | bool)}}


def run_eval(
    dataset: str,
    data_dir: str,
    out_dir: str,
    quick: bool = False,
    systems: list[str] | None = None,
    seed: int = 0,
    item_vectors: Array | ItemVectorFn | None = None,
    ranker: str | Path | None = None,
) -> dict[str, Any]:
    """Evaluate ``systems`` on a dataset. Default: the baselines; with item_vectors also text-zero-shot,
    semrec-retrieval and semrec-collab; with ``ranker`` as well semrec-rerank and semrec-mmr.

    Args:
        dataset: a name known to ``indexer.loaders.load_dataset`` ("beauty", ...).
        data_dir: the dataset's folder, or the shared data root holding it.
        out_dir: created if needed; receives results.json, results.md, *.png, split.json.
        quick: evaluate a seeded sample of 2,000 users with small, short models.
        item_vectors: (n_items, d) float32, L2-normalised, rows in ``item_vector_order`` order; or a
            function ``(catalog, item_ids) -> that array``, called once after loading (saves a
            second load of the dataset when the vectors come from the catalog's text).
        ranker: a reranker version directory or a root of versions (``ranker.model.Reranker``).

    Returns the results dict that is written to results.json.
    """
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    catalog, sequences, item_ids, user_ids = load_sequences(dataset, data_dir)
    if callable(item_vectors):
        item_vectors = np.asarray(item_vectors(catalog, item_ids), dtype=np.float32)
    if item_vectors is not None and item_vectors.shape[0] != len(item_ids):
        raise ValueError(f"item_vectors has {item_vectors.shape[0]} rows; {dataset} has {len(item_ids)} items")
    split = make_split(sequences, item_ids, user_ids, quick=quick, seed=seed)
    write_split(split, out / "split.json")
    train_counts = split.train_counts()
    diversity_vectors = item_vectors if item_vectors is not None else category_vectors(catalog, item_ids)
    rerank = _rerank_scores(ranker, catalog, item_ids) if ranker is not None else None
    names = list(systems) if systems else default_systems(item_vectors is not None, rerank is not None)
    results: dict[str, Any] = {
        "dataset": dataset,
        "source": catalog.source,
        "quick": quick,
        "seed": seed,
        "protocol": "leave-one-out, full ranking over all items, 10% cold items, 10% simulated cold users",
        "diversity_vectors": "item_vectors" if item_vectors is not None else "category multi-hot",
        "split": _split_stats(split),
        "machine": {"python": platform.python_version(), "cpus": _cpus()},
        "systems": {},
    }
    load_seconds = time.perf_counter() - t0
    for name in tqdm(names, desc="systems", leave=False):
        model = make_system(name, quick=quick, seed=seed, item_vectors=item_vectors, rerank=rerank)
        t = time.perf_counter()
        _fit(model, split)
        fit_seconds = time.perf_counter() - t
        t = time.perf_counter()
        metrics = evaluate_system(model, split, train_counts, diversity_vectors, name)
        eval_seconds = time.perf_counter() - t
        results["systems"][name] = {
            "fit_seconds": fit_seconds, "eval_seconds": eval_seconds, **_system_info(model), **metrics
        }
        test = metrics["test"]["excluded"]["all"]
        tqdm.write(f"{name:>16}: fit {fit_seconds:7.1f}s  eval {eval_seconds:6.1f}s  "
                   f"test R@10 {test['recall@10']:.4f}  N@10 {test['ndcg@10']:.4f}")
    if rerank is not None:
        results["reranker"] = {**rerank.reranker.info(), "pairs_scored": rerank.pairs}
    results["load_seconds"] = load_seconds
    results["wall_seconds"] = time.perf_counter() - t0
    (out / "results.json").write_text(json.dumps(results, indent=1, default=_jsonable))
    write_markdown(results, out / "results.md")
    plot_results(results, out)
    print(f"{dataset}{' (quick)' if quick else ''}: wall time {results['wall_seconds']:.1f}s -> {out}")
    return results


def default_systems(vectors: bool, reranker: bool) -> list[str]:
    """What runs when no systems are named: everything the given inputs allow."""
    names = [*SYSTEMS]
    if vectors:
        names += [TEXT_SYSTEM, *(n for n, c in SEMREC_SYSTEMS.items() if reranker or not c.rerank)]
    return names


def _rerank_scores(ranker: str | Path, catalog: Catalog, item_ids: Array) -> RerankScores:
    from ranker.model import Reranker
    from ranker.pairs import PairConfig, texts_by_index

    model = Reranker(ranker, threads=_cpus())
    cfg = PairConfig(history_items=model.history_items, words_per_item=model.words_per_item)
    return RerankScores(model, *texts_by_index(catalog.items, item_ids.tolist(), cfg))


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    raise TypeError(f"not JSON serialisable: {type(v).__name__}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m evaluation.harness", description=__doc__.split("\n")[0])
    p.add_argument("dataset")
    p.add_argument("--data-dir", required=True, help="the dataset folder or the shared data root")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--systems", default=None, help="comma-separated subset of " + ",".join(SYSTEMS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--item-vectors", default=None, help=".npy file of (n_items, d) item vectors")
    p.add_argument("--ranker", default=None, help="reranker version directory (or a root of versions)")
    a = p.parse_args(argv)
    vectors = np.load(a.item_vectors).astype(np.float32) if a.item_vectors else None
    systems = a.systems.split(",") if a.systems else None
    run_eval(a.dataset, a.data_dir, a.out, quick=a.quick, systems=systems, seed=a.seed, item_vectors=vectors,
             ranker=a.ranker)


if __name__ == "__main__":
    main()
