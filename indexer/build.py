"""Catalog -> item vectors -> ItemIndex, streaming in chunks of items.

Item vector (all vectors unit length)::

    t = embed(item document)                        # title, brand, categories, attributes, description
    r = normalise(mean(embed(review_i)))            # up to max_reviews texts, most helpful first
    w = review_weight * n / (n + review_shrink)     # n = number of those reviews; w = 0 without reviews
    v = normalise((1 - w) * t + w * r)

So reviews shift an item toward what shoppers say about it, more so the more reviews it has, but
never beyond ``review_weight``. An item with no document text (e.g. Musical Instruments, which has no
metadata) takes its vector from its reviews alone (w = 1).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .documents import documents, review_digest
from .embed import Embedder, normalize
from .schema import Catalog
from .store import ItemIndex, auto_kind


@dataclass(frozen=True)
class EmbedConfig:
    review_weight: float = 0.3   # largest share of an item vector its reviews can take
    review_shrink: float = 2.0   # reviews needed to reach half of review_weight
    max_reviews: int = 8         # reviews embedded per item, most helpful then newest first
    batch_size: int = 64         # texts per encoder forward pass
    chunk_items: int = 2048      # items per pipeline step: bounds memory for any catalog size


def review_weights(n_reviews: np.ndarray, has_text: np.ndarray, cfg: EmbedConfig) -> np.ndarray:
    """Weight ``w`` of the review vector per item (see module docstring), float32 ``(n,)``."""
    n = np.asarray(n_reviews, dtype=np.float32)
    w = cfg.review_weight * n / (n + cfg.review_shrink)
    w = np.where(has_text, w, np.where(n > 0, 1.0, 0.0))
    return w.astype(np.float32)


def combine(text_vecs: np.ndarray, review_vecs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``normalise((1 - w) * t + w * r)`` row-wise. Shapes ``(n, d)``, ``(n, d)``, ``(n,)``."""
    w = weights[:, None]
    return normalize((1.0 - w) * text_vecs + w * normalize(review_vecs))


def item_chunks(catalog: Catalog, cfg: EmbedConfig) -> Iterator[tuple[pd.DataFrame, list[list[str]]]]:
    """Split a catalog into ``(items, reviews_per_item)`` chunks of ``cfg.chunk_items`` items."""
    digest = review_digest(catalog.reviews, cfg.max_reviews)
    items = catalog.items
    for start in range(0, len(items), cfg.chunk_items):
        chunk = items.iloc[start:start + cfg.chunk_items]
        yield chunk, [digest.get(i, []) for i in chunk["item_id"]]


def embed_chunks(chunks: Iterable[tuple[pd.DataFrame, list[list[str]]]], embedder: Embedder,
                 cfg: EmbedConfig = EmbedConfig()) -> Iterator[tuple[pd.DataFrame, np.ndarray]]:
    """Embed each ``(items, reviews_per_item)`` chunk -> ``(items, vectors float32 (n, dim))``.

    Documents and reviews of a chunk go to the encoder in one call, so its length-sorted batching
    sees all of them and padding stays small.
    """
    for items, reviews in chunks:
        docs = documents(items)
        flat = [t for texts in reviews for t in texts]
        vecs = embedder.encode(docs + flat, batch_size=cfg.batch_size)
        text_vecs, review_part = vecs[: len(docs)], vecs[len(docs):]
        counts = np.array([len(r) for r in reviews])
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        review_vecs = np.zeros_like(text_vecs)
        has = counts > 0
        if has.any():
            sums = np.add.reduceat(review_part, starts[has], axis=0)
            review_vecs[has] = sums / counts[has, None]
        has_text = np.array([bool(d.strip()) for d in docs])
        yield items, combine(text_vecs, review_vecs, review_weights(counts, has_text, cfg))


def build_index(catalog: Catalog, embedder: Embedder, *, kind: str = "auto",
                cfg: EmbedConfig = EmbedConfig(), progress: bool = True) -> ItemIndex:
    """Embed every item of ``catalog`` and index it. ``kind``: auto, numpy, flat, hnsw or ivf.

    IVF trains on the first chunk, so a chunk should hold well over 39 * nlist vectors.
    """
    n = len(catalog.items)
    started = time.perf_counter()
    index = ItemIndex(model=embedder.name, dim=embedder.dim, kind=auto_kind(n, kind),
                      build={"embed": asdict(cfg), "source": catalog.source,
                             "backend": getattr(embedder, "backend", "torch")})
    bar = tqdm(total=n, unit="item", desc="embedding", disable=not progress)
    reviews: dict[str, list[str]] = {}

    def remember(chunks):  # the index keeps a few review texts per item, for explanations
        for items, texts in chunks:
            reviews.update(zip(items["item_id"], texts))
            yield items, texts

    for items, vectors in embed_chunks(remember(item_chunks(catalog, cfg)), embedder, cfg):
        index.add(items, vectors, [reviews.pop(i) for i in items["item_id"]])
        bar.update(len(items))
    bar.close()
    index.build_info["seconds"] = round(time.perf_counter() - started, 3)
    index.build_info["items_per_s"] = round(n / max(index.build_info["seconds"], 1e-9), 1)
    return index
