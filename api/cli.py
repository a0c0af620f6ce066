"""The ``semrec`` command line: a thin layer over the library.

A user's mistake (a wrong option, a missing index, an unknown dataset, a folder of the wrong data)
prints one line saying what to fix and exits with code 2: :class:`Commands` maps the library's
input errors (:func:`user_errors`) and click's usage errors to that, in one place. Anything else is
a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Annotated, Literal

import typer
from typer.core import TyperGroup


class UserError(Exception):
    """A mistake the user can fix; the message says how."""


def user_errors() -> tuple[type[Exception], ...]:
    """Exception types that always mean the input was wrong (imported only when something failed)."""
    from indexer.schema import CatalogFormatError, UnknownNameError
    from indexer.store import IndexMismatchError, IndexNotFoundError

    return UserError, CatalogFormatError, UnknownNameError, IndexNotFoundError, IndexMismatchError


class Commands(TyperGroup):
    """Runs every command: user errors become ``error: <what to fix>`` on stderr and exit code 2."""

    def invoke(self, ctx: typer.Context):
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # no "Loading weights" bar per command
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort):
            raise
        except typer.TyperException as e:  # click's errors; exit code 2: a bad or missing option or name
            if getattr(e, "exit_code", 1) != 2:
                raise
            where = getattr(getattr(e, "ctx", None), "command_path", None) or ctx.command_path
            raise _fail(f"{e.format_message()} (see `{where} --help`)") from None
        except Exception as e:
            if isinstance(e, user_errors()):
                raise _fail(str(e)) from None
            raise


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


app = typer.Typer(cls=Commands, add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False,
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
    kind: Annotated[Literal["auto", "numpy", "flat", "hnsw", "ivf"], typer.Option(help="vector index kind")] = "auto",
    review_weight: Annotated[float, typer.Option(help="largest share of an item vector from its reviews")] = 0.3,
    max_reviews: Annotated[int, typer.Option(min=0, help="reviews pooled per item, most helpful first; "
                                             "0 = all")] = 0,
    unknown_items: Annotated[Literal["drop", "stub"], typer.Option(help="reviews of items missing from the metadata: "
                                               "drop them, or stub the item from its reviews")] = "drop",
    vector_store: Annotated[str, typer.Option(envvar="SEMREC_VECTOR_STORE", help=(
        "also fill this vector store: milvus:///path/file.db (Milvus Lite) or milvus://host:19530; "
        "faiss = the snapshot's own index only"))] = "faiss",
) -> None:
    """Load, clean, embed and index a catalog. Prints the cleaning report."""
    from indexer.build import EmbedConfig, build_index
    from indexer.clean import clean_catalog
    from indexer.embed import load_embedder
    from indexer.loaders import load_catalog, load_own

    catalog = load_own(source, reviews) if reviews else load_catalog(source, fmt)
    if vector_store != "faiss":
        from indexer.milvus import parse_url

        try:
            parse_url(vector_store)
        except ValueError as e:
            raise UserError(f"--vector-store: {e}") from e
    embedder = load_embedder(model)  # before cleaning: a wrong model name is told at once
    catalog, report = clean_catalog(catalog, unknown_items=unknown_items)
    typer.echo(report.to_text())
    idx = build_index(catalog, embedder, kind=kind,
                      cfg=EmbedConfig(review_weight=review_weight, max_reviews=max_reviews))
    idx.save(out)
    typer.echo(f"indexed {len(idx)} items with {embedder.name} ({idx.kind}, {idx.dim}-d) in "
               f"{idx.build_info['seconds']} s ({idx.build_info['items_per_s']} items/s) -> {out}")
    if vector_store != "faiss":
        from indexer.milvus import attach

        started = time.perf_counter()
        try:
            store = attach(idx, vector_store)
        except RuntimeError as e:  # a Milvus Lite file another process holds
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from e
        typer.echo(f"vectors in {vector_store}, collection {store.collection} ({time.perf_counter() - started:.1f} s)"
                   f"; serve with SEMREC_VECTOR_STORE={vector_store}")


@app.command()
def serve(
    index_dir: IndexOpt = Path("out/index"),
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8000,
    model: Annotated[str | None, typer.Option(help="embedder; default: the index's own")] = None,
    workers: Annotated[int, typer.Option(min=1, max=64, help="server processes sharing the index and logs")] = 1,
) -> None:
    """Serve the HTTP API (OpenAPI docs at /docs). Other settings: SEMREC_* environment variables."""
    import uvicorn
    from pydantic import ValidationError

    from .settings import cli_settings

    store = os.environ.get("SEMREC_VECTOR_STORE", "faiss")
    if workers > 1 and store.startswith("milvus:///"):
        raise typer.BadParameter("Milvus Lite serves one process: use --workers 1, or a Milvus server "
                                 "(SEMREC_VECTOR_STORE=milvus://host:19530)", param_hint="--workers")
    if workers > 1 and store.startswith("milvus://") and not os.environ.get("SEMREC_DB_URL"):
        raise typer.BadParameter("workers sharing a Milvus server need the catalog feed in PostgreSQL "
                                 "(SEMREC_DB_URL), so that they agree on item labels", param_hint="--workers")

    from indexer.store import read_manifest

    built_with = read_manifest(index_dir).model
    if model and model != built_with:
        raise UserError(f"the index in {index_dir} was built with model {built_with!r}, not {model!r}: "
                        f"leave out --model, or rebuild the index with it")
    _check_port(host, port)
    os.environ["SEMREC_INDEX_DIR"] = str(index_dir)
    if model:
        os.environ["SEMREC_MODEL"] = model
    try:
        cli_settings()  # a missing secret or a bad setting is one line here, not a traceback per worker
    except ValidationError as e:
        raise typer.BadParameter(e.errors()[0]["msg"].removeprefix("Value error, "), param_hint="settings") from None
    # Our own JSON access log names routes by template; uvicorn's would print raw paths with user ids.
    from .app import MAX_REQUEST_HEAD_BYTES

    uvicorn.run("api.app:app_from_env", factory=True, host=host, port=port, workers=workers, access_log=False,
                h11_max_incomplete_event_size=MAX_REQUEST_HEAD_BYTES)


def _check_port(host: str, port: int) -> None:
    """UserError unless ``host:port`` can be listened on (uvicorn would only log and exit 1)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise UserError(f"cannot listen on {host}:{port} ({e.strerror}): choose another --port") from None


@app.command()
def compact(index_dir: IndexOpt = Path("out/index"),
            db_url: Annotated[str | None, typer.Option(envvar="SEMREC_DB_URL", help=(
                "PostgreSQL catalog feed: its changes are folded in too, and the snapshot's position in it "
                "is recorded"))] = None) -> None:
    """Fold the write-ahead log (or the catalog feed) into a new snapshot. Safe beside running servers:
    they carry on with the new log (servers also compact by themselves, see SEMREC_COMPACT_LOG_MB)."""
    from indexer.store import ItemIndex

    idx = ItemIndex.load(index_dir)
    if db_url:
        from indexer.feed import open_feed

        idx.use_feed(open_feed(db_url))
    idx.save(index_dir)
    typer.echo(f"{index_dir}: snapshot of {len(idx)} items written, log rotated")


@app.command()
def similar(
    item_id: Annotated[str, typer.Argument(help="the item to find neighbours of")],
    index_dir: IndexOpt = Path("out/index"),
    k: Annotated[int, typer.Option("-k", min=1, max=1000)] = 10,
    category: str | None = None, brand: str | None = None, min_price: float | None = None,
    max_price: float | None = None, in_stock: bool | None = None,
) -> None:
    """Print the items most similar to ITEM_ID."""
    from ranker import pipeline

    svc = _services(index_dir, embedder=False)
    if svc.index.table.get(item_id) is None:
        raise typer.BadParameter(f"item {item_id!r} is not in {index_dir}", param_hint="ITEM_ID")
    ranked = pipeline.similar(svc, pipeline.PipelineConfig(), item_id, k,
                              _filters(category, brand, min_price, max_price, in_stock))
    typer.echo(f"similar to {item_id}: {svc.index.table.get(item_id)['title']}")
    _print_rows(svc.index, ranked.labels, ranked.scores)


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="free text")],
    index_dir: IndexOpt = Path("out/index"),
    k: Annotated[int, typer.Option("-k", min=1, max=1000)] = 10,
) -> None:
    """Print the items that best match QUERY: the service's search pipeline (hybrid, as /search)."""
    from ranker import pipeline

    from .deps import search_box_for
    from .settings import cli_settings

    svc = _services(index_dir)
    # demo=True: no event log is opened here, so no pseudonym key is needed
    svc.search = search_box_for(cli_settings(index_dir=index_dir, demo=True), svc)
    result, _ = pipeline.search(svc, pipeline.PipelineConfig(), query, k)
    _print_rows(svc.index, result.labels, result.scores)


def _services(index_dir: Path, embedder: bool = True):
    """Services over an index alone (no event log): what similar (no embedder) and search need."""
    from indexer.store import ItemIndex
    from ranker.services import Services, open_index

    return Services(*open_index(index_dir)) if embedder else Services(ItemIndex.load(index_dir), None)


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

    key = _pseudonym_key(pseudonym_key)
    catalog, _ = clean_catalog(load_dataset(dataset, data_dir))
    store = open_event_store(db, pseudonym_key=key)
    started = time.perf_counter()
    read, stored = import_reviews(store, catalog.reviews, dataset)
    typer.echo(f"{read} events read, {stored} new, {read - stored} already there -> {db} "
               f"({time.perf_counter() - started:.1f} s, {store.count_events()} events in the log)")


def _pseudonym_key(given: str | None) -> str:
    """The pseudonym key from the option, else the settings (SEMREC_PSEUDONYM_KEY / .env); none is
    a one-line error (user ids are stored only as a keyed hash of it)."""
    from pydantic import ValidationError

    from .settings import cli_settings

    try:
        return cli_settings(pseudonym_key=given).pseudonym_key
    except ValidationError as e:
        raise typer.BadParameter(e.errors()[0]["msg"].removeprefix("Value error, "),
                                 param_hint="--pseudonym-key") from None


@app.command()
def keygen(name: Annotated[str, typer.Option(help="who the key is for")],
           role: Annotated[str, typer.Option(help="read, ingest, backend or admin")] = "ingest") -> None:
    """Print a new API key (give it to the client) and the settings entry holding only its hash."""
    from .security import RANK, new_key

    if role not in RANK:
        raise typer.BadParameter(f"role must be one of {list(RANK)}", param_hint="--role")
    key, sha = new_key()
    typer.echo(f"key (shown once): {key}")
    typer.echo("add to SEMREC_API_KEYS: " + json.dumps({"name": name, "role": role, "sha256": sha}))


@app.command()
def token(user_id: Annotated[str, typer.Argument(help="the shopper the token opens (the shop's user id)")],
          ttl: Annotated[float | None, typer.Option(help="seconds until it expires; default: setting token_ttl_s")
                         ] = None) -> None:
    """Print a shopper token for USER_ID, signed with SEMREC_TOKEN_SECRET: what the shop's backend
    hands a logged-in shopper's browser (header X-Shopper-Token) to open only their own data."""
    from pydantic import ValidationError

    from .security import mint_token
    from .settings import cli_settings

    try:
        settings = cli_settings()
    except ValidationError as e:
        raise UserError(f"settings: {e.errors()[0]['msg'].removeprefix('Value error, ')}") from None
    if settings.token_secret is None:
        raise UserError("set SEMREC_TOKEN_SECRET (the server's secret, at least 16 characters) first")
    if ttl is not None and not 0 < ttl <= 7 * 86_400:
        raise typer.BadParameter("must be between 0 and 604800 seconds", param_hint="--ttl")
    if not user_id or len(user_id) > 200 or any(ord(ch) < 32 or ord(ch) == 127 for ch in user_id):
        raise typer.BadParameter("must be 1-200 printable characters", param_hint="USER_ID")
    value, expires = mint_token(user_id, settings.token_secret.get_secret_value(), ttl or settings.token_ttl_s)
    typer.echo(value)
    typer.echo(f"expires at {time.strftime('%Y-%m-%d %H:%M:%S %Z', time.localtime(expires))} ({expires})", err=True)


@app.command("ab-report")
def ab_report_cmd(db: Annotated[Path, typer.Option(help="SQLite event log")] = Path("out/events.db"),
                  pseudonym_key: Annotated[str | None, typer.Option(envvar="SEMREC_PSEUDONYM_KEY")] = None) -> None:
    """Per A/B variant: impressions, click-through, add-to-cart and purchase rates with 95% intervals."""
    from retriever.eventstore import open_event_store

    from .experiments import ab_report, format_report

    if not db.exists():
        raise typer.BadParameter(f"no event log at {db}", param_hint="--db")
    store = open_event_store(db, pseudonym_key=_pseudonym_key(pseudonym_key))
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
    from evaluation.training import train_ranker
    from indexer.schema import Catalog
    from ranker.pairs import PairConfig
    from ranker.train import TrainConfig

    if (dataset is None) == (db is None):
        raise typer.BadParameter("give either --dataset with --data-dir, or --db with --index", param_hint="--dataset")
    if db is not None:
        if index_dir is None or not db.is_file():
            raise typer.BadParameter("--db needs an existing event log and --index its item index", param_hint="--db")
        from indexer.store import ItemIndex
        from retriever.eventstore import open_event_store
        from retriever.personal import reviews_from_events

        items = ItemIndex.load(index_dir).table.live_frame().drop(columns="label")
        # the log already holds only keyed user ids; they are read back as they are
        store = open_event_store(db, pseudonym_key=_pseudonym_key(None))
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
    ranker: Annotated[Path | None, typer.Option(
        help="trained reranker (version dir or root) loaded into the served pipeline, as SEMREC_RANKER_DIR "
             "loads it into the service")] = None,
    protocol: Annotated[str, typer.Option(help="standard (no cold slices, eSASRec's) or cold (cold items and "
                                               "users)")] = "cold",
    cache: Annotated[Path, typer.Option(help="item vectors are cached here")] = Path("runs/cache"),
    seed: int = 0,
) -> None:
    """Offline evaluation: leave-one-out, full ranking, semrec against baselines on public data."""
    from evaluation.harness import run_eval
    from indexer.build import catalog_item_vectors
    from indexer.embed import load_embedder
    from indexer.loaders import dataset_key

    dataset_key(dataset)  # a wrong name is told before the model loads
    embedder = load_embedder(model)

    def item_vectors(catalog, item_ids):
        # item text only: a review's text would carry the held-out interaction into the vectors
        return catalog_item_vectors(catalog.items, item_ids.tolist(), embedder, cache_dir=cache)

    if protocol not in ("standard", "cold"):
        raise typer.BadParameter("choose standard or cold", param_hint="--protocol")
    run_eval(dataset, str(data_dir), str(out), quick=quick, systems=systems.split(",") if systems else None,
             seed=seed, item_vectors=item_vectors, ranker=ranker, protocol=protocol, embedder=embedder)


_PASSTHROUGH = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


@app.command(context_settings=_PASSTHROUGH, add_help_option=False)
def bench(ctx: typer.Context,
          which: Annotated[str, typer.Argument(help="foundation, personal, rerank, search or backends")
                           ] = "foundation") -> None:
    """Benchmarks (figures, not tests): `semrec bench WHICH --help`."""
    import importlib

    names = ("foundation", "personal", "rerank", "search", "backends")
    if which not in names:
        raise typer.BadParameter(f"choose one of {list(names)}", param_hint="WHICH")
    raise typer.Exit(importlib.import_module(f"bench.{which}").main(ctx.args) or 0)


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
    out: Annotated[Path, typer.Option(help="where the demo's index, event log and access log go")] = Path("out/demo"),
    port: Annotated[int, typer.Option()] = 8000,
    exit_after: Annotated[bool, typer.Option("--exit", help="stop after printing the examples")] = False,
) -> None:
    """Index the bundled demo catalog (or reuse the index while the catalog is unchanged), load its
    shoppers' history, start the API, and show similar items, search results and recommendations."""
    import secrets

    import httpx
    import uvicorn

    from indexer.build import EmbedConfig, catalog_fingerprint
    from indexer.clean import clean_catalog
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
    if _unchanged_index(settings.index_dir, fingerprint):
        typer.echo(f"index: {settings.index_dir} is up to date with data/demo (catalog fingerprint "
                   f"{fingerprint[:12]}); delete it to re-index")
    else:
        index(REPO_DATA / "demo", out=settings.index_dir, reviews=None, fmt="own", model="minilm", kind="auto",
              review_weight=0.3, max_reviews=0, unknown_items="drop")
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


if __name__ == "__main__":
    app()
