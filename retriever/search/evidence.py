"""Why each search hit is there: the evidence the engine returns with a result list."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .expansion import Expansion
from .lexical import LexicalIndex
from .tokens import tokenize


@dataclass
class Evidence:
    """Why an item is in the results: the 1-based ranks where each retriever found it (None: not
    in its top ``depth``), the query / expansion terms its text holds, the hooks' scores, and its
    share of the search log's clicks after this query or near ones (over the most-clicked
    candidate's; None: the log holds no click on it)."""

    lexical_rank: int | None
    dense_rank: int | None
    matched_terms: list[str]
    rerank_score: float | None = None
    personal_score: float | None = None
    search_clicks: float | None = None

    @property
    def retrievers(self) -> list[str]:
        return [name for name, r in (("lexical", self.lexical_rank), ("dense", self.dense_rank)) if r is not None]


def search_evidence(lexical: LexicalIndex, labels: np.ndarray, lex, dense, weights: dict[str, float],
                    tokens: list[str], expansion: list[Expansion], personal: np.ndarray | None,
                    reranked: np.ndarray | None, clicked: dict[int, float]) -> list[Evidence]:
    """One :class:`Evidence` per hit of ``labels`` int64 ``(k,)`` (stops at -1 padding). ``lex`` /
    ``dense``: the runs ``(labels, scores)`` best first; ``weights``: the BM25 query's tokens;
    ``personal`` / ``reranked``: float ``(k,)`` hook scores or None; ``clicked``: label -> click weight."""
    lex_rank = {int(lb): r for r, lb in enumerate(lex[0], start=1) if lb >= 0}
    dense_rank = {int(lb): r for r, lb in enumerate(dense[0], start=1) if lb >= 0}
    shown = {}  # BM25 token -> the term shown for it: the query's own word, else its expansion
    for e in reversed(expansion):
        for tok in tokenize(e.term):
            shown[tok] = e.term
    shown.update((t, t) for t in tokens)
    most = max([w for lb, w in clicked.items() if lb in lex_rank or lb in dense_rank], default=0.0)
    out = []
    for j, lb in enumerate(labels):
        if lb < 0:
            break
        doc = set(lexical.tokens_of(int(lb)))
        matched = list(dict.fromkeys(shown.get(t, t) for t in weights if t in doc))
        clicks = clicked.get(int(lb), 0.0)
        out.append(Evidence(lex_rank.get(int(lb)), dense_rank.get(int(lb)), matched,
                            None if reranked is None else float(reranked[j]),
                            None if personal is None else float(personal[j]),
                            round(clicks / most, 4) if clicks > 0 and most > 0 else None))
    return out
