"""The ``semrec`` command line: a thin layer over the library."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="semrec: semantic recommendations for e-commerce.")

REPO_DATA = Path(__file__).resolve().parent.parent / "data"
IndexOpt = Annotated[Path, typer.Option("--index", "-i", help="index directory")]


def _filters(category, brand, min_price, max_price, in_stock):
    from indexer.table import Filters

    return Filters(category=category, brand=brand, min_price=min_price, max_price=max_price,
                   in_stock=in_stock)


@app.command()
def index(
    source: Annotated[Path, typer.Argument(help="items file (.csv/.jsonl/.parquet) or a public dataset folder")],
    out: Annotated[Path, typer.Option("--out", "-o", help="index directory to write")],
    reviews: Annotated[Path | None, typer.Option(help="reviews file for the project's own format")] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="auto, own, or a public format/dataset name")] = "auto",
    model: Annotated[str, typer.Option(help="embedder: minilm, use-multilingual, or a model name/path")] = "minilm",
    kind: Annotated[str, typer.Option(help="auto, numpy, flat, hnsw or ivf")] = "auto",
    backend: Annotated[str, typer.Option(help="encoder backend: torch, onnx, onnx-int8, openvino, openvino-int8 "
                                         "(semrec bench foundation --backends-only)")] = "torch",
    review_weight: Annotated[float, typer.Option(help="largest share of an item vector from its reviews")] = 0.3,
    max_reviews: Annotated[int, typer.Option(help="reviews embedded per item")] = 8,
    unknown_items: Annotated[str, typer.Option(help="reviews of items missing from the metadata: "
                                               "drop them, or stub the item from its reviews")] = "drop",
) -> None:
    """Load, clean, embed and index a catalog. Prints the cleaning report."""
    from indexer.build import EmbedConfig, build_index
    from indexer.clean import clean_catalog
    from indexer.embed import load_embedder
    from indexer.loaders import load_catalog, load_own
    from indexer.schema import CatalogFormatError

    try:
        catalog = load_own(source, reviews) if reviews else load_catalog(source, fmt)
    except CatalogFormatError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
    catalog, report = clean_catalog(catalog, unknown_items=unknown_items)
    typer.echo(report.to_text())
    try:
        embedder = load_embedder(model, backend=backend)
    except ValueError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
    idx = build_index(catalog, embedder, kind=kind,
                      cfg=EmbedConfig(review_weight=review_weight, max_reviews=max_reviews))
    idx.save(out)
    typer.echo(f"indexed {len(idx)} items with {embedder.name} ({idx.kind}, {idx.dim}-d) in "
               f"{idx.build_info['seconds']} s ({idx.build_info['items_per_s']} items/s) -> {out}")


@app.command()
def serve(
    index_dir: IndexOpt = Path("out/index"),
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8000,
    model: Annotated[str | None, typer.Option(help="embedder; default: the index's own")] = None,
    workers: Annotated[int, typer.Option(min=1, max=64, help="server processes sharing the index and logs")] = 1,
) -> None:
    """Serve the HTTP API (OpenAPI docs at /docs). Other settings: SEMREC_* environment variables."""
    import os

    import uvicorn

    os.environ["SEMREC_INDEX_DIR"] = str(index_dir)
    if model:
        os.environ["SEMREC_MODEL"] = model
    # Our own JSON access log names routes by template; uvicorn's would print raw paths with user ids.
    uvicorn.run("api.app:app_from_env", factory=True, host=host, port=port, workers=workers, access_log=False)


@app.command()
def compact(index_dir: IndexOpt = Path("out/index")) -> None:
    """Fold the write-ahead log into a new snapshot (run it while no server writes to the index)."""
    from indexer.store import ItemIndex

    idx = ItemIndex.load(index_dir)
    idx.save(index_dir)
    typer.echo(f"{index_dir}: snapshot of {len(idx)} items written, log emptied")


@app.command()
def similar(
    item_id: Annotated[str, typer.Argument(help="the item to find neighbours of")],
    index_dir: IndexOpt = Path("out/index"),
    k: Annotated[int, typer.Option("-k", min=1, max=1000)] = 10,
    category: str | None = None, brand: str | None = None, min_price: float | None = None,
    max_price: float | None = None, in_stock: bool | None = None,
) -> None:
    """Print the items most similar to ITEM_ID."""
    from indexer.store import ItemIndex
    from retriever.similar import similar_items

    idx = ItemIndex.load(index_dir)
    if idx.table.get(item_id) is None:
        raise typer.BadParameter(f"item {item_id!r} is not in {index_dir}", param_hint="ITEM_ID")
    labels, scores = similar_items(idx, [item_id], k, _filters(category, brand, min_price, max_price, in_stock))
    typer.echo(f"similar to {item_id}: {idx.table.get(item_id)['title']}")
    _print_rows(idx, labels[0], scores[0])


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="free text")],
    index_dir: IndexOpt = Path("out/index"),
    k: Annotated[int, typer.Option("-k", min=1, max=1000)] = 10,
) -> None:
    """Print the items that best match QUERY."""
    from indexer.embed import load_embedder
    from indexer.store import ItemIndex
    idx = ItemIndex.load(index_dir)
    labels, scores = idx.search(load_embedder(idx.model).encode([query]), k)
    _print_rows(idx, labels[0], scores[0])


events_app = typer.Typer(no_args_is_help=True, help="The event log.")
app.add_typer(events_app, name="events")


@events_app.command("import")
def events_import(
    dataset: Annotated[str, typer.Option(help="beauty, scientific, magazine, subscription-boxes or instruments")],
    data_dir: Annotated[Path, typer.Option(help="that dataset's folder")],
    db: Annotated[Path, typer.Option(help="SQLite event log")] = Path("out/events.db"),
    pseudonym_key: Annotated[str | None, typer.Option(envvar="SEMREC_PSEUDONYM_KEY",
                                                      help="secret for hashing user ids")] = None,
) -> None:
    """Load a public interaction log into the event log (idempotent: a second import adds nothing)."""
    from indexer.clean import clean_catalog
    from indexer.loaders import load_dataset
    from retriever.eventstore import open_event_store
    from retriever.personal import import_reviews

    from .settings import DEV_PSEUDONYM_KEY

    catalog, _ = clean_catalog(load_dataset(dataset, data_dir))
    store = open_event_store(db, pseudonym_key=pseudonym_key or DEV_PSEUDONYM_KEY)
    started = time.perf_counter()
    read, stored = import_reviews(store, catalog.reviews, dataset)
    typer.echo(f"{read} events read, {stored} new, {read - stored} already there -> {db} "
               f"({time.perf_counter() - started:.1f} s, {store.count_events()} events in the log)")


@app.command()
def keygen(name: Annotated[str, typer.Option(help="who the key is for")],
           role: Annotated[str, typer.Option(help="read, ingest or admin")] = "ingest") -> None:
    """Print a new API key (give it to the client) and the settings entry holding only its hash."""
    from .security import RANK, new_key

    if role not in RANK:
        raise typer.BadParameter(f"role must be one of {list(RANK)}", param_hint="--role")
    key, sha = new_key()
    typer.echo(f"key (shown once): {key}")
    typer.echo("add to SEMREC_API_KEYS: " + json.dumps({"name": name, "role": role, "sha256": sha}))


@app.command("ab-report")
def ab_report_cmd(db: Annotated[Path, typer.Option(help="SQLite event log")] = Path("out/events.db"),
                  pseudonym_key: Annotated[str | None, typer.Option(envvar="SEMREC_PSEUDONYM_KEY")] = None) -> None:
    """Per A/B variant: impressions, click-through, add-to-cart and purchase rates with 95% intervals."""
    from retriever.eventstore import open_event_store

    from .experiments import ab_report, format_report
    from .settings import DEV_PSEUDONYM_KEY

    if not db.exists():
        raise typer.BadParameter(f"no event log at {db}", param_hint="--db")
    store = open_event_store(db, pseudonym_key=pseudonym_key or DEV_PSEUDONYM_KEY)
    typer.echo(format_report(ab_report(store.variant_outcomes())))


@app.command("train-ranker")
def train_ranker_cmd(
    out: Annotated[Path, typer.Option(help="root of the versioned model directories (vNNNN)")] = Path("runs/ranker"),
    dataset: Annotated[str | None, typer.Option(help="a public dataset (beauty, ...) to train on")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="its folder, or the shared data root")] = None,
    db: Annotated[Path | None, typer.Option(help="or: the service's event log ...")] = None,
    index_dir: Annotated[Path | None, typer.Option("--index", help="... with the index holding its items")] = None,
    users: Annotated[int, typer.Option(help="training users sampled (0 = all)")] = 8000,
    layers: Annotated[int, typer.Option(help="MiniLM layers kept (of 6): fewer is faster")] = 3,
    minutes: Annotated[float, typer.Option(help="training time budget")] = 30.0,
    seed: int = 0,
) -> None:
    """Fine-tune the cross-encoder reranker from MiniLM on interactions (a dataset or the event log)."""
    from indexer.schema import Catalog
    from ranker.pairs import PairConfig
    from ranker.train import TrainConfig, train_ranker

    if (dataset is None) == (db is None):
        raise typer.BadParameter("give either --dataset with --data-dir, or --db with --index", param_hint="--dataset")
    if db is not None:
        if index_dir is None or not db.is_file():
            raise typer.BadParameter("--db needs an existing event log and --index its item index", param_hint="--db")
        from indexer.store import ItemIndex
        from retriever.eventstore import open_event_store
        from retriever.personal import reviews_from_events

        from .settings import DEV_PSEUDONYM_KEY

        items = ItemIndex.load(index_dir).table.live_frame().drop(columns="label")
        # the log already holds only keyed user ids; the key is not needed to read them back
        store = open_event_store(db, pseudonym_key=DEV_PSEUDONYM_KEY)
        catalog = Catalog(items, reviews_from_events(store), source=f"event log {db}")
        store.close()
    else:
        from evaluation.harness import dataset_folder
        from indexer.loaders import load_dataset

        if data_dir is None:
            raise typer.BadParameter("--dataset needs --data-dir", param_hint="--data-dir")
        catalog = load_dataset(dataset, dataset_folder(dataset, data_dir))
    cfg = TrainConfig(pairs=PairConfig(users=users or None, seed=seed), num_layers=layers, max_minutes=minutes,
                      seed=seed)
    path = train_ranker(catalog, out, cfg, command="semrec train-ranker")
    typer.echo(f"reranker written to {path}; serve it with SEMREC_RANKER_DIR={out}")


@app.command("eval")
def eval_cmd(
    dataset: Annotated[str, typer.Option(help="beauty, scientific, magazine, subscription-boxes or instruments")],
    data_dir: Annotated[Path, typer.Option(help="the dataset folder, or the shared data root")],
    out: Annotated[Path, typer.Option(help="where results.json, results.md, the plots and the split go")],
    quick: Annotated[bool, typer.Option(help="a seeded subsample and small models: minutes, not hours")] = False,
    systems: Annotated[str | None, typer.Option(help="comma-separated subset; default: all")] = None,
    model: Annotated[str, typer.Option(help="embedder for the text systems")] = "minilm",
    ranker: Annotated[Path | None, typer.Option(help="trained reranker (version dir or root) for semrec-rerank/-mmr")
                      ] = None,
    cache: Annotated[Path, typer.Option(help="item vectors are cached here")] = Path("runs/cache"),
    seed: int = 0,
) -> None:
    """Offline evaluation: leave-one-out, full ranking, semrec against baselines on public data."""
    from evaluation.harness import run_eval
    from indexer.embed import load_embedder
    from ranker.pairs import catalog_item_vectors

    embedder = load_embedder(model)

    def item_vectors(catalog, item_ids):
        # item text only: a review's text would carry the held-out interaction into the vectors
        return catalog_item_vectors(catalog.items, item_ids.tolist(), embedder, cache_dir=cache)

    run_eval(dataset, str(data_dir), str(out), quick=quick, systems=systems.split(",") if systems else None,
             seed=seed, item_vectors=item_vectors, ranker=ranker)


_PASSTHROUGH = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


@app.command(context_settings=_PASSTHROUGH, add_help_option=False)
def bench(ctx: typer.Context,
          which: Annotated[str, typer.Argument(help="foundation, personal or rerank")] = "foundation") -> None:
    """Benchmarks (figures, not tests): `semrec bench foundation --help`, `semrec bench personal --help`,
    `semrec bench rerank --help`."""
    from bench import foundation
    from bench import personal as bench_personal
    from bench import rerank as bench_rerank

    mains = {"foundation": foundation.main, "personal": bench_personal.main, "rerank": bench_rerank.main}
    if which not in mains:
        raise typer.BadParameter(f"choose one of {list(mains)}", param_hint="WHICH")
    raise typer.Exit(mains[which](ctx.args) or 0)


@app.command(context_settings=_PASSTHROUGH, add_help_option=False)
def loadtest(ctx: typer.Context) -> None:
    """Mixed traffic against a server on loopback: `semrec loadtest --help`."""
    from bench.loadtest import main

    raise typer.Exit(main(ctx.args))


def _print_rows(idx, labels, scores) -> None:
    for label, score in zip(labels, scores):
        if label >= 0:
            rec = idx.table.records[label]
            typer.echo(f"  {score:6.3f}  {rec['item_id']:<12} {rec['title'][:70]}")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="where to write the demo index and event log")] = Path("out/demo"),
    port: Annotated[int, typer.Option()] = 8000,
    exit_after: Annotated[bool, typer.Option("--exit", help="stop after printing the examples")] = False,
) -> None:
    """Index the bundled demo catalog, load its shoppers' history, start the API, and show similar
    items, search results and personal recommendations."""
    import httpx
    import uvicorn

    from indexer.clean import clean_catalog
    from indexer.loaders import load_catalog
    from retriever.eventstore import open_event_store
    from retriever.personal import import_reviews

    from .app import create_app
    from .settings import Settings

    # The demo listens on loopback only and runs without API keys; `semrec serve` requires them for writes.
    settings = Settings(index_dir=out / "index", db_path=out / "events.db", port=port, auth=False)
    index(REPO_DATA / "demo", out=settings.index_dir, reviews=None, fmt="own", model="minilm", kind="auto",
          review_weight=0.3, max_reviews=8, unknown_items="drop")
    store = open_event_store(settings.db_path, pseudonym_key=settings.pseudonym_key)
    read, stored = import_reviews(store, clean_catalog(load_catalog(REPO_DATA / "demo"))[0].reviews, "demo")
    store.close()
    typer.echo(f"event log: {read} shopper events from the demo reviews ({stored} new) -> {settings.db_path}")
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise typer.Exit(1)
        time.sleep(0.1)
    base = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=base, timeout=30) as client:
        _show_examples(client)
    typer.echo(f"\nStorefront and console: {base}/   API docs: {base}/docs")
    typer.echo("The demo runs without API keys on loopback;"
               " `semrec serve` needs keys for writes (`semrec keygen`).")
    if exit_after:
        server.should_exit = True
    else:
        typer.echo("Press Ctrl-C to stop.")
    try:
        thread.join()
    except KeyboardInterrupt:
        server.should_exit = True
        thread.join()


def _show(title: str, rows: list[dict]) -> None:
    typer.echo(f"\n{title}")
    for row in rows:
        extra = f"  [{', '.join(row['sources'])}]" if "sources" in row else ""
        typer.echo(f"  {row['score']:6.3f}  {row['item_id']}  {row['title'][:64]}{extra}")


def _show_examples(client) -> None:
    for item_id in ["D0005", "D0040", "D0120"]:
        title = client.get(f"/items/{item_id}").json()["title"]
        rows = client.get(f"/items/{item_id}/similar", params={"k": 5}).json()["results"]
        _show(f"GET /items/{item_id}/similar?k=5   ({title})", rows)
    for q in ["hair dryer for thick curly hair", "science kit for a 10 year old", "vegan moisturizer for dry skin"]:
        _show(f"GET /search?q={q}&k=5", client.get("/search", params={"q": q, "k": 5}).json()["results"])
    rows = client.get("/users/U020/recommendations", params={"k": 5}).json()["results"]
    _show("GET /users/U020/recommendations?k=5   (a runner in the demo history)", rows)
    body = {"interests": "vegan skincare for dry skin"}
    rows = client.post("/users/visitor-1/onboarding", params={"k": 5}, json=body).json()["results"]
    _show(f"POST /users/visitor-1/onboarding {body}", rows)


if __name__ == "__main__":
    app()
