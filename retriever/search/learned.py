"""The learned search ranking: a LightGBM LambdaRank model over each fused candidate's retrieval
evidence, in place of the fixed weighted fusion (``SearchConfig.learned``).

Features of one candidate (:data:`NAMES`, float32): the fixed fusion's score; BM25 (raw and over
the query's best candidate) and 1 / its lexical rank; cosine (raw, minus the query's best candidate,
minus the catalog's best) and 1 / its dense rank; the IDF-weighted share of the query's tokens in the
item's whole text and in its title; the share of the search log's clicks for the query (over the
most-clicked item); the query's token count. Fitted by ``python -m evaluation.search_ltr`` on
(query, item) pairs: review headlines with their review held out of the item, or the search log.

Not features, measured (``evaluation.search_ltr``, 2026-12-02): an item's pooled-review count (log)
took the largest gain but taught the model that review-rich items are the targets, which holds for
the training headlines (drawn after the test ones, so from items with many reviews) and not for a
catalog-wide draw: on Subscription Boxes test MRR@10 0.1050 against the fusion's 0.1287. The
reviews' match to the query (``reviews.review_match``) cost about 100 ms a query there.
"""

from __future__ import annotations

import numpy as np

from indexer.store import ItemIndex

from ..lambdarank import BoosterModel
from .lexical import LexicalIndex
from .relevance import relevance_features
from .tokens import tokenize

NAMES = ("fused", "bm25", "bm25_rel", "lexical_rr", "cosine", "cosine_rel", "cosine_gap", "dense_rr",
         "coverage", "title_coverage", "clicks", "query_terms")
FUSED = NAMES.index("fused")
RANKING_FILE, META_FILE = "search_ranking.txt", "search_ranking.json"

Run = tuple[np.ndarray, np.ndarray]


def ranking_features(index: ItemIndex, lexical: LexicalIndex, tokens: list[str], fixes: dict[str, list[str]],
                     labels: np.ndarray, fused: np.ndarray, lex: Run, dense: Run, query_vec: np.ndarray,
                     clicked: dict[int, float]) -> np.ndarray:
    """float32 ``(len(labels), len(NAMES))`` for live ``labels`` int64 ``(m,)`` with their fused scores
    ``(m,)``; ``lex`` / ``dense``: the two runs ``(labels, scores)`` best first (complete scores);
    ``clicked``: label -> the search log's click weight for the query."""
    m = len(labels)
    x = np.zeros((m, len(NAMES)), dtype=np.float32)
    if not m:
        return x
    x[:, FUSED] = fused
    for run, score_col, rr_col in ((lex, "bm25", "lexical_rr"), (dense, None, "dense_rr")):
        pos = {int(lb): r for r, lb in enumerate(run[0]) if lb >= 0}
        at = np.array([pos.get(int(lb), -1) for lb in labels])
        x[:, NAMES.index(rr_col)] = 1.0 / np.where(at >= 0, at + 1.0, np.inf)  # 0 where the run lacks it
        if score_col:
            x[:, NAMES.index(score_col)] = np.where(at >= 0, np.asarray(run[1])[np.maximum(at, 0)], 0.0)
    bm25 = x[:, NAMES.index("bm25")]
    x[:, NAMES.index("bm25_rel")] = bm25 / bm25.max() if bm25.max() > 0 else 0.0
    rel = relevance_features(index, lexical, tokens, fixes, labels, query_vec)  # cosine, coverage, gap
    x[:, NAMES.index("cosine")], x[:, NAMES.index("coverage")], x[:, NAMES.index("cosine_gap")] = rel.T
    x[:, NAMES.index("cosine_rel")] = rel[:, 0] - rel[:, 0].max()
    x[:, NAMES.index("title_coverage")] = _title_coverage(index, lexical, tokens, labels)
    c = np.array([clicked.get(int(lb), 0.0) for lb in labels], dtype=np.float64)
    x[:, NAMES.index("clicks")] = c / c.max() if c.max() > 0 else 0.0
    x[:, NAMES.index("query_terms")] = len(set(tokens))
    return x


def _title_coverage(index: ItemIndex, lexical: LexicalIndex, tokens: list[str], labels: np.ndarray) -> np.ndarray:
    """IDF-weighted share of the query's distinct ``tokens`` in each item's title."""
    terms = list(dict.fromkeys(tokens))
    if not terms:
        return np.zeros(len(labels))
    idf = np.array([lexical.idf(t) for t in terms])
    with index.lock:
        titles = [set(tokenize(index.table.records[int(lb)]["title"])) for lb in labels]
    held = np.array([[t in title for t in terms] for title in titles], dtype=np.float64)
    return held @ idf / idf.sum()


class SearchRanking(BoosterModel):
    """State: a LightGBM booster over :data:`NAMES` (checked at load) and what it was fitted on."""

    NAMES = NAMES
    MODEL_FILE, META_FILE = RANKING_FILE, META_FILE
    REFIT = "python -m evaluation.search_ltr"

    def order(self, labels: np.ndarray, features: np.ndarray) -> np.ndarray:
        """The engine's call: :meth:`score` of the candidates ``labels`` (which a stand-in that
        records training rows keeps)."""
        return self.score(features)
