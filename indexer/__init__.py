"""Catalog ingestion: schema, loaders, cleaning, documents, embedders, the vector index."""

from .build import EmbedConfig, build_index
from .embed import DEFAULT_MODEL, Embedder, load_embedder
from .schema import Catalog, CatalogFormatError
from .store import IndexMismatchError, ItemIndex
from .table import Filters

__all__ = ["Catalog", "CatalogFormatError", "DEFAULT_MODEL", "EmbedConfig", "Embedder", "Filters",
           "IndexMismatchError", "ItemIndex", "build_index", "load_embedder"]
