"""LLM enrichment at index time: per item, synthetic shopper queries (doc2query, Nogueira et al.
2019) and review aspects with sentiment (``retriever.aspects``).

    semrec enrich --index out/index            # explicit step; prints items/s
    (the service enriches upserted items in a background thread: BackgroundEnricher)

- Queries: the generator (a setting: the packaged SmolLM2-135M by default, any local HF / GGUF
  model) reads the item's title, brand, category and the start of its description (or, with no
  title, its first review) and proposes a few queries; kept when grounded in the catalog's words.
  They are added to the item's lexical document (``EnrichedText``) and are (query, item) training
  pairs for the query reranker.
- Aspects: pros and cons from the item's reviews (no LLM: a 135M model's sentiment is not reliable
  enough to decide what may be shown as a reason to buy).
- Batched (``batch_size`` prompts per generate call), cached by a hash of (model, prompt, item
  text) in ``cache_dir`` (a re-run or another index with the same items generates nothing), saved
  with the index as ``enrichment.json``; incremental: only items whose text changed are generated.
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from indexer.files import replacing
from indexer.store import ItemIndex
from retriever.aspects import Aspect, item_aspects

from .llm import DEFAULT_CACHE, TextGenerator, parse_terms
from .tokens import tokenize

log = logging.getLogger(__name__)
FILE = "enrichment.json"
SYSTEM = ("You write what shoppers type into an online shop's search box. Given a product, reply with 4 short "
          "search queries (2 to 5 words each) that should find it. Reply with a comma-separated list only.")
SHOTS = [("Ionic hair dryer 1800W with diffuser | Breeze | Hair Dryers",
          "ionic hair dryer, blow dryer with diffuser, 1800w hair dryer, fast drying hairdryer"),
         ("Gooseneck pour-over kettle, 1 L | Pourwell | Kettles",
          "gooseneck kettle, pour over coffee kettle, 1 liter kettle, drip coffee kettle")]


@dataclass(frozen=True)
class EnrichConfig:
    model: str = "smollm2"
    queries: int = 4
    max_new_tokens: int = 40
    batch_size: int = 8
    text_chars: int = 240


@dataclass
class Enrichment:
    """One item's enrichment; ``text_hash`` identifies the text (and model) it was made from."""

    text_hash: str
    queries: list[str] = field(default_factory=list)
    pros: list[Aspect] = field(default_factory=list)
    cons: list[Aspect] = field(default_factory=list)

    @classmethod
    def from_json(cls, d: dict) -> Enrichment:
        return cls(d["text_hash"], d.get("queries", []), [Aspect(**a) for a in d.get("pros", [])],
                   [Aspect(**a) for a in d.get("cons", [])])


def item_prompt(record: Mapping, reviews: list[str], chars: int) -> str:
    """What the generator reads for one item."""
    head = " | ".join(p for p in (record["title"].strip(), record["brand"].strip(),
                                  record["categories"][-1].strip() if record["categories"] else "") if p)
    body = record["description"].strip() or (reviews[0].strip() if reviews else "")
    return (head + (". " if head and body else "") + body[:chars]).strip()


REPETITION_PENALTY = 1.0  # see TransformersGenerator.generate_batch


def text_hash(model: str, prompt: str) -> str:
    return hashlib.sha256(json.dumps([model, SYSTEM, SHOTS, REPETITION_PENALTY, prompt]).encode()).hexdigest()[:20]


class EnrichmentStore:
    """``item_id -> Enrichment`` of one index, plus a cross-index reply cache by text hash."""

    def __init__(self, cache_dir: str | Path | None = DEFAULT_CACHE):
        self.items: dict[str, Enrichment] = {}
        self.cache_path = None if cache_dir is None else Path(cache_dir) / "enrich-replies.json"
        self.replies: dict[str, list[str]] = {}
        if self.cache_path is not None and self.cache_path.exists():
            self.replies = json.loads(self.cache_path.read_text())
        self.lock = threading.Lock()

    @classmethod
    def load(cls, index_dir: str | Path, cache_dir: str | Path | None = DEFAULT_CACHE) -> EnrichmentStore:
        store = cls(cache_dir)
        path = Path(index_dir) / FILE
        if path.exists():
            store.items = {k: Enrichment.from_json(v) for k, v in json.loads(path.read_text()).items()}
        return store

    def save(self, index_dir: str | Path) -> None:
        """Write ``enrichment.json`` (atomically) and the reply cache."""
        with self.lock:
            data = {k: asdict(v) for k, v in self.items.items()}
            replies = dict(self.replies)
        path = Path(index_dir) / FILE
        with replacing(path) as tmp:
            tmp.write_text(json.dumps(data, ensure_ascii=False))
        if self.cache_path is not None:
            self.cache_path.parent.mkdir(parents=True, exist_ok=True)
            with replacing(self.cache_path) as tmp:
                tmp.write_text(json.dumps(replies, ensure_ascii=False))

    def get(self, item_id: str) -> Enrichment | None:
        return self.items.get(item_id)


class EnrichedText(Mapping):
    """The extra lexical text of each item: its synthetic queries (``LexicalIndex(extra_text=...)``)."""

    def __init__(self, store: EnrichmentStore):
        self.store = store

    def __getitem__(self, item_id: str) -> str:
        e = self.store.items.get(item_id)
        if e is None or not e.queries:
            raise KeyError(item_id)
        return " ; ".join(e.queries)

    def get(self, item_id, default=""):
        e = self.store.items.get(item_id)
        return " ; ".join(e.queries) if e is not None and e.queries else default

    def __iter__(self) -> Iterator[str]:
        return iter(list(self.store.items))

    def __len__(self) -> int:
        return len(self.store.items)


def enrich(index: ItemIndex, store: EnrichmentStore, generator: TextGenerator | None,
           cfg: EnrichConfig = EnrichConfig(), *, item_ids: list[str] | None = None,
           ground: Callable[[list[str]], list[str]] | None = None,
           progress: bool = True) -> dict:
    """Enrich ``item_ids`` (default: every live item) whose text changed since their enrichment.

    ``generator`` None: aspects only. ``ground``: keeps queries made of catalog words (e.g. a
    ``CatalogVocabulary.ground``-like filter applied per word). Returns counts and throughput:
    ``{"items", "generated", "from_cache", "unchanged", "seconds", "items_per_s"}``.
    """
    started = time.perf_counter()
    with index.lock:
        ids = list(index.table.label_of) if item_ids is None else [i for i in item_ids if i in index.table.label_of]
        records = {i: index.table.get(i) for i in ids}
        reviews = {i: list(index.reviews.get(i, [])) for i in ids}
    model = generator.name if generator is not None else "-"
    todo, unchanged, from_cache = [], 0, 0
    for i in ids:
        prompt = item_prompt(records[i], reviews[i], cfg.text_chars)
        h = text_hash(model, prompt + "\x00" + "\x00".join(reviews[i]))
        old = store.items.get(i)
        if old is not None and old.text_hash == h:
            unchanged += 1
            continue
        todo.append((i, prompt, h, text_hash(model, prompt)))
    need = [t for t in todo if generator is not None and t[3] not in store.replies]
    bar = tqdm(total=len(need), desc="enrich (doc2query)", unit="item", disable=not progress or not need)
    for start in range(0, len(need), cfg.batch_size):
        batch = need[start:start + cfg.batch_size]
        replies = generator.generate_batch(SYSTEM, SHOTS, [p for _, p, _, _ in batch], cfg.max_new_tokens,
                                           REPETITION_PENALTY)
        with store.lock:
            for (_, _, _, qh), reply in zip(batch, replies):
                store.replies[qh] = parse_terms(reply, cfg.queries + 2)
        bar.update(len(batch))
    bar.close()
    for i, _, h, qh in todo:
        queries = store.replies.get(qh, []) if generator is not None else []
        if ground is not None:
            queries = ground(queries)
        pros, cons = item_aspects(reviews[i])
        with store.lock:
            store.items[i] = Enrichment(h, queries[: cfg.queries], pros, cons)
        from_cache += generator is not None and qh not in {t[3] for t in need}
    seconds = time.perf_counter() - started
    return {"items": len(ids), "generated": len(need), "from_cache": from_cache, "unchanged": unchanged,
            "seconds": round(seconds, 2), "items_per_s": round(len(need) / seconds, 3) if need else None}


class BackgroundEnricher:
    """Enriches upserted items in a worker thread (the generator loads on first use), then calls
    ``on_done(item_ids)`` (e.g. to re-index their lexical text). One batch at a time."""

    def __init__(self, index: ItemIndex, store: EnrichmentStore, load: Callable[[], TextGenerator | None],
                 cfg: EnrichConfig = EnrichConfig(), on_done: Callable[[list[str]], None] | None = None):
        self.index, self.store, self.cfg, self.on_done = index, store, cfg, on_done
        self._load, self._generator = load, None
        self._queue: queue.Queue[list[str]] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="enrich", daemon=True)
        self._thread.start()
        index.subscribe(self._on_update)

    def _on_update(self, op: str, labels) -> None:
        if op == "upsert":
            self._queue.put([self.index.table.records[int(lb)]["item_id"] for lb in labels])

    def wait(self) -> None:
        """Block until every queued item is enriched."""
        self._queue.join()

    def _run(self) -> None:
        while True:
            ids = self._queue.get()
            try:
                if self._generator is None:
                    self._generator = self._load()
                enrich(self.index, self.store, self._generator, self.cfg, item_ids=ids, progress=False)
                if self.on_done is not None:
                    self.on_done(ids)
            except (OSError, RuntimeError, ValueError):
                log.exception("enriching %d upserted items failed; they are searched without it", len(ids))
            finally:
                self._queue.task_done()


def grounded(query: str, known: Callable[[str], bool]) -> bool:
    """A generated query is kept when most of its words are the catalog's (``known(token)``)."""
    tokens = tokenize(query)
    return bool(tokens) and sum(map(known, tokens)) >= 0.6 * len(tokens)


def enrich_index_dir(index_dir: str | Path, cfg: EnrichConfig = EnrichConfig(), *, limit: int | None = None,
                     cache_dir: str | Path | None = DEFAULT_CACHE, model_cache: str | Path | None = DEFAULT_CACHE,
                     progress: bool = True) -> dict:
    """``semrec enrich``: enrich the index in ``index_dir`` (the first ``limit`` live items, or all)
    and save ``enrichment.json`` beside it. A server reads it at start. ``cache_dir``: the reply
    cache; ``model_cache``: where a GGUF model is kept de-quantised."""
    from .lexical import LexicalIndex
    from .llm import load_generator

    index = ItemIndex.load(index_dir)
    store = EnrichmentStore.load(index_dir, cache_dir=cache_dir)
    lexical = LexicalIndex(index, background_rebuild=False)
    known = lambda t: lexical.doc_freq(t) > 0  # noqa: E731
    ids = list(index.table.label_of)[:limit]
    generator = load_generator(cfg.model, cache_dir=model_cache)
    stats = enrich(index, store, generator, cfg, item_ids=ids, progress=progress,
                   ground=lambda qs: [q for q in qs if grounded(q, known)])
    store.save(index_dir)
    return stats
