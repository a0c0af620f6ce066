"""The README's results table, generated from a harness ``results.json`` (never typed by hand).

    python -m evaluation.readme runs/beauty-full/results.json --readme README.md

Rewrites the block between ``<!-- results:<tag>:start -->`` and ``<!-- results:<tag>:end -->`` (tag:
the dataset, or ``<dataset>-standard`` for the standard protocol)
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
    "ease": "EASE (closed form)",
    "sasrec": "SASRec (plain torch, sampled softmax, 1,024 negatives)",
    "text-zero-shot": "text zero-shot (decayed mean of history vectors)",
    "semrec": "**semrec**: the served pipeline",
    "semrec-no-learned": "semrec without the learned ranking (weighted RRF of the sources)",
    "semrec-no-mf": "semrec without MF",
    "semrec-no-encoder": "semrec without the history encoder",
    "semrec-no-ease": "semrec without EASE",
    "semrec-no-rerank": "semrec without the reranking stage",
    "semrec-no-mmr": "semrec without MMR",
    "semrec-no-explore": "semrec without the exploration slot",
}
# (system, NDCG@10, Recall@10 or None, source, their protocol). Only full-ranking figures with the
# training history excluded compare with ours directly (eSASRec's protocol = our `standard`).
PUBLISHED = {
    "beauty": [
        ("eSASRec", "0.0523", "0.0928",
         "Tikhonovich et al., RecSys 2025 (arXiv 2508.06450), preliminary study on academic benchmarks",
         "leave-one-out, full ranking, history excluded, seen targets dropped: our `standard`"),
        ("SASRec, sampled softmax", "0.0531", "0.0921", "same paper",
         "as above: our `standard`"),
        ("TIGER", "0.0384", "0.0648", "Rajput et al., NeurIPS 2023",
         "leave-one-out, full ranking, history not excluded: compare with our history-included figures"),
    ],
    "scientific": [
        ("Recformer", "0.1027", None, "Li et al., KDD 2023", "its own split and candidate protocol"),
    ],
}
COLUMNS = (("recall@10", "all"), ("ndcg@10", "all"), ("ndcg@10", "warm"), ("ndcg@10", "cold_item"),
           ("ndcg@10", "cold_user"), ("coverage@10", "all"))
HEADS = {("recall@10", "all"): "Recall@10", ("ndcg@10", "all"): "NDCG@10", ("ndcg@10", "warm"): "NDCG@10 warm",
         ("ndcg@10", "cold_item"): "NDCG@10 cold items", ("ndcg@10", "cold_user"): "NDCG@10 cold users",
         ("coverage@10", "all"): "coverage@10"}


def block_tag(results: dict[str, Any]) -> str:
    """The README block a run fills: ``<dataset>`` (cold protocol) or ``<dataset>-standard``."""
    protocol = results.get("protocol", "cold")
    return results["dataset"] if protocol == "cold" else f"{results['dataset']}-{protocol}"


def table(results: dict[str, Any]) -> str:
    """Markdown: our systems (the columns the run's protocol has), then the published references."""
    s = results["split"]
    first = next(iter(results["systems"].values()))["test"]["excluded"]
    cols = [c for c in COLUMNS if c[1] in first]
    head = ["| system | " + " | ".join(HEADS[c] for c in cols) + " | NDCG@10 history included | fit + eval s |",
            "|---|" + "---:|" * (len(cols) + 2)]
    for name, r in results["systems"].items():
        test = r["test"]["excluded"]
        included = r["test"].get("included", {}).get("all", {}).get("ndcg@10")
        cells = [f"{test[sl][metric]:.4f}" for metric, sl in cols] + ["-" if included is None else f"{included:.4f}"]
        head.append(f"| {NAMES.get(name, name)} | " + " | ".join(cells)
                    + f" | {r['fit_seconds'] + r['eval_seconds']:.0f} |")
    slices = ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in s["test_slices"].items())
    lines = [
        f"{results['dataset']} [{results.get('protocol', 'cold')}]: {s['n_eval_users']:,} users, {s['n_items']:,} "
        f"items, {s['n_cold_items']:,} cold items; test cases: {slices}. Wall time "
        f"{results['wall_seconds'] / 60:.1f} min{' (quick)' if results['quick'] else ''}.", "", *head]
    refs = PUBLISHED.get(results["dataset"], [])
    if refs:
        lines += ["", "Published, same dataset (their numbers, not run here):", "",
                  "| system | NDCG@10 | Recall@10 | source | protocol |", "|---|---:|---:|---|---|"]
        lines += [f"| {n} | {ndcg} | {rec or '-'} | {src} | {split} |" for n, ndcg, rec, src, split in refs]
    return "\n".join(lines)


def update_readme(readme: Path, results: dict[str, Any]) -> None:
    """Replace the dataset's marked block in ``readme`` (the markers must already be there)."""
    tag = block_tag(results)
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
