"""Catalog -> item vectors -> ItemIndex, streaming in chunks of items.

Item vector (all vectors unit length)::

    t = embed(item document)                        # title, brand, categories, attributes, description
    s, n = sum(embed(review_i)), count               # every review with text, each embedded once
    r = normalise(s / n)                             # the plain mean of the item's review vectors
    w = review_weight * n / (n + review_shrink)     # w = 0 without reviews
    v = normalise((1 - w) * t + w * r)

So reviews shift an item toward what shoppers say about it, more so the more reviews it has, but
never beyond ``review_weight``. An item with no document text (e.g. Musical Instruments, which has no
metadata) takes its vector from its reviews alone (w = 1).

The pool ``(s, n)`` is kept with the index (:class:`indexer.pools.ReviewPool`, with a digest of each
pooled review), so a review that arrives later is embedded once and added to it: the item's vector is
then exactly what a rebuild from all its reviews would give. On Musical Instruments the mean of all
reviews beats the 8 most helpful ones (``python -m bench.review_pooling``; figures in its docstring).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .documents import documents, review_digest
from .embed import Embedder, normalize
from .files import replacing
from .pools import ReviewPool, text_key
from .schema import Catalog
from .store import ItemIndex, auto_kind


@dataclass(frozen=True)
class EmbedConfig:
    review_weight: float = 0.3   # largest share of an item vector its reviews can take
    review_shrink: float = 2.0   # reviews needed to reach half of review_weight
    max_reviews: int = 0         # reviews pooled per item, most helpful first; 0 = all of them
    batch_size: int = 64         # texts per encoder forward pass
    chunk_items: int = 2048      # items per pipeline step: bounds memory for any catalog size
    review_slice: int = 4096     # review texts per encoder call (their vectors are summed at once)


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


def pool_vectors(text_vecs: np.ndarray, pools: Sequence[ReviewPool | None], has_text: np.ndarray,
                 cfg: EmbedConfig) -> np.ndarray:
    """Item vectors ``(n, d)`` from document vectors ``(n, d)`` and review pools (module docstring)."""
    sums = np.zeros_like(text_vecs)
    counts = np.zeros(len(pools), dtype=np.int64)
    for i, pool in enumerate(pools):
        if pool is not None and pool.count:
            sums[i], counts[i] = pool.sum, pool.count
    means = sums / np.maximum(counts, 1)[:, None]
    return combine(text_vecs, means, review_weights(counts, has_text, cfg))


def new_pool(texts: Sequence[str], vectors: np.ndarray, prior: ReviewPool | None, dim: int) -> ReviewPool | None:
    """``prior`` (copied) with ``texts`` and their unit ``vectors`` pooled in; None if it stays empty."""
    pool = prior.copy() if prior is not None else ReviewPool(np.zeros(dim, dtype=np.float32))
    for text, vector in zip(texts, vectors):
        pool.add(text, vector)
    return pool if pool.count else None


def item_chunks(catalog: Catalog, cfg: EmbedConfig) -> Iterator[tuple[pd.DataFrame, list[list[str]]]]:
    """Split a catalog into ``(items, reviews_per_item)`` chunks of ``cfg.chunk_items`` items."""
    digest = review_digest(catalog.reviews, cfg.max_reviews)
    items = catalog.items
    for start in range(0, len(items), cfg.chunk_items):
        chunk = items.iloc[start:start + cfg.chunk_items]
        yield chunk, [digest.get(i, []) for i in chunk["item_id"]]


def embed_chunks(chunks: Iterable[tuple[pd.DataFrame, list[list[str]]]], embedder: Embedder,
                 cfg: EmbedConfig = EmbedConfig()
                 ) -> Iterator[tuple[pd.DataFrame, np.ndarray, list[ReviewPool | None]]]:
    """Embed each ``(items, reviews_per_item)`` chunk -> ``(items, vectors float32 (n, dim), pools)``.

    Reviews go to the encoder ``cfg.review_slice`` texts at a time and are summed into their pools
    at once, so memory stays bounded however many reviews an item has. A text repeated for one item
    is embedded once.
    """
    for items, reviews in chunks:
        docs = documents(items)
        text_vecs = embedder.encode(docs, batch_size=cfg.batch_size)
        pools: list[ReviewPool | None] = [None] * len(docs)
        flat = [(i, t) for i, r in enumerate(reviews) for t in dict.fromkeys(r) if t.strip()]
        for start in range(0, len(flat), cfg.review_slice):
            part = flat[start: start + cfg.review_slice]
            vecs = embedder.encode([t for _, t in part], batch_size=cfg.batch_size)
            for (i, text), vector in zip(part, vecs):
                if pools[i] is None:
                    pools[i] = ReviewPool(np.zeros(embedder.dim, dtype=np.float32))
                pools[i].add(text, vector)
        has_text = np.array([bool(d.strip()) for d in docs])
        yield items, pool_vectors(text_vecs, pools, has_text, cfg), pools


def upsert_items(index: ItemIndex, items: pd.DataFrame, reviews: Sequence[Sequence[str]], embedder: Embedder,
                 cfg: EmbedConfig = EmbedConfig()) -> None:
    """Embed and upsert ``items``; ``reviews[i]`` are new review texts of item ``i``.

    New reviews are added to what the index already pooled for the item (a text it already holds
    counts once, so a retried request changes nothing): the vector equals a rebuild's from all of the
    item's reviews, and only the new texts are embedded. Encoding runs outside the index lock.
    """
    with index.lock:
        held = [index.pools.get(i) for i in items["item_id"]]
    fresh = [[t for t in dict.fromkeys(r) if t.strip() and (p is None or text_key(t) not in p.seen)]
             for r, p in zip(reviews, held)]
    docs = documents(items)
    vecs = embedder.encode(docs + [t for r in fresh for t in r], batch_size=cfg.batch_size)
    with index.lock:  # re-read the pools: another writer may have added reviews meanwhile
        pools, kept, at = [], [], len(docs)
        for item_id, texts in zip(items["item_id"], fresh):
            pools.append(new_pool(texts, vecs[at: at + len(texts)], index.pools.get(item_id), embedder.dim))
            kept.append(list(dict.fromkeys([*texts, *index.reviews.get(item_id, [])])))
            at += len(texts)
        has_text = np.array([bool(d.strip()) for d in docs])
        index.add(items, pool_vectors(vecs[: len(docs)], pools, has_text, cfg), kept, pools)


def catalog_fingerprint(catalog: Catalog, model: str, cfg: EmbedConfig) -> str:
    """sha256 over what an index is built from: the items' documents, review texts, model, settings."""
    h = hashlib.sha256(f"{model}\n{sorted(asdict(cfg).items())}\n".encode())
    for item_id, doc in zip(catalog.items["item_id"], documents(catalog.items)):
        h.update(f"{item_id}\t{doc}\n".encode())
    r = catalog.reviews
    for row in zip(r["item_id"], r["title"], r["text"], r["helpful_votes"], r["timestamp"]):
        h.update(("\t".join(map(str, row)) + "\n").encode())
    return h.hexdigest()


def build_index(catalog: Catalog, embedder: Embedder, *, kind: str = "auto",
                cfg: EmbedConfig = EmbedConfig(), progress: bool = True) -> ItemIndex:
    """Embed every item of ``catalog`` and index it. ``kind``: auto, numpy, flat, hnsw or ivf.

    ``build_info`` records the settings, the catalog's fingerprint (:func:`catalog_fingerprint`) and
    whether the source had stock data (``stock_known``). IVF trains on the first chunk, so a chunk
    should hold well over 39 * nlist vectors.
    """
    n = len(catalog.items)
    started = time.perf_counter()
    index = ItemIndex(model=embedder.name, dim=embedder.dim, kind=auto_kind(n, kind),
                      build={"embed": asdict(cfg), "source": catalog.source, "stock_known": catalog.stock_known,
                             "catalog_fingerprint": catalog_fingerprint(catalog, embedder.name, cfg),
                             "backend": getattr(embedder, "backend", "torch")})
    bar = tqdm(total=n, unit="item", desc="embedding", disable=not progress)
    reviews: dict[str, list[str]] = {}

    def remember(chunks):  # the index keeps a few review texts per item, for explanations
        for items, texts in chunks:
            reviews.update(zip(items["item_id"], texts))
            yield items, texts

    for items, vectors, pools in embed_chunks(remember(item_chunks(catalog, cfg)), embedder, cfg):
        index.add(items, vectors, [reviews.pop(i) for i in items["item_id"]], pools)
        bar.update(len(items))
    bar.close()
    index.build_info["seconds"] = round(time.perf_counter() - started, 3)
    index.build_info["items_per_s"] = round(n / max(index.build_info["seconds"], 1e-9), 1)
    return index


def catalog_item_vectors(items: pd.DataFrame, item_ids: Sequence[str], embedder=None,
                         cache_dir: str | Path | None = "runs/cache",
                         reviews: pd.DataFrame | None = None) -> np.ndarray:
    """(len(item_ids), dim) float32 unit item vectors, built exactly as the item index builds them.

    Uses :func:`build_index` with the MiniLM embedder (or ``embedder``), so offline training and
    evaluation see the vectors the service searches. Cached as ``.npy`` under
    ``cache_dir`` keyed by a hash of the ids, their documents and the model name.
    """
    from .embed import load_embedder
    from .schema import empty_reviews

    frame = items.drop_duplicates("item_id").set_index("item_id", drop=False)
    missing = [i for i in item_ids if i not in frame.index]
    if missing:
        raise KeyError(f"{len(missing)} item ids have no catalog row, e.g. {missing[:3]}")
    frame = frame.loc[list(item_ids)].reset_index(drop=True)
    model = embedder.cache_key if embedder is not None else "minilm"
    h = hashlib.sha256(model.encode())
    for i, d in zip(frame["item_id"], documents(frame)):
        h.update(f"{i}\t{d}\n".encode())
    cache = Path(cache_dir) / f"item-vectors-{h.hexdigest()[:16]}.npy" if cache_dir is not None else None
    if cache is not None and cache.exists():
        return np.load(cache)
    embedder = embedder or load_embedder("minilm")
    catalog = Catalog(frame, reviews if reviews is not None else empty_reviews(), source="ranker")
    index = build_index(catalog, embedder, kind="numpy", progress=False)
    vectors = index.vectors_of(list(item_ids))
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with replacing(cache) as tmp, open(tmp, "wb") as fh:
            np.save(fh, vectors)
    return vectors
