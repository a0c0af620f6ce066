"""/search and /suggest latency on real shopper queries, over HTTP against a real server.

    semrec bench search [--data-dir ../shared/data] [--llm smollm2] [--llm-budget 0.5]

Builds the demo catalog's index (data/demo, MiniLM; cached), starts ``semrec serve`` on loopback,
sends the 150 ESCI shopper queries through ``/search`` without and with expansion, with everything
the storefront turns on (parse, expansion, a shopper id), with the LLM, through ``/expand`` (new,
then cached), and their prefixes through ``/suggest``; prints p50 / p99 in milliseconds (client side). LLM rows:
a burst of all queries back to back, then each new query alone followed by its repeat once the
LLM has answered it (``llm`` says "cached"), which times generation.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np

from .loadserver import start_server, stop_server

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = Path.home() / ".cache" / "semrec" / "bench-search"


def demo_index(cache_dir: Path, model: str = "minilm") -> Path:
    """The demo catalog's index directory, built once per catalog content and model."""
    from indexer.build import build_index
    from indexer.clean import clean_catalog
    from indexer.embed import load_embedder
    from indexer.loaders import load_catalog

    demo = ROOT / "data" / "demo"
    digest = hashlib.sha256(b"".join((demo / f).read_bytes() for f in ("items.jsonl", "reviews.jsonl")))
    folder = cache_dir / f"demo-{model}-{digest.hexdigest()[:12]}"
    if not (folder / "CURRENT").exists():
        catalog, _ = clean_catalog(load_catalog(demo))
        build_index(catalog, load_embedder(model), progress=False).save(folder)
    return folder


def timed(client: httpx.Client, path: str, params: list[dict], headers: dict | None = None
          ) -> tuple[np.ndarray, list[dict]]:
    """Milliseconds per request (client side) and the JSON answers."""
    ms, answers = [], []
    for p in params:
        started = time.perf_counter()
        r = client.get(path, params=p, headers=headers)
        ms.append((time.perf_counter() - started) * 1000)
        if r.status_code != 200:
            raise RuntimeError(f"{path} {p} -> {r.status_code}: {r.text[:300]}")
        answers.append(r.json())
    return np.array(ms), answers


def _statuses(answers: list[dict]) -> str:
    return ", ".join(f"{s}: {n}" for s, n in Counter(a["llm"] for a in answers).most_common())


def run(queries: list[str], index_dir: Path, llm: str, budget: float, llm_queries: int) -> dict[str, dict]:
    work = Path(tempfile.mkdtemp(prefix="semrec-bench-search-"))
    env = {"SEMREC_SEARCH__LLM": llm, "SEMREC_SEARCH__LLM_BUDGET_S": str(budget), "SEMREC_TORCH_THREADS": "1"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        proc, url, keys = start_server(index_dir, work / "events.db", work / "server.log", startup_s=600)
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    rows: dict[str, np.ndarray] = {}
    notes: dict[str, str] = {}
    try:
        with httpx.Client(base_url=url, timeout=60, trust_env=False) as client:
            timed(client, "/search", [{"q": q} for q in queries[:5]])  # warm-up
            rows["/search expand=false"], _ = timed(client, "/search", [{"q": q, "expand": "false"} for q in queries])
            rows["/search expand=true (catalog + feedback)"], _ = timed(
                client, "/search", [{"q": q, "expand": "true"} for q in queries])
            # the default request of the storefront: parse, expansion, a shopper id (variant, personal boost, log);
            # a personalised search opens the shopper's data: asked for as the shop's backend would
            rows["/search expand=true, user_id (everything on)"], _ = timed(
                client, "/search", [{"q": q, "expand": "true", "user_id": f"bench-{n % 20}"}
                                    for n, q in enumerate(queries)], headers={"X-API-Key": keys["backend"]})
            rows["/expand, first time (new query)"], _ = timed(client, "/expand", [{"q": q} for q in queries])
            rows["/expand, again (cached)"], answers = timed(client, "/expand", [{"q": q} for q in queries])
            notes["/expand, again (cached)"] = f"{sum(a['cached'] for a in answers)} of {len(answers)} cached"
            if llm:
                params = [{"q": q, "expand": "true", "llm": "true"} for q in queries]
                name = "/search llm=true, back-to-back (burst)"
                rows[name], answers = timed(client, "/search", params)
                notes[name] = _statuses(answers)
                time.sleep(5 * budget)
                ms, again, gen_s = [], [], []
                for p in params[len(params) - llm_queries:]:  # the last ones: least likely answered in the burst
                    m, a = timed(client, "/search", [p])
                    if a[0]["llm"] == "cached":
                        continue
                    ms.append(m[0])
                    started = time.perf_counter()
                    while timed(client, "/search", [p])[1][0]["llm"] != "cached" and \
                            time.perf_counter() - started < 120:
                        time.sleep(0.1)
                    gen_s.append(m[0] / 1000 + time.perf_counter() - started)
                    again.append(p)
                name = f"/search llm=true, one at a time, first time ({len(ms)} queries)"
                rows[name] = np.array(ms)
                notes[name] = f"generation p50 {np.percentile(gen_s, 50):.1f} s, max {max(gen_s):.1f} s" if gen_s \
                    else ""
                name = f"/search llm=true, same queries again ({len(again)})"
                rows[name], answers = timed(client, "/search", again)
                notes[name] = _statuses(answers)
            prefixes = [{"q": q[:n]} for q in queries for n in range(1, min(len(q), 20) + 1) if q[:n].strip()]
            rows[f"/suggest ({len(prefixes)} prefixes)"], _ = timed(client, "/suggest", prefixes)
    finally:
        stop_server(proc)
    lines = [f"### /search and /suggest over HTTP, demo catalog, {len(queries)} ESCI queries, LLM {llm or 'off'} "
             f"(budget {budget} s), load {os.getloadavg()[0]:.2f}", "",
             "| request | n | p50 ms | p99 ms | mean ms | LLM status |", "|---|---|---|---|---|---|"]
    for name, ms in rows.items():
        if len(ms):
            lines.append(f"| {name} | {len(ms)} | {np.percentile(ms, 50):.1f} | {np.percentile(ms, 99):.1f} | "
                         f"{ms.mean():.1f} | {notes.get(name, '')} |")
    print("\n".join(lines), flush=True)
    return {name: {"n": len(ms), "p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99))}
            for name, ms in rows.items() if len(ms)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="semrec bench search", description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default=os.environ.get("SEMREC_SHARED", str(ROOT.parent / "shared")) + "/data",
                   help="shared data root holding esci-judgments-partial/")
    p.add_argument("--llm", default="", help="generator for LLM expansion (e.g. smollm2); empty = none")
    p.add_argument("--llm-budget", type=float, default=0.5, help="seconds /search waits for the LLM")
    p.add_argument("--llm-queries", type=int, default=40, help="queries timed one at a time with the LLM")
    p.add_argument("--cache-dir", default=str(DEFAULT_CACHE))
    p.add_argument("--json", help="write the figures here")
    a = p.parse_args(argv)
    esci = Path(a.data_dir) / "esci-judgments-partial" / "esci_us_queryset.json"
    queries = [q["queryText"] for q in json.loads(esci.read_text())["querySetQueries"]]
    figures = run(queries, demo_index(Path(a.cache_dir)), a.llm, a.llm_budget, a.llm_queries)
    if a.json:
        Path(a.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
