"""Two harness runs of one split, paired shopper by shopper: what a change is worth beyond the noise.

    python -m evaluation.compare RUN_A RUN_B [--system semrec] [--system-b NAME] [--stage test]

RUN_A and RUN_B are output folders of ``semrec eval`` / ``python -m evaluation.harness`` (each
with ``split.json`` and ``ranks.npz``) on the same split: same dataset, seed, protocol and users.
Per slice of the split: NDCG@10 and Recall@10 of each, the difference, and the 95% paired-bootstrap
interval of NDCG@10(A) / NDCG@10(B) - 1 (``evaluation.metrics.paired_interval``: the same shoppers
resampled for both). Two refits of a learned part move a slice by a few percent on their own, so a
difference whose interval holds 0 is not a gain.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from .harness import RANKS_FILE
from .metrics import ndcg_at_k, paired_interval, recall_at_k
from .protocol import read_split


def _ranks(run: Path, key: str) -> np.ndarray:
    with np.load(run / RANKS_FILE) as saved:
        if key not in saved.files:
            raise ValueError(f"{run / RANKS_FILE} has no pass {key!r}; it has {sorted(saved.files)}")
        return saved[key]


def compare(run_a: str | Path, run_b: str | Path, system: str = "semrec", system_b: str | None = None,
            stage: str = "test", mode: str = "excluded") -> list[dict]:
    """Per slice: {"slice", "cases", "ndcg_a", "ndcg_b", "ratio", "ci", "recall_a", "recall_b"}:
    ``ratio`` NDCG@10(A) / NDCG@10(B) - 1 and ``ci`` its (low, high) 95% interval (NaN when B is 0).
    ValueError when the runs' splits differ or a pass is missing."""
    run_a, run_b = Path(run_a), Path(run_b)
    for run in (run_a, run_b):
        for name in ("split.json", RANKS_FILE):
            if not (run / name).is_file():
                raise ValueError(f"{run} has no {name}: not a harness output folder (or from before {RANKS_FILE})")
    split, other = read_split(run_a / "split.json"), read_split(run_b / "split.json")
    target = "valid_target" if stage == "valid" else "test_target"
    if (split.protocol != other.protocol or not np.array_equal(split.user_ids[split.users], other.user_ids[other.users])
            or not np.array_equal(split.item_ids[getattr(split, target)], other.item_ids[getattr(other, target)])):
        raise ValueError(f"{run_a} and {run_b} are not runs of the same split")
    a = _ranks(run_a, f"{system}/{stage}/{mode}")
    b = _ranks(run_b, f"{system_b or system}/{stage}/{mode}")
    rows, nan = [], float("nan")
    for name, mask in split.slices(stage).items():
        ra, rb = a[mask], b[mask]
        na, nb = ndcg_at_k(ra, 10), ndcg_at_k(rb, 10)
        rows.append({"slice": name, "cases": int(mask.sum()), "ndcg_a": na, "ndcg_b": nb,
                     "ratio": na / nb - 1 if nb > 0 else nan, "ci": paired_interval(ra, rb) if nb > 0 else (nan, nan),
                     "recall_a": recall_at_k(ra, 10), "recall_b": recall_at_k(rb, 10)})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m evaluation.compare", description=__doc__.split("\n\n")[0])
    p.add_argument("run_a", help="harness output folder (the changed system)")
    p.add_argument("run_b", help="harness output folder of the same split (the reference)")
    p.add_argument("--system", default="semrec", help="system of RUN_A (default semrec)")
    p.add_argument("--system-b", default=None, help="system of RUN_B (default: the same as --system)")
    p.add_argument("--stage", choices=("valid", "test"), default="test")
    p.add_argument("--mode", choices=("excluded", "included"), default="excluded", help="history excluded or included")
    a = p.parse_args(argv)
    try:
        rows = compare(a.run_a, a.run_b, a.system, a.system_b, a.stage, a.mode)
    except ValueError as e:
        p.error(str(e))
    print(f"{a.stage}, history {a.mode}: A = {a.run_a} ({a.system}), B = {a.run_b} ({a.system_b or a.system})")
    print(f"{'slice':>10} {'cases':>6} {'NDCG@10 A':>10} {'B':>7} {'A/B-1':>7}  95% CI           "
          f"{'Recall@10 A':>11} {'B':>7}")
    for r in rows:
        lo, hi = r["ci"]
        print(f"{r['slice']:>10} {r['cases']:>6} {r['ndcg_a']:>10.4f} {r['ndcg_b']:>7.4f} {r['ratio']:>+7.1%}  "
              f"[{lo:+.1%}, {hi:+.1%}]  {r['recall_a']:>11.4f} {r['recall_b']:>7.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
