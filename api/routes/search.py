"""The search box: hybrid search with evidence and expansions, and completions. Settings: the
``search`` group of ``api.settings.Settings`` (``SEMREC_SEARCH__LLM`` ...)."""

from __future__ import annotations

import threading
import time
import unicodedata
import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from ranker import pipeline
from retriever.eventstore import pseudonymize
from retriever.search import SearchBox
from retriever.search.expand import elasticsearch_query
from retriever.search.parse import ParsedQuery
from retriever.search.suggest import key as query_key

from ..deps import Components, ComponentsDep, FiltersDep, KDep, scored, search_box_for, unprocessable
from ..experiments import assign
from ..models import ScoredItem
from ..security import check_shopper, shopper_access

router = APIRouter()

MAX_QUERY = 500
_lazy = threading.Lock()


def search_box(c: Components) -> SearchBox:
    """The services' search box, built on first use when start-up did not build one (tests, demo)."""
    if c.svc.search is None:
        with _lazy:
            if c.svc.search is None:
                c.svc.search = search_box_for(c.settings, c.svc)
    return c.svc.search


def query_source(request: Request, user_id: str | None, secret: str) -> str:
    """Who searched, for the query log's distinct count: the keyed hash of ``user_id`` when the
    caller opens that shopper (their token, a backend key, or keys off), else of the client address
    (a claimed user id proves nothing). The user's hash equals the event log's key, so erasure finds it."""
    if user_id is not None and shopper_access(request, user_id):
        return pseudonymize(user_id, secret)
    return pseudonymize(f"client:{request.client.host if request.client else 'unknown'}", secret)


def check_text(value: str, field: str) -> str:
    """422 unless ``value`` is printable text with a non-blank character (names ``field``)."""
    if not value.strip():
        raise unprocessable("query", field, f"{field} must contain at least one non-blank character")
    for ch in value:
        cat = unicodedata.category(ch)
        if cat in ("Cc", "Cs") or ch == "\ufffd" or (0xFDD0 <= ord(ch) <= 0xFDEF) or ord(ch) & 0xFFFE == 0xFFFE:
            # U+FFFD is what undecodable (binary) bytes in the URL become.
            raise unprocessable("query", field, f"{field} must be printable text: it holds control or binary "
                                                f"character U+{ord(ch):04X}")
    return value


# The rule check_text enforces, stated in the schema too: printable text with a non-blank character
# (no control characters, no U+FFFD from undecodable bytes, no Unicode noncharacters).
_BAD = r"\x00-\x1f\x7f-\x9f\ufdd0-\ufdef\ufffd-\uffff" + "".join(
    rf"\U000{p:x}fffe-\U000{p:x}ffff" if p < 16 else r"\U0010fffe-\U0010ffff" for p in range(1, 17))
TEXT_PATTERN = rf"^[^{_BAD}]*[^\s{_BAD}][^{_BAD}]*$"
# In the schema only: check_text enforces it with a message that says what to fix.
TEXT_RULE = {"pattern": TEXT_PATTERN}
QueryText = Annotated[str, Query(min_length=1, max_length=MAX_QUERY, json_schema_extra=TEXT_RULE,
                                 description="what the shopper typed")]


class EvidenceOut(BaseModel):
    retrievers: list[Literal["lexical", "dense"]] = Field(description="retrievers whose top candidates held it")
    lexical_rank: int | None = Field(description="1-based BM25 rank; null: not in BM25's candidates")
    dense_rank: int | None = Field(description="1-based embedding rank; null: not in its candidates")
    matched_terms: list[str] = Field(description="query words and expansion terms found in its text")
    rerank_score: float | None = Field(None, description="the reranking stage's score (cross-encoder fused with "
                                                             "the retrieval score); null: no reranker ran")
    personal_score: float | None = Field(None, description="cosine to the shopper's closest interest")
    search_clicks: float | None = Field(None, description="its share of the search log's clicks after this query "
                                                          "or near ones, over the most-clicked candidate's; null: "
                                                          "no logged click on it")


class SearchHit(ScoredItem):
    score: float = Field(description="fused relevance: 0.5 x min-max BM25 + 0.5 x min-max cosine over the "
                                     "candidates by default (higher is better); the reranker's score when one "
                                     "is wired; the learned ranking's, min-max over the candidates, when "
                                     "SEMREC_SEARCH__RANKING_DIR loads one")
    relevance: float | None = Field(description="calibrated probability that this is the product the query "
                                                "asks for (comparable across queries, unlike score); hits under "
                                                "the min_relevance setting are left out; null: pinned by a rule, or "
                                                "the index's model has no calibration (MiniLM's is built in; a "
                                                "model folder carries its own relevance.json)")
    evidence: EvidenceOut


class ExpansionOut(BaseModel):
    term: str
    source: Literal["catalog", "feedback", "llm", "typo"]


class SpanOut(BaseModel):
    kind: Literal["price", "brand", "brand boost", "category", "category boost", "size", "not"]
    text: str = Field(description="what the query said (or the catalog name it matched)")


class ParseOut(BaseModel):
    """What the query was understood to ask for. Hard constraints filter the results; boosts
    lift matching items."""

    text: str = Field(description="the words that were searched")
    min_price: float | None = Field(description="hard: no result costs less")
    max_price: float | None = Field(description="hard: no result costs more")
    brand: str | None = Field(description="hard: every result is of this brand")
    category: str | None = Field(description="hard: every result is in this category")
    exclude_brands: list[str] = Field(description="hard: no result is of these brands")
    exclude_words: list[str] = Field(description="hard: no result title holds these words")
    boost_brands: list[str]
    boost_categories: list[str]
    sizes: list[str] = Field(description="sizes / quantities asked for (a boost), e.g. '500 ml'")
    spans: list[SpanOut]

    @classmethod
    def of(cls, p: ParsedQuery) -> ParseOut:
        return cls(text=p.text, min_price=p.min_price, max_price=p.max_price, brand=p.brand, category=p.category,
                   exclude_brands=list(p.exclude_brands), exclude_words=list(p.exclude_words),
                   boost_brands=list(p.boost_brands), boost_categories=list(p.boost_categories),
                   sizes=[f"{q.value:g} {q.unit}" if not q.unit.startswith("size:") else q.unit for q in p.sizes],
                   spans=[SpanOut(kind=k, text=t) for k, t in p.spans])


class SearchResponse(BaseModel):
    request_id: str = Field(description="send it back with the clicks and carts that follow from this list")
    query: str
    parsed: ParseOut | None = Field(description="the query's understood constraints; null when parsing is off")
    variant: str | None = Field(description="the shopper's A/B variant (with user_id); null for anonymous searches")
    results: list[SearchHit]
    expansion: list[ExpansionOut] = Field(description="terms added to the query, each grounded in the catalog")
    llm: Literal["off", "unavailable", "cached", "generated", "timeout", "busy", "error"] = Field(
        description="what LLM expansion did for this request")
    personalised: bool
    took_ms: float


class TermOut(BaseModel):
    term: str
    source: Literal["typo", "catalog", "co-click", "llm"] = Field(
        description="typo: a spelling fix; catalog: words of the nearest catalog items or vocabulary; co-click: "
                    "words of items shoppers acted on after this query (search log); llm: the generator's, grounded")
    weight: float = Field(description="boost relative to the query's own words (1.0)")


class HintOut(BaseModel):
    kind: Literal["brand", "category"]
    name: str
    weight: float = Field(description="1.0 when the query names it, else its share of the nearest items")


class CorrectionOut(BaseModel):
    word: str
    replacements: list[str]


class ExpandResponse(BaseModel):
    query: str
    terms: list[TermOut] = Field(description="terms to add as weighted should-clauses; all grounded in the catalog")
    corrections: list[CorrectionOut]
    hints: list[HintOut]
    parsed: ParseOut
    llm: Literal["off", "unavailable", "cached", "generated", "timeout", "busy", "error"]
    cached: bool = Field(description="answered from the expansion cache")
    elasticsearch: dict = Field(description="a ready Elasticsearch bool query over `fields`")
    took_ms: float


class SuggestionOut(BaseModel):
    text: str
    kind: Literal["query", "brand", "category", "title"]


class SuggestResponse(BaseModel):
    query: str
    suggestions: list[SuggestionOut]


@router.get("/search", response_model=SearchResponse)
def search(c: ComponentsDep, filters: FiltersDep, k: KDep, q: QueryText, request: Request,
           user_id: Annotated[str | None, Query(min_length=1, max_length=200, json_schema_extra=TEXT_RULE,
                                                description="personalise for this shopper")] = None,
           expand: Annotated[bool | None, Query(description="add catalog and feedback terms "
                                                            "(default: the service setting)")] = None,
           llm: Annotated[bool | None, Query(description="also ask the LLM for terms "
                                                         "(default: the service setting)")] = None,
           ) -> SearchResponse:
    check_text(q, "q")
    if user_id is not None:
        check_text(user_id, "user_id")
        check_shopper(request, user_id)  # results shaped by a shopper's interests are their personal data
    box = search_box(c)
    variant = assign(user_id, c.settings.variants, c.settings.ab_salt) if user_id is not None else None
    res, personalised = pipeline.search(c.svc, c.config(variant), q, k, filters, user_id=user_id, expand=expand,
                                        llm=llm)
    items = scored(c.svc.index, res.labels, res.scores, res.rules)
    relevance = [None if r != r else round(float(r), 4) for r in res.relevance]  # NaN: a pinned item
    hits = [SearchHit(**item.model_dump(), relevance=rel, evidence=EvidenceOut(retrievers=ev.retrievers, **vars(ev)))
            for item, rel, ev in zip(items, relevance, res.evidence)]
    request_id = uuid.uuid4().hex
    store = c.svc.events
    if hits and store is not None:
        store.log_search(request_id, user_id, q, query_key(q), [h.item_id for h in hits],
                         None if variant is None else variant.name)
        box.sync_queries(store)
    if hits:  # counted here at once; the search log's counts (every worker's shoppers) are merged every 30 s
        box.queries.add(q, query_source(request, user_id, c.settings.pseudonym_key))
    parsed = None if res.parsed is None else ParseOut.of(res.parsed)
    return SearchResponse(request_id=request_id, query=q, parsed=parsed,
                          variant=None if variant is None else variant.name, results=hits,
                          expansion=[ExpansionOut(term=e.term, source=e.source) for e in res.expansion],
                          llm=res.llm_status, personalised=personalised,
                          took_ms=round(sum(res.timings_ms.values()), 3))


@router.get("/expand", response_model=ExpandResponse)
def expand(c: ComponentsDep, q: QueryText,
           llm: Annotated[bool, Query(description="also ask the LLM (waits at most the service's LLM budget; "
                                                  "a later call gets the answer from the cache)")] = False,
           fields: Annotated[str, Query(max_length=500, pattern=r"^[\w.^]+(,[\w.^]+)*$",
                                        description="comma-separated fields of your index for the "
                                                    "Elasticsearch query")] = "title^2,description",
           ) -> ExpandResponse:
    """Query expansion for a shop's own lexical engine: weighted terms with their provenance."""
    check_text(q, "q")
    search_box(c)
    started = time.perf_counter()
    res = pipeline.expand(c.svc, c.config(), q, llm=llm)
    return ExpandResponse(query=q, terms=[TermOut(term=e.term, source=e.source, weight=e.weight) for e in res.terms],
                          corrections=[CorrectionOut(word=w, replacements=r) for w, r in res.corrections.items()],
                          hints=[HintOut(kind=h.kind, name=h.name, weight=h.weight) for h in res.hints],
                          parsed=ParseOut.of(res.parsed), llm=res.llm_status, cached=res.cached,
                          elasticsearch=elasticsearch_query(res, fields.split(",")),
                          took_ms=round((time.perf_counter() - started) * 1000, 3))


@router.get("/suggest", response_model=SuggestResponse)
def suggest(c: ComponentsDep, q: Annotated[str, Query(min_length=1, max_length=MAX_QUERY, json_schema_extra=TEXT_RULE,
                                                 description="typed prefix")],
            k: Annotated[int, Query(ge=1, le=20, description="number of completions")] = 8) -> SuggestResponse:
    check_text(q, "q")
    box = search_box(c)
    return SuggestResponse(query=q, suggestions=[SuggestionOut(text=s.text, kind=s.kind)
                                                 for s in box.suggester.suggest(q, k)])
