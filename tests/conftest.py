"""Shared fixtures: the real packaged MiniLM, a tiny catalog with known answers, the shared data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from indexer.build import build_index
from indexer.embed import load_embedder
from indexer.schema import Catalog, make_items, make_reviews

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("SEMREC_SHARED", ROOT.parent / "shared"))


def shared_data(name: str) -> Path:
    """Folder of a public dataset in ../shared/data; skips the test when it is not there."""
    path = SHARED / "data" / name
    if not path.exists():
        pytest.skip(f"public data {path} not present (set SEMREC_SHARED)")
    return path


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
