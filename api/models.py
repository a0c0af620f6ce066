"""Request and response bodies. Limits live here, so a bad request is a 422 that names the field."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

ShortText = Annotated[str, Field(max_length=200)]
# Request bodies take JSON as typed: false is not 0, 0 is not false, "5" is not 5 (a mistake to name,
# not to guess); unknown fields are an error too.
STRICT = ConfigDict(extra="forbid", strict=True)


class ReviewIn(BaseModel):
    model_config = STRICT
    title: str = Field("", max_length=500)
    text: str = Field(..., min_length=1, max_length=5000)
    rating: float | None = Field(None, ge=1, le=5)
    helpful_votes: int = Field(0, ge=0, le=10_000_000)


class ItemIn(BaseModel):
    """An item to upsert. Its text is embedded at once, so it is searchable when the call returns."""

    model_config = STRICT
    title: str = Field(..., min_length=1, max_length=500)
    description: str = Field("", max_length=20_000)
    brand: str = Field("", max_length=200)
    categories: list[ShortText] = Field(default_factory=list, max_length=20)
    price: float | None = Field(None, ge=0, le=1e9)
    attributes: dict[ShortText, Annotated[str, Field(max_length=1000)]] = Field(default_factory=dict,
                                                                               max_length=50)
    in_stock: bool = True
    created_at: float | None = Field(None, ge=0, le=1e11, description="unix seconds")
    reviews: list[ReviewIn] = Field(default_factory=list, max_length=50,
                                    description="new reviews of the item: each is embedded once and pooled with the "
                                                "reviews it already has (a text sent again counts once)")

    @field_validator("title")
    @classmethod
    def _title_has_text(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("title must contain non-blank text")
        return v


def _none_if_nan(x: float | None) -> float | None:
    return None if x is None or math.isnan(x) else float(x)


class AspectOut(BaseModel):
    term: str = Field(description="what the reviews talk about")
    score: float = Field(description="mean sentiment of the sentences naming it, -1 to 1")
    mentions: int = Field(description="review sentences naming it")
    sentence: str = Field(description="the most telling sentence (a pro's is always a positive one)")


class ItemOut(BaseModel):
    item_id: str
    title: str
    description: str
    brand: str
    categories: list[str]
    price: float | None
    attributes: dict[str, str]
    in_stock: bool | None = Field(description="null when the catalog has no stock data and the item was "
                                              "never marked out of stock")
    created_at: float | None
    pros: list[AspectOut] = Field(default_factory=list, description="what reviews praise (review aspects)")
    cons: list[AspectOut] = Field(default_factory=list, description="what reviews complain about")
    shopper_queries: list[str] = Field(default_factory=list, description="synthetic shopper queries from "
                                                                         "enrichment (`semrec enrich`)")

    @classmethod
    def from_record(cls, rec: dict, stock_known: bool = True) -> ItemOut:
        """``stock_known`` false: the catalog's source has no stock field, so True only means unknown."""
        in_stock = rec["in_stock"] if stock_known or not rec["in_stock"] else None
        return cls(**{**rec, "in_stock": in_stock, "price": _none_if_nan(rec["price"]),
                      "created_at": _none_if_nan(rec["created_at"]),
                      "attributes": {str(k): str(v) for k, v in rec["attributes"].items()}})


class ScoredItem(BaseModel):
    item_id: str
    title: str
    brand: str
    categories: list[str]
    price: float | None
    in_stock: bool
    score: float = Field(description="cosine similarity to the query item or text, in [-1, 1]")
    rules: list[int] = Field(default_factory=list, description="ids of the merchandising rules that pinned, "
                                                               "boosted or buried it here (GET /rules)")


class SimilarOut(BaseModel):
    item_id: str
    results: list[ScoredItem]


class SearchOut(BaseModel):
    query: str
    results: list[ScoredItem]


class UpsertOut(BaseModel):
    item_id: str
    created: bool = Field(description="false when an existing item was replaced")


class HealthOut(BaseModel):
    status: str
    items: int
    model: str
    dim: int
    index_kind: str


# ---- events and personalisation ---------------------------------------------------------------
IdText = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")]


class EventIn(BaseModel):
    """One interaction. Checked one by one: a bad event is rejected with its reason, the rest stored."""

    model_config = STRICT
    event_id: IdText = Field(description="idempotency key: an event id seen before is ignored")
    user_id: IdText
    item_id: IdText
    type: Literal["view", "click", "add_to_cart", "purchase", "rating"]
    value: float | None = Field(None, ge=-1e9, le=1e9, description="stars (1-5) for a rating; optional otherwise")
    timestamp: float | None = Field(None, ge=0, le=1e11, description="unix seconds; default: now")
    request_id: str | None = Field(None, max_length=100, description="the recommendation this came from")

    @model_validator(mode="after")
    def _rating_has_stars(self) -> EventIn:
        if self.type == "rating" and (self.value is None or not 1 <= self.value <= 5):
            raise ValueError("a rating needs value between 1 and 5")
        return self


class EventsIn(BaseModel):
    events: list[Any] = Field(min_length=1, description="events, each as EventIn; checked one by one")


class Rejected(BaseModel):
    index: int
    event_id: str | None
    reason: str


class EventsOut(BaseModel):
    stored: int
    duplicates: int
    rejected: list[Rejected]


class OnboardingIn(BaseModel):
    model_config = STRICT
    interests: str = Field("", max_length=1000, description='free text, e.g. "vegan skincare for dry skin"')
    categories: list[ShortText] = Field(default_factory=list, max_length=20)
    liked_items: list[IdText] = Field(default_factory=list, max_length=50)


class SessionIn(BaseModel):
    """An anonymous session: context inline, nothing stored."""

    model_config = STRICT
    recent_items: list[IdText] = Field(default_factory=list, max_length=50, description="oldest first")
    text: str = Field("", max_length=1000)
    k: int = Field(10, ge=1, le=100)
    category: str | None = Field(None, max_length=200)
    brand: str | None = Field(None, max_length=200)
    min_price: float | None = Field(None, ge=0, le=1e9)
    max_price: float | None = Field(None, ge=0, le=1e9)
    in_stock: bool | None = None


class RecommendedItem(ScoredItem):
    score: float = Field(description="the list's final score: the fused reranker + retrieval + popularity "
                                     "score when a reranker runs, else the candidate fusion score")
    sources: list[str] = Field(description="which candidate sources proposed it, the one that contributed most "
                                           "first: dense, covisit, popular, trending, mf, encoder, new, catalog; "
                                           "pinned: a merchandising rule put it here")
    reason: str = Field("", description="why it is here: the evidence that put it there (the interest or history "
                                        "item behind the strongest source) or an honest generic sentence")
    reason_kind: str = Field("personal", description="interest, history, covisit, popular, trending, new, catalog, "
                                                     "personal (picked for you) or featured (pinned by the shop)")


class RecommendationsOut(BaseModel):
    request_id: str = Field(description="send it back with events that follow from this list")
    variant: str
    stages: list[str] = Field(description="the pipeline stages that shaped the list, in order: cold (a popular "
                                          "list spread over categories), fusion (candidate sources fused), "
                                          "rerank (cross-encoder), mmr (reordered for diversity: scores need "
                                          "not be descending), explore (last places for new items), rules "
                                          "(merchandising rules moved items: see each item's rules)")
    results: list[RecommendedItem]


class ErrorOut(BaseModel):
    detail: str = Field(description="what went wrong and what to fix")


# Error answers any route may give; documented so clients (and the schema fuzz test) know them.
ERRORS: dict[int | str, dict] = {
    400: {"model": ErrorOut, "description": "the body is not valid JSON (or not UTF-8)"},
    401: {"model": ErrorOut, "description": "missing or unknown API key"},
    403: {"model": ErrorOut, "description": "the key's role is too small for this route"},
    404: {"model": ErrorOut, "description": "unknown item or resource"},
    413: {"model": ErrorOut, "description": "request body too large"},
    429: {"model": ErrorOut, "description": "rate limit exceeded; see Retry-After"},
    503: {"model": ErrorOut, "description": "a component this route needs is not configured"},
}
