"""Request and response bodies. Limits live here, so a bad request is a 422 that names the field."""

from __future__ import annotations

import math
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

ShortText = Annotated[str, Field(max_length=200)]


class ReviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str = Field("", max_length=500)
    text: str = Field(..., min_length=1, max_length=5000)
    rating: float | None = Field(None, ge=1, le=5)
    helpful_votes: int = Field(0, ge=0, le=10_000_000)


class ItemIn(BaseModel):
    """An item to upsert. Its text is embedded at once, so it is searchable when the call returns."""

    model_config = ConfigDict(extra="forbid")
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
                                    description="review texts blended into the item vector")

    @field_validator("title")
    @classmethod
    def _title_has_text(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("title must contain non-blank text")
        return v


def _none_if_nan(x: float | None) -> float | None:
    return None if x is None or math.isnan(x) else float(x)


class ItemOut(BaseModel):
    item_id: str
    title: str
    description: str
    brand: str
    categories: list[str]
    price: float | None
    attributes: dict[str, str]
    in_stock: bool
    created_at: float | None

    @classmethod
    def from_record(cls, rec: dict) -> ItemOut:
        return cls(**{**rec, "price": _none_if_nan(rec["price"]),
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
