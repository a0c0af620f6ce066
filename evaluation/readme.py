"""The README's results table, generated from a harness ``results.json`` (never typed by hand).

    python -m evaluation.readme runs/beauty-full/results.json --readme README.md

Rewrites the block between ``<!-- results:<dataset>:start -->`` and ``<!-- results:<dataset>:end -->``
with the test-stage numbers (history excluded) of every system in the run, and the published
reference numbers beside them with their sources.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

NAMES = {
    "popularity": "popularity",
    "markov": "Markov (item transitions)",
    "als": "ALS (`implicit`)",
    "bpr": "BPR (`implicit`)",
    "sasrec": "SASRec (plain torch, paper defaults)",
    "text-zero-shot": "text zero-shot (decayed mean of history vectors)",
    "semrec-retrieval": "**semrec** retrieval only (text top-50)",
    "semrec-collab": "**semrec** + collaborative candidates (text ∪ Markov ∪ ALS)",
    "semrec-rerank": "**semrec** + cross-encoder reranker (fused)",
    "semrec-mmr": "**semrec** + MMR (λ 0.8)",
    "semrec-explore": "**semrec** + exploration slot: the full pipeline, as served",
}
# (system, NDCG@10, Recall@10 or None, source, how their split differs from ours)
PUBLISHED = {
    "beauty": [
        ("SASRec", "0.0318–0.0375", "0.0605 (TIGER's re-run)", "Kang & McAuley 2018, as re-run in later papers "
         "(range as cited in issue #6; 0.0318 in TIGER's table)", "leave-one-out, full ranking, no cold items"),
        ("TIGER", "0.0384", "0.0648", "Rajput et al., NeurIPS 2023", "leave-one-out, full ranking, no cold items"),
        ("LC-Rec", "0.0438", None, "Zheng et al., ICDE 2024 (figure as cited in issue #6)",
         "leave-one-out, full ranking, no cold items"),
    ],
    "scientific": [
        ("Recformer", "0.1027", None, "Li et al., KDD 2023", "its own split and candidate protocol"),
    ],
}
COLUMNS = (("recall@10", "all"), ("ndcg@10", "all"), ("ndcg@10", "warm"), ("ndcg@10", "cold_item"),
           ("ndcg@10", "cold_user"), ("coverage@10", "all"))


def table(results: dict[str, Any]) -> str:
    """Markdown: our systems, then the published references."""
    s = results["split"]
    head = ["| system | Recall@10 | NDCG@10 | NDCG@10 warm | NDCG@10 cold items | NDCG@10 cold users "
            "| coverage@10 | fit + eval s |", "|---|" + "---:|" * 7]
    for name, r in results["systems"].items():
        test = r["test"]["excluded"]
        cells = [f"{test[sl][metric]:.4f}" for metric, sl in COLUMNS]
        head.append(f"| {NAMES.get(name, name)} | " + " | ".join(cells)
                    + f" | {r['fit_seconds'] + r['eval_seconds']:.0f} |")
    lines = [
        f"{results['dataset']}: {s['n_eval_users']:,} users, {s['n_items']:,} items, {s['n_cold_items']:,} cold "
        f"items; test slices: warm {s['test_slices']['warm']:,}, cold items {s['test_slices']['cold_item']:,}, "
        f"cold users {s['test_slices']['cold_user']:,}. Wall time {results['wall_seconds'] / 60:.1f} min"
        f"{' (quick)' if results['quick'] else ''}.", "", *head]
    refs = PUBLISHED.get(results["dataset"], [])
    if refs:
        lines += ["", "Published, same dataset (their numbers, not run here):", "",
                  "| system | NDCG@10 | Recall@10 | source | split |", "|---|---:|---:|---|---|"]
        lines += [f"| {n} | {ndcg} | {rec or '-'} | {src} | {split} |" for n, ndcg, rec, src, split in refs]
    return "\n".join(lines)


def update_readme(readme: Path, results: dict[str, Any]) -> None:
    """Replace the dataset's marked block in ``readme`` (the markers must already be there)."""
    tag = results["dataset"]
    start, end = f"<!-- results:{tag}:start -->", f"<!-- results:{tag}:end -->"
    text = readme.read_text()
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if not pattern.search(text):
        raise ValueError(f"{readme} has no {start} ... {end} block")
    readme.write_text(pattern.sub(lambda _: f"{start}\n{table(results)}\n{end}", text))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m evaluation.readme", description=__doc__.split("\n")[0])
    p.add_argument("results", help="results.json of a harness run")
    p.add_argument("--readme", default="README.md")
    a = p.parse_args(argv)
    update_readme(Path(a.readme), json.loads(Path(a.results).read_text()))


if __name__ == "__main__":
    main()
