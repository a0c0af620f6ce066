"""Human-readable output of a harness run: a markdown table and PNG plots (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def slices_of(results: dict[str, Any]) -> list[str]:
    """The slices the run's protocol reports (cold: all, warm, cold_item, cold_user; standard: all)."""
    systems = results["systems"]
    return list(next(iter(systems.values()))["test"]["excluded"]) if systems else ["all"]


MAIN_COLUMNS = ("recall@10", "ndcg@10", "recall@20", "ndcg@20", "mrr@20", "coverage@10", "novelty@10",
                "diversity@10", "popular_share@10")


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 100 else f"{v:.0f}"
    return str(v)


def _table(results: dict[str, Any], stage: str, mode: str, slice_name: str) -> list[str]:
    """One row per system that ran this stage and mode (served ablations run on test only)."""
    systems = {n: r for n, r in results["systems"].items() if mode in r.get(stage, {})}
    first = next(iter(systems.values()))[stage][mode][slice_name] if systems else {}
    cols = [c for c in MAIN_COLUMNS if c in first]
    lines = ["| system | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for name, r in systems.items():
        m = r[stage][mode][slice_name]
        lines.append(f"| {name} | " + " | ".join(_fmt(m.get(c)) for c in cols) + " |")
    return lines


def _slice_table(results: dict[str, Any], stage: str, metric: str) -> list[str]:
    slices = slices_of(results)
    lines = ["| system | " + " | ".join(f"{s} (n={_n(results, stage, s)})" for s in slices) + " |",
             "|---|" + "---:|" * len(slices)]
    for name, r in results["systems"].items():
        lines.append(f"| {name} | " + " | ".join(_fmt(r[stage]["excluded"][s][metric]) for s in slices) + " |")
    return lines


def _n(results: dict[str, Any], stage: str, slice_name: str) -> int:
    return int(results["split"][f"{stage}_slices"][slice_name])


def markdown(results: dict[str, Any]) -> str:
    """The report as markdown: headline test table, slices, included-history view, timings."""
    s = results["split"]
    title = f"# Offline evaluation: {results['dataset']}{' (quick)' if results['quick'] else ''}"
    out = [
        title, "",
        f"Protocol: {results['protocol']}; seed {results['seed']}. "
        f"{s['n_eval_users']} evaluated users, {s['n_items']} items, {s['n_fit_interactions']} fit "
        f"interactions, {s['n_cold_items']} cold items. Wall time {results['wall_seconds']:.1f} s.",
        "",
        "## Test, history excluded, all users", "", *_table(results, "test", "excluded", "all"), "",
        "## Test NDCG@10 by slice (history excluded)", "", *_slice_table(results, "test", "ndcg@10"), "",
        "## Test Recall@10 by slice (history excluded)", "", *_slice_table(results, "test", "recall@10"), "",
        "## Validation, history excluded, all users", "", *_table(results, "valid", "excluded", "all"), "",
        "## Test, history NOT excluded, all users", "", *_table(results, "test", "included", "all"), "",
        "## Timings", "", "| system | fit s | eval s | notes |", "|---|---:|---:|---|",
    ]
    for name, r in results["systems"].items():
        note = ""
        if "epochs_run" in r:
            note = (f"{r['epochs_run']} epochs, best {r['best_epoch']}, "
                    f"{_fmt(r['seconds_per_epoch'])} s/epoch")
        out.append(f"| {name} | {r['fit_seconds']:.1f} | {r['eval_seconds']:.1f} | {note} |")
    out.append("")
    out.append(f"Diversity vectors: {results.get('diversity_vectors', '-')}. Novelty in bits (-log2 p, add-one "
               "smoothed training popularity); popular_share = share of top-10 items in the 20% most "
               "popular items.")
    return "\n".join(out) + "\n"


def write_markdown(results: dict[str, Any], path: str | Path) -> None:
    Path(path).write_text(markdown(results))


def plot_results(results: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """Bar charts: test metrics per system, and NDCG@10 / Recall@10 warm vs cold. Returns the paths."""
    out_dir = Path(out_dir)
    systems = list(results["systems"])
    paths = []
    metrics = ("recall@10", "ndcg@10", "mrr@20")
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.2))
    for ax, metric in zip(axes, metrics, strict=True):
        vals = [results["systems"][n]["test"]["excluded"]["all"][metric] for n in systems]
        ax.bar(systems, vals, color="tab:blue")
        ax.set_title(f"test {metric}")
        ax.tick_params(axis="x", rotation=45)
    fig.suptitle(f"{results['dataset']}: all test users, history excluded")
    fig.tight_layout()
    paths.append(out_dir / "metrics.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    slices = slices_of(results)
    width = 0.8 / len(slices)
    for ax, metric in zip(axes, ("ndcg@10", "recall@10"), strict=True):
        for j, s in enumerate(slices):
            vals = [results["systems"][n]["test"]["excluded"][s][metric] for n in systems]
            ax.bar([i + j * width for i in range(len(systems))], vals, width, label=s)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(systems))], systems, rotation=45)
        ax.set_title(f"test {metric} by slice")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    paths.append(out_dir / "cold_vs_warm.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    paths.append(plot_accuracy_latency(results, out_dir / "accuracy_vs_latency.png"))
    return paths


def ms_per_user(results: dict[str, Any], name: str) -> float:
    """Offline scoring time of one system per evaluated case (validation + test), in milliseconds."""
    r, s = results["systems"][name], results["split"]
    return 1000.0 * r["eval_seconds"] / max(2 * s["n_eval_users"], 1)


def plot_accuracy_latency(results: dict[str, Any], path: Path) -> Path:
    """Test NDCG@10 against offline scoring time per user (log scale), one point per system."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, r in results["systems"].items():
        x, y = ms_per_user(results, name), r["test"]["excluded"]["all"]["ndcg@10"]
        ax.scatter([x], [y])
        ax.annotate(name, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("ms per user (baselines: batched scoring; semrec: one served call per user and mode)")
    ax.set_ylabel("test NDCG@10")
    ax.set_title(f"{results['dataset']}: accuracy vs latency")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
