"""Shared fixtures: the real packaged MiniLM, a tiny catalog with known answers, the shared data."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from evaluation.distill import distill
from evaluation.protocol import sequences_from_reviews
from evaluation.training import train_ranker
from indexer.build import build_index, catalog_item_vectors
from indexer.embed import load_embedder
from indexer.loaders import load_dataset
from indexer.schema import Catalog, make_items, make_reviews
from ranker.distill import DistillConfig
from ranker.network import EncoderConfig
from ranker.pairs import PairConfig
from ranker.train import TrainConfig

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("SEMREC_SHARED", ROOT.parent / "shared"))
# The service refuses to run without a pseudonym secret of its own; the tests (and the servers they
# start as subprocesses) use this one.
os.environ.setdefault("SEMREC_PSEUDONYM_KEY", "semrec-tests-pseudonym-key")


def make_app(settings, index, embedder, events=None, state=None, reranker=None, search=None):
    """The app over components already in memory (``api.deps.Components``)."""
    from api.app import create_app
    from api.deps import Components
    from ranker.services import Services

    return create_app(components=Components(settings, Services(index, embedder, events, state, reranker, search)))


def open_events_for(settings):
    """The event log and interaction state a server with ``settings`` opens."""
    from ranker.services import open_events

    return open_events(settings.db_path, settings.pseudonym_key, settings.half_lives())


def shared_data(name: str) -> Path:
    """Folder of a public dataset in ../shared/data; skips the test when it is not there."""
    path = SHARED / "data" / name
    if not path.exists():
        pytest.skip(f"public data {path} not present (set SEMREC_SHARED)")
    return path


@pytest.fixture(scope="session")
def pg_cluster():
    """One throwaway PostgreSQL cluster for the session (a start costs a few seconds). Skips when the
    server binaries or psycopg are missing, unless SEMREC_REQUIRE_PG=1 (CI), where that fails."""
    try:
        import psycopg  # noqa: F401

        from bench.pgcluster import Cluster, PostgresMissing

        cluster = Cluster.start()
    except (ImportError, PostgresMissing) as e:
        if os.environ.get("SEMREC_REQUIRE_PG") == "1":
            pytest.fail(f"SEMREC_REQUIRE_PG=1 but PostgreSQL cannot run here: {e}")
        pytest.skip(f"PostgreSQL not available: {e}")
    yield cluster
    cluster.stop()


@pytest.fixture
def pg_url(pg_cluster) -> str:
    """URL of a fresh, empty database in the session's cluster."""
    import uuid

    return pg_cluster.create_database(f"t_{uuid.uuid4().hex[:16]}")


@pytest.fixture(scope="session")
def milvus_url(tmp_path_factory) -> str:
    """A Milvus Lite file for the session (one process may open it: this one)."""
    return f"milvus://{tmp_path_factory.mktemp('milvus') / 'vectors.db'}"


@pytest.fixture(scope="session")
def milvus_client(milvus_url):
    from indexer.milvus import connect

    client = connect(milvus_url)
    yield client
    client.close()


@pytest.fixture(scope="module")
def one_thread():
    """torch on one thread for a module: on a busy 2-core box two spinning threads make each query
    embedding many times slower. Restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def embedder():
    return load_embedder("minilm")


TINY_ITEMS = [
    {"item_id": "dryer", "title": "Ionic hair dryer 1800W with diffuser", "brand": "Breeze",
     "categories": ["Beauty", "Hair Care", "Hair Dryers"], "price": 49.0},
    {"item_id": "dryer-travel", "title": "Compact travel hair dryer, foldable", "brand": "Breeze",
     "categories": ["Beauty", "Hair Care", "Hair Dryers"], "price": 25.0},
    {"item_id": "straightener", "title": "Ceramic hair straightener flat iron", "brand": "Sleek",
     "categories": ["Beauty", "Hair Care", "Styling Tools"], "price": 39.0},
    {"item_id": "lipstick-red", "title": "Matte red lipstick", "brand": "Rouge",
     "categories": ["Beauty", "Makeup", "Lips"], "price": 12.0},
    {"item_id": "lipstick-red-2", "title": "Matte  Red Lipstick", "brand": "Rouge",
     "categories": ["Beauty", "Makeup", "Lips"], "price": 12.5},
    {"item_id": "lipstick-nude", "title": "Creamy nude lipstick", "brand": "Rouge",
     "categories": ["Beauty", "Makeup", "Lips"], "price": 14.0, "in_stock": False},
    {"item_id": "espresso", "title": "Espresso coffee beans, dark roast, 1 kg", "brand": "Bean & Co",
     "categories": ["Kitchen", "Coffee"], "price": 21.0},
    {"item_id": "grinder", "title": "Burr coffee grinder", "brand": "Bean & Co",
     "categories": ["Kitchen", "Coffee"]},
    {"item_id": "tent", "title": "Two-person camping tent, waterproof", "brand": "Trail",
     "categories": ["Sports", "Camping"], "price": 120.0},
]
TINY_REVIEWS = [
    {"item_id": "dryer", "user_id": "u1", "title": "Great", "text": "Dries my thick curly hair in minutes.",
     "helpful_votes": 4},
    {"item_id": "espresso", "user_id": "u2", "text": "Rich crema, chocolate notes."},
    {"item_id": "tent", "user_id": "u3", "text": ""},
]


@pytest.fixture(scope="session")
def tiny_catalog() -> Catalog:
    return Catalog(make_items(TINY_ITEMS), make_reviews(TINY_REVIEWS), source="tiny")


@pytest.fixture(scope="session")
def tiny_index(tiny_catalog, embedder):
    return build_index(tiny_catalog, embedder, kind="flat", progress=False)


# ----------------------------------------------------------------------------- a tiny trained reranker
TINY_RANKER_CFG = TrainConfig(
    pairs=PairConfig(users=None, examples_per_user=2, n_text_negatives=2, n_covisit_negatives=1, n_random_negatives=1,
                     history_items=3, words_per_item=6, max_groups=None),
    encoder=EncoderConfig(context_tokens=24, item_tokens=14),
    num_layers=1, lr=3e-4, batch_groups=8, epochs=1, eval_every=10, patience=100, max_minutes=5,
    val_users=10_000, val_candidates=10, max_val_groups=40, threads=2,
)


@pytest.fixture(scope="session")
def beauty_small(embedder):
    """A dense real slice of Beauty: its 300 most popular items, and the first 200 users (by id) with
    6+ interactions among them. Dense, so a tiny run sees enough decisions the retriever offered."""
    full = load_dataset("beauty", shared_data("amazon-beauty-2014"))
    top = set(full.reviews["item_id"].value_counts().index[:300])
    reviews = full.reviews[full.reviews["item_id"].isin(top)]
    sizes = reviews.groupby("user_id").size()
    users = sorted(sizes[sizes >= 6].index)[:200]
    reviews = reviews[reviews["user_id"].isin(users)].reset_index(drop=True)
    items = full.items[full.items["item_id"].isin(set(reviews["item_id"]))].reset_index(drop=True)
    catalog = Catalog(items, reviews, source="beauty: 300 popular items, 200 users")
    _, item_ids, _ = sequences_from_reviews(reviews)
    vectors = catalog_item_vectors(items, item_ids.tolist(), embedder=embedder, cache_dir=None)
    return catalog, vectors


@pytest.fixture(scope="session")
def trained_ranker(beauty_small, tmp_path_factory):
    """A tiny reranker (1 layer, ~1 minute) trained on ``beauty_small``: (version dir, model card)."""
    catalog, vectors = beauty_small
    root = tmp_path_factory.mktemp("ranker")
    path = train_ranker(catalog, root, TINY_RANKER_CFG, item_vectors=vectors, progress=False)
    return path, json.loads((path / "model_card.json").read_text())


# ----------------------------------------------------------------------------- the bundled demo catalog
DEMO = ROOT / "data" / "demo"


@pytest.fixture(scope="session")
def demo_catalog() -> Catalog:
    from indexer.clean import clean_catalog
    from indexer.loaders import load_catalog

    return clean_catalog(load_catalog(DEMO))[0]


@pytest.fixture(scope="session")
def demo_index(demo_catalog, embedder):
    """The demo catalog's index (read it, never change it: the session shares it)."""
    return build_index(demo_catalog, embedder, kind="flat", progress=False)


def demo_events(path, catalog: Catalog):
    """A new event log at ``path`` holding the demo's reviews (as ratings) and orders (as purchases),
    as ``semrec demo`` loads them, and the interaction state replayed from it."""
    from ranker.services import open_events
    from retriever.orders import import_orders
    from retriever.personal import import_reviews

    store, state = open_events(path, os.environ["SEMREC_PSEUDONYM_KEY"])
    import_reviews(store, catalog.reviews, "demo")
    import_orders(store, DEMO / "orders.jsonl", "demo")
    state.catch_up(store)
    return store, state


@pytest.fixture(scope="session")
def demo_services(demo_catalog, demo_index, embedder, tmp_path_factory):
    """Services over the demo index and its shoppers' events, shared by the session: read them
    (a test that sets ``rules`` or ``search`` puts None back)."""
    from ranker.services import Services

    store, state = demo_events(tmp_path_factory.mktemp("demo-events") / "events.db", demo_catalog)
    yield Services(demo_index, embedder, store, state)
    store.close()


TINY_DISTILL_CFG = DistillConfig(joint_layers=1, lists=60, list_size=10, epochs=1, batch_lists=8, eval_every=10,
                                 patience=100, max_minutes=3, val_groups=40)


@pytest.fixture(scope="session")
def trained_split(beauty_small, trained_ranker, tmp_path_factory):
    """A split reranker distilled from ``trained_ranker`` on ``beauty_small`` (seconds): (version dir, card)."""
    catalog, vectors = beauty_small
    root = tmp_path_factory.mktemp("split")
    path = distill(catalog, trained_ranker[0], root, TINY_DISTILL_CFG, item_vectors=vectors)
    return path, json.loads((path / "model_card.json").read_text())
