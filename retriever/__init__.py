"""Candidate retrieval: similar items, search, (later) user-history and collaborative candidates."""

from .search import dense_search
from .similar import similar_items

__all__ = ["dense_search", "similar_items"]
