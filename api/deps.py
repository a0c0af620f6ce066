"""What routes share: the loaded components, injected with Depends, and common parameters."""

from __future__ import annotations

import logging
import pathlib
from dataclasses import dataclass
from typing import Annotated

import numpy as np
from fastapi import Depends, HTTPException, Path, Query, Request
from starlette.convertors import Convertor, register_url_convertor

from indexer.store import ItemIndex
from indexer.table import Filters
from ranker.artifacts import Models, ModelsLoadError, load_models, newest_version
from ranker.model import Reranker
from ranker.pipeline import PipelineConfig
from ranker.rules import RuleBook
from ranker.rulestore import RuleStore, open_rule_store
from ranker.services import Services, build_search, open_events, open_index, set_threads
from retriever.search.enrich import EnrichConfig

from .experiments import Variant
from .models import ItemOut, ScoredItem
from .settings import Settings

log = logging.getLogger("semrec.models")


@dataclass
class Components:
    """The settings and the services (``ranker.services``) every request runs on, loaded once, and
    the store of merchandising rules (``svc.rules`` holds the ones in force)."""

    settings: Settings
    svc: Services
    rule_store: RuleStore | None = None
    skipped_models: pathlib.Path | None = None  # a newer version that failed to load
    own_reranker: Reranker | None = None  # SEMREC_RANKER_DIR's, serving versions that bring none

    def config(self, variant: Variant | None = None) -> PipelineConfig:
        return self.settings.pipeline_config(variant)

    def refresh_models(self) -> bool:
        """Load a version ``semrec train`` published since (run from cron, or ``semrec train --every``)
        and swap it in; requests keep being served by the old one meanwhile. True if swapped."""
        root = models_root(self.settings)
        if root is None:
            return False
        try:
            path = newest_version(root)
        except ModelsLoadError:  # the versions were removed: keep serving the loaded one
            return False
        if path in (self.svc.models_path, self.skipped_models):
            return False
        try:
            models = load_models(path)
        except ModelsLoadError as e:  # keep the version in service; said once, not every tick
            log.error("models not loaded: %s", e)
            self.skipped_models = path
            return False
        install_models(self.svc, models, self.own_reranker)
        log.info("loaded models", extra={"fields": {"version": str(path)}})
        return True

    def open_rules(self) -> bool:
        """Open the rule store beside the event log, when there is a log and no store yet. True if opened."""
        if self.rule_store is not None or self.svc.events is None:
            return False
        where = getattr(self.svc.events, "url", None) or getattr(self.svc.events, "path", None)  # the log's own
        self.rule_store = open_rule_store(where or self.settings.db_url or self.settings.db_path)
        self.svc.rules = RuleBook()
        self.refresh_rules()
        return True

    def refresh_rules(self) -> None:
        """Re-read the rules when the store's version moved (another worker, or this one, edited them)."""
        if self.rule_store is None:
            return
        version = self.rule_store.version()
        if self.svc.rules is None or version != self.svc.rules.version:
            rules = self.rule_store.rules()
            if self.svc.rules is None:
                self.svc.rules = RuleBook()
            self.svc.rules.replace(rules, version)


def load_components(settings: Settings) -> Components:
    """Open the index, its embedder, the event log, the reranker and the search box; a missing index,
    a model mismatch or a bad reranker fails here, at start-up, not per request."""
    set_threads(settings.search_threads, settings.torch_threads)
    index, embedder = open_index(settings.index_dir, settings.model)
    # A missing or incompatible reranker is a RerankerLoadError here, before the server takes requests.
    reranker = Reranker(settings.ranker_dir, variant=settings.ranker_variant) if settings.ranker_dir else None
    open_catalog(settings, index)
    if reranker is not None:  # split: item states for every item now, kept in step with the catalog
        reranker.attach(index)
    store, state = open_events(settings.db_url or settings.db_path, settings.pseudonym_key, settings.half_lives())
    svc = Services(index, embedder, store, state, reranker=reranker)
    attach_models(settings, svc, reranker)
    svc.search = search_box_for(settings, svc)
    c = Components(settings, svc, own_reranker=reranker)
    c.open_rules()
    return c


def models_root(settings: Settings) -> pathlib.Path | None:
    """Where the learned parts are published: ``settings.models_dir``, else ``<index_dir>/models``
    when it exists (None: served without)."""
    root = settings.models_dir or settings.index_dir / "models"
    return root if settings.models_dir is not None or root.exists() else None


def attach_models(settings: Settings, svc: Services, own_reranker: Reranker | None = None) -> Models | None:
    """The learned parts (MF, EASE, history encoder, learned ranking and its reranker; ``semrec
    train``) of the newest version under :func:`models_root`, put into ``svc``; None when there is no root."""
    root = models_root(settings)
    if root is None:
        return None
    models = load_models(root)  # ModelsLoadError at start-up when unusable
    install_models(svc, models, own_reranker)
    return models


def install_models(svc: Services, models: Models, own_reranker: Reranker | None = None) -> None:
    """Swap ``models`` into ``svc`` (the encoder embeds the catalog and a split reranker computes its
    item states first, so a request sees the old version or the new one, each complete); replaced
    parts stop following the index. A version without a reranker serves ``own_reranker``
    (``SEMREC_RANKER_DIR``): a ranking reads the logits of the reranker it was fitted with only."""
    encoder = models.encoder.attach(svc.index) if models.encoder is not None else None
    reranker = models.reranker or own_reranker
    if models.reranker is not None:
        models.reranker.attach(svc.index)
    old_encoder, old_reranker = svc.encoder, svc.reranker
    svc.mf, svc.ease, svc.encoder, svc.ranking = models.mf, models.ease, encoder, models.ranking
    svc.reranker = reranker
    svc.models_path = models.path
    if old_encoder is not None:
        old_encoder.detach()
    if old_reranker is not None and old_reranker is not reranker and old_reranker is not own_reranker:
        old_reranker.detach()


def open_catalog(settings: Settings, index: ItemIndex) -> None:
    """Vectors from the configured store; catalog changes through PostgreSQL when ``db_url`` is set
    (every worker, on any machine, sees them), else through the index's wal.jsonl."""
    if settings.vector_store != "faiss":
        from indexer.milvus import attach

        attach(index, settings.vector_store)
    if settings.db_url:
        from indexer.feed import open_feed

        index.use_feed(open_feed(settings.db_url))
    else:
        index.open_log()


def search_box_for(settings: Settings, svc: Services):
    """The search box the settings describe, over ``svc``'s index (reranked when asked)."""
    s = settings.search
    box = build_search(svc.index, svc.embedder, s.config(), llm=s.llm,
                       vocab_cache_dir=s.vocab_cache_dir or settings.index_dir / "search-cache",
                       reranker=svc.reranker if settings.rerank.search else None,
                       weights=settings.rerank.config().weights, min_query_users=s.suggest_min_users,
                       index_dir=settings.index_dir,
                       enrich=EnrichConfig(model=s.enrich_model) if s.enrich_upserts else None,
                       ranking_dir=s.ranking_dir)
    if svc.state is not None:  # an erased shopper leaves the query log in every worker (see routes.users)
        svc.state.on_erasure.append(box.forget)
    return box


def get_components(request: Request) -> Components:
    return request.app.state.components


ComponentsDep = Annotated[Components, Depends(get_components)]
ItemId = Annotated[str, Path(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$",
                             description="the shop's item id (may contain '/')")]


class ItemIdConvertor(Convertor):
    """``{item_id:item}`` in a route path: any text, slashes included, except that it does not end
    in ``/similar``, ``/also-bought`` or ``/bought-together`` (those paths belong to the item's sub-routes)."""

    regex = r".+?(?<!/similar)(?<!/also-bought)(?<!/bought-together)"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("item", ItemIdConvertor())


def unprocessable(location: str, field: str, msg: str) -> HTTPException:
    """A 422 shaped like FastAPI's own validation errors, naming the field."""
    return HTTPException(422, detail=[{"loc": [location, field], "type": "value_error", "msg": msg}])


def get_filters(
    category: Annotated[str | None, Query(max_length=200, description="any level of the category path")] = None,
    brand: Annotated[str | None, Query(max_length=200)] = None,
    min_price: Annotated[float | None, Query(ge=0, le=1e9)] = None,
    max_price: Annotated[float | None, Query(ge=0, le=1e9)] = None,
    in_stock: Annotated[bool | None, Query()] = None,
) -> Filters:
    if min_price is not None and max_price is not None and min_price > max_price:
        raise unprocessable("query", "max_price", f"max_price ({max_price}) is below min_price ({min_price})")
    return Filters(category=category, brand=brand, min_price=min_price, max_price=max_price,
                   in_stock=in_stock)


FiltersDep = Annotated[Filters, Depends(get_filters)]


MAX_K = 100  # part of the API contract (in the OpenAPI schema), not a per-deployment setting


def get_k(k: Annotated[int, Query(ge=1, le=MAX_K, description="number of results")] = 10) -> int:
    return k


KDep = Annotated[int, Depends(get_k)]


def scored(index: ItemIndex, labels: np.ndarray, scores: np.ndarray,
           rules: list[list[int]] | None = None) -> list[ScoredItem]:
    """One result row (labels, scores) as response items, with the merchandising rules applied to
    each live slot when given; -1 padding is dropped."""
    out = []
    for label, score in zip(labels, scores):
        if label < 0:
            continue
        rec = ItemOut.from_record(index.table.records[label])
        out.append(ScoredItem(item_id=rec.item_id, title=rec.title, brand=rec.brand,
                              categories=rec.categories, price=rec.price, in_stock=rec.in_stock,
                              score=round(float(score), 6),
                              rules=rules[len(out)] if rules and len(out) < len(rules) else []))
    return out
