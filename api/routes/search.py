"""The search box."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from retriever.search import dense_search

from ..deps import ComponentsDep, FiltersDep, KDep, scored, unprocessable
from ..models import SearchOut

router = APIRouter()


@router.get("/search", response_model=SearchOut)
def search(c: ComponentsDep, filters: FiltersDep, k: KDep,
           q: Annotated[str, Query(min_length=1, max_length=500, description="what the shopper typed")]
           ) -> SearchOut:
    if not q.strip() or any(ord(ch) < 32 and ch not in "\t\n\r" for ch in q):
        raise unprocessable("query", "q", "q must be printable text with at least one non-blank character")
    labels, scores = dense_search(c.index, c.embedder, [q], k, filters)
    return SearchOut(query=q, results=scored(c.index, labels[0], scores[0]))
