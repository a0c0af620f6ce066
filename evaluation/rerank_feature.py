"""Does the reranker's score pay as a feature of the learned ranking? The served pipeline on one
replayed split, its learned ranking fitted twice on the same validation groups (with the reranker's
column, and with it blanked), both served on the test stage.

    python -m evaluation.rerank_feature --dataset beauty --data-dir ../shared/data \\
        --ranker runs/ranker/v0004 [--protocol standard] [--users 6000 --quick] [--serve-dir DIR]

Prints held-out NDCG@10 of each fit, test NDCG@10 / Recall@10 per slice, the seconds of each pass
and the paired-bootstrap 95% interval of the NDCG@10 difference. ``--serve-dir`` also writes a
service directory (``index/`` with the version that carries the reranker under ``index/models``,
``models-plain/`` with the one without, ``events.db``; pseudonym key ``REPLAY_KEY``) for
``bench.personal`` and ``bench.loadtest``.
"""

from __future__ import annotations

import argparse
import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from ranker.artifacts import Models, save_models
from ranker.features import NAMES
from ranker.model import Reranker

from .harness import QUICK_LEARNED, SEMREC_SYSTEMS, load_sequences
from .learned import LearnedConfig, fit_learned, fit_ranking_on, ranking_groups
from .metrics import list_ranks, ndcg_at_k, paired_interval, recall_at_k
from .protocol import leave_one_out, sample_users
from .served import REPLAY_KEY, Replay


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="beauty")
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--ranker", type=Path, required=True, help="reranker version (or root)")
    p.add_argument("--variant", default="int8", choices=("int8", "fp32"))
    p.add_argument("--protocol", default="standard", choices=("standard", "cold"))
    p.add_argument("--users", type=int, default=0, help="evaluated shoppers sampled (0: all)")
    p.add_argument("--quick", action="store_true", help="the harness's quick learned parts")
    p.add_argument("--cache", type=Path, default=Path("runs/cache"))
    p.add_argument("--serve-dir", type=Path, default=None)
    a = p.parse_args(argv)
    from indexer.build import catalog_item_vectors
    from indexer.embed import load_embedder

    embedder = load_embedder("minilm")
    catalog, sequences, item_ids, user_ids = load_sequences(a.dataset, a.data_dir)
    vectors = catalog_item_vectors(catalog.items, item_ids.tolist(), embedder, cache_dir=a.cache)
    users = sample_users(sequences, a.users, 0) if a.users else None
    split = leave_one_out(sequences, item_ids, user_ids, seed=0, users=users, protocol=a.protocol)
    reranker = Reranker(a.ranker, variant=a.variant, threads=1)
    work = a.serve_dir or Path(f"runs/rerank-feature-{a.dataset}")
    replay = Replay.build(split, catalog.items, vectors, embedder, work / "replay", reranker=reranker, progress=False)
    cfg = QUICK_LEARNED if a.quick else LearnedConfig()
    record = fit_learned(replay, vectors, replace(cfg, parts=tuple(x for x in cfg.parts if x != "ranking")))
    x, y, groups = ranking_groups(replay, SEMREC_SYSTEMS["semrec"], cfg.ranking)
    blank = x.copy()
    blank[:, NAMES.index("reranker")] = np.nan
    fits = {"with the reranker's score": fit_ranking_on(x, y, groups, cfg.ranking),
            "without": fit_ranking_on(blank, y, groups, cfg.ranking)}
    for name, (_, info) in fits.items():
        print(f"{name}: {info.get('groups')} groups, held-out NDCG@10 {info.get('holdout_ndcg10')} "
              f"(fusion {info.get('holdout_ndcg10_fused')}), rounds {info.get('rounds')}", flush=True)
    replay.advance()
    svc, slices, out = replay.svc, split.slices("test"), {}
    for (name, (model, _)), rr in zip(fits.items(), (reranker, None)):
        svc.ranking, svc.reranker = model, rr
        t = time.perf_counter()
        ids, _ = replay.lists(SEMREC_SYSTEMS["semrec"], 10)
        ranks = list_ranks(ids, split.test_target)
        out[name] = ranks[slices["all"]]
        per = {s: round(float(ndcg_at_k(ranks[m], 10)), 4) for s, m in slices.items()}
        print(f"test, {name}: NDCG@10 {per}, Recall@10 {recall_at_k(ranks[slices['all']], 10):.4f}, "
              f"{time.perf_counter() - t:.0f} s for {len(ids)} shoppers", flush=True)
    with_, without = (ndcg_at_k(r, 10) for r in out.values())
    lo, hi = paired_interval(*out.values())
    print(f"difference {with_ - without:+.5f} NDCG@10 ({with_ / without - 1:+.2%}), 95% CI {lo:+.2%} to {hi:+.2%}")
    if a.serve_dir is not None:
        svc.index.save(work / "index")
        reranker.detach()
        (with_model, with_info), (plain_model, plain_info) = fits.values()
        card = {"command": "python -m evaluation.rerank_feature"}
        save_models(Models(svc.mf, svc.encoder, with_model, svc.ease, reranker), work / "index" / "models",
                    {**card, "parts": {**record, "ranking": with_info, "reranker": reranker.info()}})
        save_models(Models(svc.mf, svc.encoder, plain_model, svc.ease), work / "models-plain",
                    {**card, "parts": {**record, "ranking": plain_info}})
        shutil.copy(work / "replay" / "events.db", work / "events.db")
        print(f"service directory: {work} (SEMREC_PSEUDONYM_KEY={REPLAY_KEY})")
    replay.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
