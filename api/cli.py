"""The ``semrec`` command line: a thin layer over the library.

A user's mistake (a wrong option, a missing index, an unknown dataset, a folder of the wrong data)
prints one line saying what to fix and exits with code 2: :class:`Commands` maps the library's
input errors (:func:`user_errors`) and click's usage errors to that, in one place. Anything else is
a bug and keeps its traceback.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Annotated, Literal

import typer
from typer.core import TyperGroup

from .cli_common import IndexOpt, UserError, _check_port, _fail, _print_rows, _pseudonym_key, user_errors


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


app = typer.Typer(cls=Commands, add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False,
                  help="semrec: semantic recommendations for e-commerce.")


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
    backend: Annotated[Literal["torch", "onnx", "onnx-int8", "openvino", "openvino-int8"], typer.Option(
        help="encoder backend (figures: semrec bench foundation --backends-only)")] = "torch",
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
    try:  # before cleaning: a wrong model name is told at once
        embedder = load_embedder(model, backend=backend)
    except ValueError as e:  # an unknown model, or one this backend cannot run (not mean-pooling)
        raise UserError(str(e)) from e
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


@app.command()
def enrich(
    index_dir: IndexOpt = Path("out/index"),
    model: Annotated[str, typer.Option(help="generator: smollm2 (packaged), a hub id or a local folder")] = "smollm2",
    batch_size: Annotated[int, typer.Option(min=1, max=256, help="prompts per generate call")] = 8,
    limit: Annotated[int | None, typer.Option(min=1, help="enrich only the first N items")] = None,
) -> None:
    """LLM enrichment: synthetic shopper queries per item (added to its lexical document) and review
    aspects (pros / cons). Cached by item text: a re-run generates only for changed items."""
    from retriever.search.enrich import EnrichConfig, enrich_index_dir

    stats = enrich_index_dir(index_dir, EnrichConfig(model=model, batch_size=batch_size), limit=limit)
    rate = f", {stats['items_per_s']} items/s" if stats["items_per_s"] else ""
    typer.echo(f"enriched {stats['items']} items: {stats['generated']} generated, {stats['from_cache']} from the "
               f"cache, {stats['unchanged']} unchanged, {stats['seconds']} s{rate}; wrote {index_dir}/enrichment.json")


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


from . import cli_demo, cli_offline  # noqa: E402 - their commands join the app

cli_offline.register(app)
cli_demo.register(app)

if __name__ == "__main__":
    app()
