"""Offline evaluation: load a dataset, split it, fit every system, rank, report.

    python -m evaluation.harness beauty --data-dir ../shared/data --out runs/beauty [--quick] [--protocol cold]

Systems: the baselines ``popularity``, ``markov``, ``als``, ``bpr``, ``sasrec``; with item vectors
``text-zero-shot`` (recency-decayed mean of the history's item vectors) and the served pipeline,
``semrec`` (``ranker.pipeline`` with the service's default config, over the split replayed
through a real event log and item index: ``evaluation.served``) and its ablations, each a config
of the same pipeline (``SEMREC_SYSTEMS``). Every system is fitted on ``split.fit`` and evaluated
on the validation and test cases, history excluded (the headline numbers) and included, on the
protocol's slices (``evaluation.protocol``: ``standard`` or ``cold``). Baselines rank all items;
served systems answer their top ``max(KS)`` (an item outside counts as a miss, which is exact for
every metric reported). Outputs in ``out_dir``: ``results.json``, ``results.md``, PNG plots,
``split.json`` (the split, for reproduction) and ``ranks.npz`` (every pass's target ranks, which
``python -m evaluation.compare`` pairs across two runs of one split).

``item_vectors`` rows must follow ``load_sequences(...)[2]`` (the sorted unique item ids of the
reviews); ``item_vector_order`` gives that order for a dataset without running anything.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from indexer.embed import Embedder
from indexer.schema import Catalog
from ranker.pipeline import PipelineConfig
from retriever.collaborative import Recommender
from retriever.ease import EASEConfig
from retriever.mf import MFConfig
from retriever.sasrec import SASRec
from retriever.sequence import SequenceConfig

from .learned import LearnedConfig, RankingConfig, fit_learned
from .metrics import Ranked, list_ranks, rank_targets, summarize
from .protocol import PROTOCOLS, Split, leave_one_out, sample_users, sequences_from_reviews, write_split
from .report import plot_results, write_markdown
from .served import Replay
from .tuning import tune

Array = np.ndarray

SYSTEMS: tuple[str, ...] = ("popularity", "markov", "als", "bpr", "ease", "sasrec")
TEXT_SYSTEM = "text-zero-shot"
_SERVED = PipelineConfig()
# The served pipeline and its ablations: configs of the one pipeline (``ranker.pipeline``).
SEMREC_SYSTEMS: dict[str, PipelineConfig] = {
    "semrec": _SERVED,
    "semrec-no-learned": replace(_SERVED, learned_ranking=False),
    "semrec-no-mf": replace(_SERVED, candidates=replace(_SERVED.candidates, mf=0.0)),
    "semrec-no-encoder": replace(_SERVED, candidates=replace(_SERVED.candidates, encoder=0.0)),
    "semrec-no-ease": replace(_SERVED, candidates=replace(_SERVED.candidates, ease=0.0)),
    "semrec-no-rerank": replace(_SERVED, use_reranker=False),
    "semrec-no-mmr": replace(_SERVED, rerank=replace(_SERVED.rerank, mmr_lambda=1.0)),
    "semrec-no-explore": replace(_SERVED, candidates=replace(_SERVED.candidates, explore_slots=0)),
}
QUICK_USERS = 2000
RANKS_FILE = "ranks.npz"  # per pass "system/stage/mode": (n,) 0-based target ranks, -1 missed (evaluation.compare)
# Quick runs (CI): small learned parts, minutes not hours; the full run uses LearnedConfig().
QUICK_LEARNED = LearnedConfig(
    mf=MFConfig(factors=32, iterations=8),
    ease=EASEConfig(max_items=3000), ease_lams=(50.0,),  # a 3k-item inverse: seconds, not a minute
    encoder=SequenceConfig(item_input="text+id", hidden=32, max_epochs=6, eval_every=3, patience=1, lr=3e-3,
                           eval_users=500),
    ranking=RankingConfig(users=None, rounds=150))
KS = (10, 20)
ItemVectorFn = Callable[[Catalog, Array], Array]  # (catalog, item_ids (n_items,) str) -> (n_items, d)


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


def make_split(sequences: list[Array], item_ids: Array, user_ids: Array, *, quick: bool, seed: int,
               protocol: str = "cold", users: int | None = None) -> Split:
    """The harness split: leave-one-out under ``protocol`` ("cold": 10% cold items, 10% simulated
    cold users); a seeded sample of ``users`` shoppers with >= 3 interactions when given, else of
    ``QUICK_USERS`` for quick runs, else everyone."""
    n = users if users is not None else (QUICK_USERS if quick else None)
    sample = sample_users(sequences, n, seed) if n is not None else None
    return leave_one_out(sequences, item_ids, user_ids, seed=seed, users=sample, protocol=protocol)


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
    model: Recommender, split: Split, train_counts: Array, diversity_vectors: Array | None, name: str,
    ranks: dict[str, Array] | None = None,
) -> dict[str, Any]:
    """Metrics of a fitted model: {stage: {"excluded"|"included": {slice: metrics}}}. ``ranks``, if
    given, receives each pass's target ranks under ``"{name}/{stage}/{mode}"`` (``RANKS_FILE``)."""
    out: dict[str, Any] = {}
    for stage in ("valid", "test"):
        histories = split.valid_history if stage == "valid" else split.test_history
        targets = split.valid_target if stage == "valid" else split.test_target
        excluded, included = rank_targets(model.score, histories, targets, max(KS), desc=f"{name} {stage}")
        slices = split.slices(stage)
        if ranks is not None:
            ranks.update({f"{name}/{stage}/excluded": excluded.ranks, f"{name}/{stage}/included": included.ranks})
        out[stage] = {
            mode: {
                s: summarize(ranked, train_counts, ks=KS, item_vectors=diversity_vectors, mask=m)
                for s, m in slices.items()
            }
            for mode, ranked in (("excluded", excluded), ("included", included))
        }
    return out


def served_runs(names: list[str]) -> list[tuple[str, str, str]]:
    """(stage, system, mode) of every served pass, in order. One served call per user and pass, so
    passes are spent where they inform: validation for the served default only (what a learned part
    would be tuned on), test for every system history excluded, and history included for the
    served default."""
    head = "semrec" if "semrec" in names else names[0]
    return ([("valid", head, "excluded")] + [("test", n, "excluded") for n in names]
            + [("test", head, "included")])


def evaluate_served(replay: Replay, names: list[str], split: Split, train_counts: Array,
                    diversity_vectors: Array | None, results: dict[str, Any], ranks: dict[str, Array] | None = None
                    ) -> None:
    """The served systems over one replay (``served_runs``): validation, then the validation targets
    happen (``Replay.advance``), then test. Fills ``results["systems"][name]`` (and ``ranks`` as
    :func:`evaluate_system` does)."""
    advanced = False
    for stage, name, mode in served_runs(names):
        if stage == "test" and not advanced:
            replay.advance()
            advanced = True
        cfg, t = SEMREC_SYSTEMS[name], time.perf_counter()
        entry = results["systems"].setdefault(name, {"fit_seconds": 0.0, "eval_seconds": 0.0, "config": asdict(cfg)})
        targets = split.valid_target if stage == "valid" else split.test_target
        ids, scores = replay.lists(cfg, max(KS), exclude_history=mode == "excluded", desc=f"{name} {stage} {mode}")
        ranked = Ranked(ids, scores, list_ranks(ids, targets))
        if ranks is not None:
            ranks[f"{name}/{stage}/{mode}"] = ranked.ranks
        entry.setdefault(stage, {})[mode] = {
            s: summarize(ranked, train_counts, ks=KS, item_vectors=diversity_vectors, mask=m)
            for s, m in split.slices(stage).items()}
        entry["eval_seconds"] += time.perf_counter() - t
        if stage == "test" and mode == "excluded":
            test = entry["test"]["excluded"]["all"]
            tqdm.write(f"{name:>16}: {entry['eval_seconds']:6.1f}s  test R@10 {test['recall@10']:.4f}  "
                       f"N@10 {test['ndcg@10']:.4f}")


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
            "validation_curve": [h for h in model.history if "valid" in h],
        }
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
    protocol: str = "cold",
    embedder: Embedder | None = None,
    learned: LearnedConfig | None = None,
    users: int | None = None,
) -> dict[str, Any]:
    """Evaluate ``systems`` on a dataset. Default: the baselines; with item_vectors also
    text-zero-shot and the served pipeline ``semrec`` with its ablations.

    Args:
        dataset: a name known to ``indexer.loaders.load_dataset`` ("beauty", ...).
        data_dir: the dataset's folder, or the shared data root holding it.
        out_dir: created if needed; receives results.json, results.md, *.png, split.json, ranks.npz.
        quick: evaluate a seeded sample of 2,000 users with small, short models.
        users: evaluate a seeded sample of this many users (with the full models unless ``quick``).
        item_vectors: (n_items, d) float32, L2-normalised, rows in ``item_vector_order`` order; or a
            function ``(catalog, item_ids) -> that array``, called once after loading (saves a
            second load of the dataset when the vectors come from the catalog's text).
        ranker: a reranker version directory or a root of versions (``ranker.model.Reranker``),
            loaded into the served pipeline as ``SEMREC_RANKER_DIR`` loads it into the service.
        protocol: "standard" or "cold" (``evaluation.protocol``).
        embedder: the served pipeline's embedder (the one that made ``item_vectors``; default MiniLM).
        learned: settings of the served pipeline's learned parts, fitted on the split's fit sequences
            and validation shoppers (``evaluation.learned``); default ``LearnedConfig()``.

    Returns the results dict that is written to results.json.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; use one of {PROTOCOLS}")
    if users is not None and users < 1:  # told before the dataset loads and its vectors are computed
        raise ValueError(f"users must be at least 1, not {users}")
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    catalog, sequences, item_ids, user_ids = load_sequences(dataset, data_dir)
    if callable(item_vectors):
        item_vectors = np.asarray(item_vectors(catalog, item_ids), dtype=np.float32)
    if item_vectors is not None and item_vectors.shape[0] != len(item_ids):
        raise ValueError(f"item_vectors has {item_vectors.shape[0]} rows; {dataset} has {len(item_ids)} items")
    split = make_split(sequences, item_ids, user_ids, quick=quick, seed=seed, protocol=protocol, users=users)
    write_split(split, out / "split.json")
    train_counts = split.train_counts()
    diversity_vectors = item_vectors if item_vectors is not None else category_vectors(catalog, item_ids)
    names = list(systems) if systems else default_systems(item_vectors is not None)
    results: dict[str, Any] = {
        "dataset": dataset,
        "source": catalog.source,
        "quick": quick,
        "seed": seed,
        "protocol": protocol,
        "protocol_text": PROTOCOL_TEXT[protocol],
        "diversity_vectors": "item_vectors" if item_vectors is not None else "category multi-hot",
        "split": _split_stats(split),
        "machine": {"python": platform.python_version(), "cpus": _cpus()},
        "systems": {},
    }
    ranks: dict[str, np.ndarray] = {}
    load_seconds = time.perf_counter() - t0
    for name in tqdm([n for n in names if n not in SEMREC_SYSTEMS], desc="systems", leave=False):
        t = time.perf_counter()
        model, tuning = tune(name, split, quick=quick, seed=seed, item_vectors=item_vectors)
        fit_seconds = time.perf_counter() - t
        t = time.perf_counter()
        metrics = evaluate_system(model, split, train_counts, diversity_vectors, name, ranks)
        eval_seconds = time.perf_counter() - t
        results["systems"][name] = {
            "fit_seconds": fit_seconds, "eval_seconds": eval_seconds, "tuning": tuning, **_system_info(model),
            **metrics}
        test = metrics["test"]["excluded"]["all"]
        tqdm.write(f"{name:>16}: tuned+fit {fit_seconds:7.1f}s ({len(tuning['trials'])} trials, best "
                   f"{tuning['best']})  test R@10 {test['recall@10']:.4f}  N@10 {test['ndcg@10']:.4f}")
    served = [n for n in names if n in SEMREC_SYSTEMS]
    if served:
        if item_vectors is None:
            raise ValueError(f"{served} need item_vectors (the served pipeline searches the item index)")
        t = time.perf_counter()
        replay = _replay(split, catalog, item_vectors, embedder, ranker, out)
        results["replay_seconds"] = time.perf_counter() - t
        results["learned"] = fit_learned(replay, item_vectors, learned or (QUICK_LEARNED if quick else LearnedConfig()),
                                         progress=not quick)
        tqdm.write(f"learned parts: {json.dumps({k: v.get('seconds') for k, v in results['learned'].items()})} s")
        results["reranker"] = replay.svc.reranker.info() if replay.svc.reranker is not None else None
        try:
            evaluate_served(replay, served, split, train_counts, diversity_vectors, results, ranks)
        finally:
            replay.close()
    results["load_seconds"] = load_seconds
    results["wall_seconds"] = time.perf_counter() - t0
    (out / "results.json").write_text(json.dumps(results, indent=1, default=_jsonable))
    np.savez_compressed(out / RANKS_FILE, **ranks)
    write_markdown(results, out / "results.md")
    plot_results(results, out)
    print(f"{dataset}{' (quick)' if quick else ''} [{protocol}]: wall time {results['wall_seconds']:.1f}s -> {out}")
    return results


PROTOCOL_TEXT = {
    "standard": "leave-one-out, full ranking over all items, all users, no cold slices; cases whose target "
                "is already in the history are dropped (eSASRec's protocol)",
    "cold": "leave-one-out, full ranking over all items, 10% cold items, 10% simulated cold users",
}


def default_systems(vectors: bool) -> list[str]:
    """What runs when no systems are named: everything the given inputs allow."""
    return [*SYSTEMS, *((TEXT_SYSTEM, *SEMREC_SYSTEMS) if vectors else ())]


def _replay(split: Split, catalog: Catalog, item_vectors: Array, embedder: Embedder | None,
            ranker: str | Path | None, out: Path) -> Replay:
    from indexer.embed import load_embedder
    from ranker.model import Reranker

    reranker = Reranker(ranker) if ranker is not None else None
    return Replay.build(split, catalog.items, item_vectors, embedder or load_embedder("minilm"), out / "replay",
                        reranker=reranker)


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
    p.add_argument("--protocol", default="cold", choices=PROTOCOLS)
    p.add_argument("--users", type=int, default=None, help="a seeded sample of this many shoppers (full models)")
    a = p.parse_args(argv)
    if a.users is not None and a.users < 1:
        p.error("--users must be at least 1")
    vectors = np.load(a.item_vectors).astype(np.float32) if a.item_vectors else None
    systems = a.systems.split(",") if a.systems else None
    run_eval(a.dataset, a.data_dir, a.out, quick=a.quick, systems=systems, seed=a.seed, item_vectors=vectors,
             ranker=a.ranker, protocol=a.protocol, users=a.users)


if __name__ == "__main__":
    main()
