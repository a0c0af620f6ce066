"""The search box: hybrid lexical + dense search, expansion, typo tolerance, suggestions.

Entry point: :class:`SearchBox` (``box.py``), built once per index; it holds the
:class:`SearchEngine` (``engine.py``: the pipeline of one query), the suggester and the query log.
Parts: ``lexical`` (BM25 kept in step with the index), ``hybrid`` (fusion of runs), ``expansion``
(catalog and feedback terms), ``llm`` (generative expansion), ``typo`` (spelling), ``suggest``.
"""

from .box import SearchBox
from .engine import Evidence, SearchConfig, SearchEngine, SearchResult

__all__ = ["Evidence", "SearchBox", "SearchConfig", "SearchEngine", "SearchResult"]
