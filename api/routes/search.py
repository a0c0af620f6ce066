"""The search box: hybrid search with evidence and expansions, and completions.

Settings (environment, prefix ``SEMREC_SEARCH_``): ``LLM`` (generator name, e.g. "smollm2"; empty =
no LLM), ``LLM_BUDGET_S``, ``EXPAND`` (default of the ``expand`` parameter), ``LLM_DEFAULT`` (ask
the LLM when a request does not say), ``VOCAB_CACHE_DIR``, ``SUGGEST_MIN_USERS`` (k-anonymity of
suggested past queries).
"""

from __future__ import annotations

import threading
import unicodedata
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from indexer.embed import Embedder
from indexer.store import ItemIndex
from ranker.fusion import FusionWeights
from ranker.model import Reranker
from ranker.serve import query_rerank_hook
from retriever.eventstore import pseudonymize
from retriever.search.box import SearchBox
from retriever.search.engine import SearchConfig

from ..deps import ComponentsDep, FiltersDep, KDep, scored, unprocessable
from ..models import ScoredItem
from ..security import shopper_access

router = APIRouter()

MAX_QUERY = 500


class SearchSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SEMREC_SEARCH_", env_file=".env", extra="ignore")

    llm: str = Field("", description="LLM for query expansion ('smollm2', a hub id or a folder); empty = none")
    llm_budget_s: float = Field(0.5, gt=0, le=30, description="longest a search waits for the LLM")
    llm_default: bool = Field(False, description="use the LLM when a request does not say (it is slow on CPU)")
    expand: bool = Field(False, description="catalog + feedback expansion when a request does not say")
    vocab_cache_dir: Path | None = Field(None, description="where embedded vocabularies are cached; "
                                                           "default: <index_dir>/search-cache")
    suggest_min_users: int = Field(3, ge=2, le=1000, description="distinct shoppers (or client addresses) a past "
                                                                 "query needs before /suggest offers it")


def build_search(index: ItemIndex, embedder: Embedder, cache_dir: Path | None = None,
                 settings: SearchSettings | None = None, reranker: Reranker | None = None,
                 weights: FusionWeights = FusionWeights()) -> SearchBox:
    """The search box for ``index`` under ``settings`` (read from the environment by default);
    ``reranker`` reorders the fused top ``SearchConfig.rerank_depth`` by (query, item) score."""
    s = settings or SearchSettings()
    config = SearchConfig(expand=s.expand, llm=s.llm_default, llm_budget_s=s.llm_budget_s)
    box = SearchBox.build(index, embedder, config=config, llm=s.llm or None,
                          vocab_cache_dir=s.vocab_cache_dir or cache_dir, min_query_users=s.suggest_min_users)
    if reranker is not None:
        box.engine.rerank = query_rerank_hook(reranker, index, weights)
    return box


_lazy = threading.Lock()


def search_box(c) -> SearchBox:
    """The components' search box, built on first use when start-up did not build one (tests, demo)."""
    if c.search is None:
        with _lazy:
            if c.search is None:
                c.search = build_search(c.index, c.embedder, reranker=c.reranker if c.settings.rerank.search else None,
                                        weights=c.rerank_config.weights)
    return c.search


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
    box = search_box(c)
    user_vector = box.user_vector(user_id)
    res = box.engine.search(q, k, filters, expand=expand, use_llm=(expand is not False) and llm,
                            user_vector=user_vector)
    items = scored(c.index, res.labels, res.scores)
    hits = [SearchHit(**item.model_dump(), evidence=EvidenceOut(retrievers=ev.retrievers, **vars(ev)))
            for item, ev in zip(items, res.evidence)]
    if hits:
        box.queries.add(q, query_source(request, user_id, c.settings.pseudonym_key))
    return SearchResponse(query=q, results=hits,
                          expansion=[ExpansionOut(term=e.term, source=e.source) for e in res.expansion],
                          llm=res.llm_status, personalised=user_vector is not None,
                          took_ms=round(sum(res.timings_ms.values()), 3))


@router.get("/suggest", response_model=SuggestResponse)
def suggest(c: ComponentsDep, q: Annotated[str, Query(min_length=1, max_length=MAX_QUERY, json_schema_extra=TEXT_RULE,
                                                 description="typed prefix")],
            k: Annotated[int, Query(ge=1, le=20, description="number of completions")] = 8) -> SuggestResponse:
    check_text(q, "q")
    box = search_box(c)
    return SuggestResponse(query=q, suggestions=[SuggestionOut(text=s.text, kind=s.kind)
                                                 for s in box.suggester.suggest(q, k)])
