"""The offline ``semrec`` commands: training the learned parts and the reranker, the evaluation
harness, benchmarks and the load test (thin layers over ``evaluation`` and ``bench``)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from .cli_common import IndexOpt, UserError, _pseudonym_key


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

        items = ItemIndex.load(index_dir).table.live_frame().drop(columns="label")
        catalog = Catalog(items, _reviews_of_log(db), source=f"event log {db}")
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


def train_cmd(
    index_dir: IndexOpt = Path("out/index"),
    db: Annotated[Path | None, typer.Option(help="the service's event log (SQLite) to learn from ...")] = None,
    dataset: Annotated[str | None, typer.Option(help="... or a public dataset's interactions (beauty, ...)")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="its folder, or the shared data root")] = None,
    out: Annotated[Path | None, typer.Option(help="root of the model versions; default <index>/models, where "
                                                  "`semrec serve` loads the newest")] = None,
    every: Annotated[float, typer.Option(help="with --db: refit every this many minutes (0: once); a running "
                                             "`semrec serve` swaps each new version in")] = 0.0,
    keep: Annotated[int, typer.Option(min=1, help="with --every: model versions kept (older ones removed)")] = 3,
    ranker: Annotated[Path | None, typer.Option(
        help="a trained reranker (version dir or root; `semrec train-ranker`): its score becomes a feature of the "
             "learned ranking and it is published with the version")] = None,
    seed: int = 0,
) -> None:
    """Fit the served pipeline's learned parts (MF factors, EASE, the history encoder, the learned
    ranking) on the interactions of the index's items and publish them as the next version."""
    from indexer.store import ItemIndex

    if (dataset is None) == (db is None):
        raise typer.BadParameter("give either --db (the event log) or --dataset with --data-dir", param_hint="--db")
    if every < 0 or (every and db is None):
        raise typer.BadParameter("--every needs --db (a dataset does not change) and minutes >= 0",
                                 param_hint="--every")
    if every:
        from ranker.artifacts import prune_versions

        while True:  # the catalog and the log as they are now, each round
            try:
                _train_once(ItemIndex.load(index_dir), index_dir, db, None, None, out, seed, ranker)
                prune_versions(out or index_dir / "models", keep)
            except UserError as e:  # a young shop: too few shoppers yet; try again next round
                typer.echo(f"not trained this round: {e}", err=True)
            time.sleep(every * 60)
    _train_once(ItemIndex.load(index_dir), index_dir, db, dataset, data_dir, out, seed, ranker)


def _train_once(index, index_dir: Path, db: Path | None, dataset: str | None, data_dir: Path | None,
                out: Path | None, seed: int, ranker: Path | None = None) -> None:
    from evaluation.publish import TooFewShoppers, train_for_index
    from ranker.model import Reranker, RerankerLoadError

    if db is not None:
        reviews, source = _reviews_of_log(db), f"event log {db}"
    else:
        from evaluation.harness import dataset_folder
        from indexer.loaders import load_dataset

        if data_dir is None:
            raise typer.BadParameter("--dataset needs --data-dir", param_hint="--data-dir")
        reviews, source = load_dataset(dataset, dataset_folder(dataset, data_dir)).reviews, dataset
    try:
        reranker = Reranker(ranker) if ranker is not None else None
    except RerankerLoadError as e:
        raise typer.BadParameter(str(e), param_hint="--ranker") from None
    try:
        path = train_for_index(index, reviews, out or index_dir / "models", source=source, command="semrec train",
                               seed=seed, reranker=reranker)
    except TooFewShoppers as e:
        raise UserError(str(e)) from None
    typer.echo(f"models written to {path}; `semrec serve --index {index_dir}` loads the newest")


def _reviews_of_log(db: Path):
    """The event log's interactions as a reviews frame (the log holds only keyed user ids; they are
    read back as they are)."""
    from retriever.eventstore import open_event_store
    from retriever.personal import reviews_from_events

    if not db.is_file():
        raise typer.BadParameter(f"no event log at {db}", param_hint="--db")
    store = open_event_store(db, pseudonym_key=_pseudonym_key(None))
    try:
        return reviews_from_events(store)
    finally:
        store.close()


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
    users: Annotated[int | None, typer.Option(min=1, help="a seeded sample of this many shoppers, with the "
                                                          "full models (--quick: 2,000 and small ones)")] = None,
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
             seed=seed, item_vectors=item_vectors, ranker=ranker, protocol=protocol, embedder=embedder, users=users)


_PASSTHROUGH = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


def bench(ctx: typer.Context,
          which: Annotated[str, typer.Argument(help="foundation, personal, rerank, search or backends")
                           ] = "foundation") -> None:
    """Benchmarks (figures, not tests): `semrec bench WHICH --help`."""
    import importlib

    names = ("foundation", "personal", "rerank", "search", "backends")
    if which not in names:
        raise typer.BadParameter(f"choose one of {list(names)}", param_hint="WHICH")
    raise typer.Exit(importlib.import_module(f"bench.{which}").main(ctx.args) or 0)


def loadtest(ctx: typer.Context) -> None:
    """Mixed traffic against a server on loopback: `semrec loadtest --help`."""
    from bench.loadtest import main

    raise typer.Exit(main(ctx.args))


def register(app: typer.Typer) -> None:
    """Add these commands to the ``semrec`` app."""
    app.command("train-ranker")(train_ranker_cmd)
    app.command("train")(train_cmd)
    app.command("eval")(eval_cmd)
    app.command(context_settings=_PASSTHROUGH, add_help_option=False)(bench)
    app.command(context_settings=_PASSTHROUGH, add_help_option=False)(loadtest)
