"""``semrec demo``: the bundled demo catalog indexed, its models trained, the API started and
examples shown."""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
from pathlib import Path
from typing import Annotated

import typer

from .cli_common import REPO_DATA, _check_port


def demo(
    out: Annotated[Path, typer.Option(help="where the demo's index, event log and access log go")] = Path("out/demo"),
    port: Annotated[int, typer.Option()] = 8000,
    exit_after: Annotated[bool, typer.Option("--exit", help="stop after printing the examples")] = False,
) -> None:
    """Index the bundled demo catalog (or reuse the index while the catalog is unchanged), load its
    shoppers' history, start the API, and show similar items, search results and recommendations."""
    import secrets

    import httpx
    import uvicorn

    from indexer.build import EmbedConfig, build_index, catalog_fingerprint
    from indexer.clean import clean_catalog
    from indexer.embed import load_embedder
    from indexer.loaders import load_catalog
    from retriever.eventstore import open_event_store
    from retriever.orders import import_orders
    from retriever.personal import import_reviews

    from .app import MAX_REQUEST_HEAD_BYTES, create_app
    from .security import ApiKey, mint_token, new_key
    from .settings import Settings

    # Keys are on as in production. The page gets shopper tokens from POST /demo/token, standing in
    # for the shop's backend (api/routes/demo.py); the console's shopper list needs the admin key below.
    console_key, console_sha = new_key()
    settings = Settings(index_dir=out / "index", db_path=out / "events.db", port=port, demo=True, demo_tokens=True,
                        token_secret=secrets.token_urlsafe(32),
                        api_keys=[ApiKey(name="demo-console", role="admin", sha256=console_sha)])
    _check_port("127.0.0.1", port)
    catalog, report = clean_catalog(load_catalog(REPO_DATA / "demo"))
    fingerprint = catalog_fingerprint(catalog, "minilm", EmbedConfig())
    models, idx = settings.index_dir / "models", None
    if _unchanged_index(settings.index_dir, fingerprint):
        typer.echo(f"index: {settings.index_dir} is up to date with data/demo (catalog fingerprint "
                   f"{fingerprint[:12]}); delete it to re-index")
    else:
        typer.echo(report.to_text())
        embedder = load_embedder("minilm")
        idx = build_index(catalog, embedder, kind="auto", cfg=EmbedConfig(review_weight=0.3, max_reviews=0))
        idx.save(settings.index_dir)
        typer.echo(f"indexed {len(idx)} items with {embedder.name} ({idx.kind}, {idx.dim}-d) in "
                   f"{idx.build_info['seconds']} s -> {settings.index_dir}")
        shutil.rmtree(models, ignore_errors=True)  # fitted on the old index's items
    if not any(models.glob("v[0-9]*")):
        from ranker.services import open_index

        idx, embedder = (idx, embedder) if idx is not None else open_index(settings.index_dir)
        _train_models(idx, embedder, catalog.reviews, models)
    store = open_event_store(settings.db_path, pseudonym_key=settings.pseudonym_key)
    read, stored = import_reviews(store, catalog.reviews, "demo")
    bought, new = import_orders(store, REPO_DATA / "demo" / "orders.jsonl", "demo")
    store.close()
    typer.echo(f"event log: {read} shopper events from the demo reviews ({stored} new), {bought} purchases from "
               f"its orders ({new} new) -> {settings.db_path}")
    with _access_log_to(out / "access.log"):
        server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port,
                                               log_level="warning",
                                               h11_max_incomplete_event_size=MAX_REQUEST_HEAD_BYTES))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            if not thread.is_alive():
                raise typer.Exit(1)
            time.sleep(0.1)
        base = f"http://127.0.0.1:{port}"
        secret = settings.token_secret.get_secret_value()
        with httpx.Client(base_url=base, timeout=30) as client:
            _show_examples(client, settings.rerank.mmr_lambda,
                           lambda user: {"X-Shopper-Token": mint_token(user, secret, 600)[0]})
        typer.echo(f"\nStorefront and console: {base}/   API docs: {base}/docs   Access log: {out / 'access.log'}")
        typer.echo(f"Console admin key for this run (Console -> API key; the shopper list needs it): {console_key}")
        typer.echo("The storefront gets shopper tokens from the demo-only POST /demo/token, standing in for a shop's"
                   " backend; `semrec serve` has no such route (`semrec token USER_ID`, `semrec keygen`).")
        if exit_after:
            server.should_exit = True
        else:
            typer.echo("Press Ctrl-C to stop.")
        try:
            thread.join()
        except KeyboardInterrupt:
            server.should_exit = True
            thread.join()


def _train_models(index, embedder, reviews, models: Path) -> None:
    """The learned parts fitted on the demo's own shoppers (``semrec train``), so the demo serves the
    whole pipeline: MF, EASE, the history encoder and the learned ranking."""
    from evaluation.publish import train_for_index

    started = time.perf_counter()
    path = train_for_index(index, reviews, models, embedder, source="data/demo", command="semrec demo",
                           progress=False)
    typer.echo(f"models: MF, EASE, history encoder and learned ranking fitted on the demo shoppers in "
               f"{time.perf_counter() - started:.0f} s -> {path}")


def _unchanged_index(index_dir: Path, fingerprint: str) -> bool:
    """True when ``index_dir`` holds an index built from a catalog with this fingerprint and not
    changed since (no upserts or deletes in its write-ahead log)."""
    from indexer.store import IndexNotFoundError, read_manifest
    from indexer.wal import WAL_NAME, holds_entries

    try:
        built = read_manifest(index_dir).build.get("catalog_fingerprint")
    except IndexNotFoundError:
        return False
    return built == fingerprint and not holds_entries(index_dir / WAL_NAME)


@contextlib.contextmanager
def _access_log_to(path: Path):
    """Send the service's JSON log lines to ``path`` instead of the terminal, for the block."""
    import logging

    from .observability import JsonFormatter

    log = logging.getLogger("semrec")
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(JsonFormatter())
    saved, log.handlers = log.handlers, [handler]  # configure_logging sees a JSON handler: adds none
    try:
        yield
    finally:
        log.handlers = saved
        handler.close()


def _show(title: str, rows: list[dict], mmr_lambda: float | None = None) -> None:
    """One list: rank, score, id, title; then the reason, sources and stage where the API gives them."""
    typer.echo(f"\n{title}")
    for rank, row in enumerate(rows, 1):
        typer.echo(f"  {rank:>2}. {row['score']:6.3f}  {row['item_id']}  {row['title'][:64]}")
        why = []
        if row.get("reason"):
            why.append(row["reason"] + (f" ({row['reason_kind']})" if row.get("reason_kind") else ""))
        if row.get("sources"):
            why.append(f"from {', '.join(row['sources'])}")
        why += [f"stage: {row['stage']}"] if row.get("stage") else []
        if why:
            typer.echo(f"{'':14}{' · '.join(why)}")
    scores = [row["score"] for row in rows]
    moved = [n for n in range(1, len(scores)) if scores[n] > scores[n - 1]]
    if moved:
        stages = sorted({rows[n]["stage"] for n in moved if rows[n].get("stage")})
        by = f"the {', '.join(stages)} stage" if stages else (
            f"MMR (lambda {mmr_lambda:g})" if mmr_lambda is not None and mmr_lambda < 1 else "a later stage")
        typer.echo(f"{'':6}note: scores are not in descending order: {by} reordered the list for diversity "
                   f"(rank {', '.join(str(n + 1) for n in moved)} scored higher than the item above)")


def _show_examples(client, mmr_lambda: float, as_shopper) -> None:
    """The demo's example calls; ``as_shopper(user_id)``: the headers of that shopper's requests."""
    for item_id in ["D0005", "D0040", "D0120"]:
        title = client.get(f"/items/{item_id}").json()["title"]
        rows = client.get(f"/items/{item_id}/similar", params={"k": 5}).json()["results"]
        _show(f"GET /items/{item_id}/similar?k=5   ({title})", rows)
    for q in ["hair dryer for thick curly hair", "science kit for a 10 year old", "vegan moisturizer for dry skin"]:
        _show(f"GET /search?q={q}&k=5", client.get("/search", params={"q": q, "k": 5}).json()["results"], mmr_lambda)
    rows = client.get("/users/U020/recommendations", params={"k": 5}, headers=as_shopper("U020")).json()["results"]
    _show("GET /users/U020/recommendations?k=5   (a runner in the demo history)", rows, mmr_lambda)
    body = {"interests": "vegan skincare for dry skin"}
    rows = client.post("/users/visitor-1/onboarding", params={"k": 5}, json=body,
                       headers=as_shopper("visitor-1")).json()["results"]
    _show(f"POST /users/visitor-1/onboarding {body}", rows, mmr_lambda)




def register(app: typer.Typer) -> None:
    """Add these commands to the ``semrec`` app."""
    app.command()(demo)
