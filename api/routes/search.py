"""The search box: hybrid search with evidence and expansions, and completions. Settings: the
``search`` group of ``api.settings.Settings`` (``SEMREC_SEARCH__LLM`` ...)."""

from __future__ import annotations

import threading
import unicodedata
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from ranker import pipeline
from retriever.eventstore import pseudonymize
from retriever.search import SearchBox

from ..deps import Components, ComponentsDep, FiltersDep, KDep, scored, search_box_for, unprocessable
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


class SearchHit(ScoredItem):
    score: float = Field(description="fused relevance: 0.5 x min-max BM25 + 0.5 x min-max cosine over the "
                                     "candidates by default (higher is better); the reranker's score when one "
                                     "is wired")
    relevance: float | None = Field(description="calibrated probability that this is the product the query "
                                                "asks for (comparable across queries, unlike score); hits under "
                                                "the min_relevance setting are left out; null: pinned by a rule")
    evidence: EvidenceOut


class ExpansionOut(BaseModel):
    term: str
    source: Literal["catalog", "feedback", "llm", "typo"]


class SearchResponse(BaseModel):
    query: str
    results: list[SearchHit]
    expansion: list[ExpansionOut] = Field(description="terms added to the query, each grounded in the catalog")
    llm: Literal["off", "unavailable", "cached", "generated", "timeout", "busy", "error"] = Field(
        description="what LLM expansion did for this request")
    personalised: bool
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
    res, personalised = pipeline.search(c.svc, c.config(), q, k, filters, user_id=user_id, expand=expand, llm=llm)
    items = scored(c.svc.index, res.labels, res.scores, res.rules)
    relevance = [None if r != r else round(float(r), 4) for r in res.relevance]  # NaN: a pinned item
    hits = [SearchHit(**item.model_dump(), relevance=rel, evidence=EvidenceOut(retrievers=ev.retrievers, **vars(ev)))
            for item, rel, ev in zip(items, relevance, res.evidence)]
    if hits:
        box.queries.add(q, query_source(request, user_id, c.settings.pseudonym_key))
    return SearchResponse(query=q, results=hits,
                          expansion=[ExpansionOut(term=e.term, source=e.source) for e in res.expansion],
                          llm=res.llm_status, personalised=personalised,
                          took_ms=round(sum(res.timings_ms.values()), 3))


@router.get("/suggest", response_model=SuggestResponse)
def suggest(c: ComponentsDep, q: Annotated[str, Query(min_length=1, max_length=MAX_QUERY, json_schema_extra=TEXT_RULE,
                                                 description="typed prefix")],
            k: Annotated[int, Query(ge=1, le=20, description="number of completions")] = 8) -> SuggestResponse:
    check_text(q, "q")
    box = search_box(c)
    return SuggestResponse(query=q, suggestions=[SuggestionOut(text=s.text, kind=s.kind)
                                                 for s in box.suggester.suggest(q, k)])
