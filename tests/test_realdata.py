"""Behaviour on real public data: item vectors put related real products next to each other."""

import numpy as np

from indexer.build import EmbedConfig, build_index
from indexer.clean import clean_catalog
from indexer.loaders import load_dataset
from indexer.schema import Catalog
from retriever.similar import similar_items

from .conftest import shared_data


def test_magazine_neighbours_share_a_subcategory(embedder):
    catalog, _ = clean_catalog(load_dataset("magazine", shared_data("amazon-magazine-2018")))
    reviewed = set(catalog.reviews["item_id"])
    items = catalog.items[catalog.items["item_id"].isin(reviewed) & (catalog.items["categories"].map(len) >= 2)]
    sub = Catalog(items.reset_index(drop=True), catalog.reviews[catalog.reviews["item_id"].isin(set(items["item_id"]))])
    index = build_index(sub, embedder, cfg=EmbedConfig(max_reviews=1), progress=False)
    assert len(index) == len(items) > 100
    ids = list(items["item_id"])
    neighbour = [row[0] for row in index.table.ids(similar_items(index, ids, 1)[0])]
    subcategory = dict(zip(items["item_id"], items["categories"].map(lambda c: c[1])))
    hit = np.mean([subcategory[a] == subcategory[b] for a, b in zip(ids, neighbour)])
    chance = np.mean([subcategory[a] == subcategory[b]
                      for a, b in zip(ids, np.random.default_rng(0).permutation(ids))])
    # Measured: 0.59 for the nearest neighbour vs 0.07 for a random pair (145 magazines).
    assert hit >= 0.45 and hit >= 5 * chance
