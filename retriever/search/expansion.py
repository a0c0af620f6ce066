"""Query expansion grounded in the catalog: every added term is a word, brand or category the
catalog itself uses, so expansion can only steer toward things the shop sells.

Sources (recorded on each :class:`Expansion`):

- ``"catalog"``: vocabulary terms nearest to the query in embedding space (the vocabulary is
  embedded once and cached, in memory and optionally on disk);
- ``"feedback"``: pseudo-relevance feedback, terms weighted by tf-idf in the top first-pass results
  (RM3 in spirit, Lavrenko & Croft 2001);
- ``"llm"``: terms a language model proposes (:mod:`retriever.search.llm`), through the same grounding filter;
- ``"typo"``: spelling corrections (:mod:`retriever.search.typo`).

The grounding filter (:meth:`CatalogVocabulary.ground`) is the one gate: a candidate is kept when
its tokens equal a vocabulary term's tokens; a phrase that is not a term is split and its words
that are terms are kept; anything else is dropped.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from indexer.embed import Embedder
from indexer.files import replacing
from indexer.store import ItemIndex

from .lexical import LexicalIndex
from .tokens import tokenize

log = logging.getLogger(__name__)

MAX_WORDS = 20_000  # most frequent catalog words embedded for "catalog" expansion
MIN_DF = 2          # a word must be in this many items to be a vocabulary word (drops typos, ids)
MIN_WORD_LEN = 3


@dataclass(frozen=True)
class Expansion:
    """One added term: ``term`` (display form), its ``source`` and its ``weight`` in BM25 (0-1]."""

    term: str
    source: str
    weight: float


def _is_word(token: str) -> bool:
    return len(token) >= MIN_WORD_LEN and token.isalpha() and token.isascii()


class CatalogVocabulary:
    """The catalog's terms: words (BM25 tokens), brands and category names, with unit vectors.

    ``terms[i]`` is the display form, ``kinds[i]`` one of "word", "brand", "category",
    ``tokens[i]`` its BM25 tokens, ``vectors`` float32 ``(n_terms, dim)`` (embedded terms only:
    rows ``embedded[i]``; the rest are zero rows and never returned by :meth:`nearest`).
    """

    def __init__(self, terms: list[str], kinds: list[str], df: Counter, vectors: np.ndarray):
        self.terms, self.kinds, self.df = terms, kinds, df
        self.tokens = [tuple(tokenize(t)) for t in terms]
        self.vectors = vectors
        self.embedded = np.linalg.norm(vectors, axis=1) > 0
        self._by_tokens: dict[tuple[str, ...], int] = {}
        for i, toks in enumerate(self.tokens):
            if toks:
                self._by_tokens.setdefault(toks, i)
        self.words = frozenset(t for t, n in df.items() if n > 0)

    def __len__(self) -> int:
        return len(self.terms)

    @classmethod
    def build(cls, index: ItemIndex, lexical: LexicalIndex, embedder: Embedder, *,
              max_words: int = MAX_WORDS, min_df: int = MIN_DF, cache_dir: str | Path | None = None,
              ) -> CatalogVocabulary:
        """Collect the terms of the live catalog and embed them (cached by content in ``cache_dir``)."""
        terms, kinds, df = catalog_terms(index, lexical, max_words=max_words, min_df=min_df)
        return cls(terms, kinds, df, embed_cached(embedder, terms, cache_dir))

    # ---- grounding -----------------------------------------------------------------------------
    def lookup(self, text: str) -> int | None:
        """Index of the term whose tokens equal ``text``'s tokens, else None."""
        return self._by_tokens.get(tuple(tokenize(text)))

    def ground(self, candidates: Iterable[str]) -> list[str]:
        """Keep only catalog terms (display form, first-seen order, no repeats); see module docstring."""
        out: dict[str, None] = {}
        for cand in candidates:
            i = self.lookup(cand)
            if i is not None:
                out[self.terms[i]] = None
                continue
            for tok in tokenize(cand):
                if tok in self.words and (_is_word(tok) or not tok.isascii()):
                    out[tok] = None
        return list(out)

    # ---- "catalog" expansion ---------------------------------------------------------------------
    def nearest(self, query_vec: np.ndarray, n: int, min_cos: float) -> list[tuple[int, float]]:
        """Up to ``n`` embedded terms with cosine >= ``min_cos`` to unit ``query_vec (dim,)``, best first."""
        if not self.embedded.any() or n <= 0:
            return []
        sims = self.vectors @ np.asarray(query_vec, dtype=np.float32)
        sims[~self.embedded] = -np.inf
        top = np.argsort(-sims, kind="stable")[: 4 * n]
        return [(int(i), float(sims[i])) for i in top if sims[i] >= min_cos][:n]


def catalog_terms(index: ItemIndex, lexical: LexicalIndex, *, max_words: int = MAX_WORDS, min_df: int = MIN_DF
                  ) -> tuple[list[str], list[str], Counter]:
    """``(terms, kinds, df)`` of the live catalog: every brand and category name, and the
    ``max_words`` most frequent BM25 words (Latin letters only, 3+ long) in at least ``min_df`` items.
    ``df`` is the BM25 index's ``{token: document frequency}``."""
    with index.lock:
        live = [index.table.records[i] for i in np.flatnonzero(index.table.alive.view)]
    df = lexical.vocabulary()
    brands = Counter(r["brand"].strip() for r in live if r["brand"].strip())
    cats = Counter(c.strip() for r in live for c in set(r["categories"]) if c.strip())
    words = [w for w, n in df.most_common() if n >= min_df and _is_word(w)][:max_words]
    terms = sorted(brands) + sorted(cats) + sorted(words)
    kinds = ["brand"] * len(brands) + ["category"] * len(cats) + ["word"] * len(words)
    return terms, kinds, df


def catalog_expansion(vocab: CatalogVocabulary, query_vec: np.ndarray, query_tokens: Sequence[str], *,
                      n: int, min_cos: float, weight: float) -> list[Expansion]:
    """The ``n`` vocabulary terms closest to the query that add a token it lacks.

    Weight = ``weight * cosine``: a closer term counts more. Terms whose tokens are all in the
    query (or its stems) add nothing and are skipped.
    """
    have = set(query_tokens)
    out = []
    for i, cos in vocab.nearest(query_vec, 4 * n, min_cos):
        if set(vocab.tokens[i]) <= have:
            continue
        out.append(Expansion(vocab.terms[i], "catalog", round(weight * cos, 4)))
        have |= set(vocab.tokens[i])
        if len(out) == n:
            break
    return out


def feedback_terms(doc_tokens: Sequence[Sequence[str]], doc_weights: np.ndarray, lexical: LexicalIndex,
                   query_tokens: Sequence[str], *, n: int, weight: float, min_df: int = MIN_DF
                   ) -> list[tuple[str, float]]:
    """Pseudo-relevance feedback: ``n`` terms best describing the top documents, with BM25 weights.

    ``doc_tokens``: tokens of the feedback documents; ``doc_weights`` float ``(n_docs,)``: how much
    each document counts (e.g. its fused score, normalised). Term score =
    ``sum_d w_d * tf(t, d) / |d| * idf(t)``; the best gets ``weight``, others proportionally less.
    Query tokens, and terms in fewer than ``min_df`` items, are never returned.
    """
    have = set(query_tokens)
    score: Counter = Counter()
    for toks, w in zip(doc_tokens, doc_weights):
        if not toks:
            continue
        for term, tf in Counter(toks).items():
            if term not in have:
                score[term] += float(w) * tf / len(toks)
    scored = []
    for term, s in score.items():
        if (_is_word(term) or not term.isascii()) and lexical.doc_freq(term) >= min_df:
            scored.append((s * lexical.idf(term), term))
    scored.sort(key=lambda x: (-x[0], x[1]))
    top = scored[:n]
    if not top:
        return []
    best = top[0][0]
    return [(term, round(weight * s / best, 4)) for s, term in top]


def embed_cached(embedder: Embedder, terms: list[str], cache_dir: str | Path | None) -> np.ndarray:
    """``embedder.encode(terms)`` (float32 ``(n, dim)``), read from ``cache_dir`` when the same model
    embedded the same list before (file named by a hash of both)."""
    if not terms:
        return np.zeros((0, embedder.dim), dtype=np.float32)
    digest = hashlib.sha256("\n".join([embedder.cache_key, *terms]).encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"vocab-{digest}.npy" if cache_dir is not None else None
    if path is not None and path.exists():
        vectors = np.load(path)
        if vectors.shape == (len(terms), embedder.dim):
            return vectors
        log.warning("ignoring vocabulary cache %s: shape %s, expected %s", path, vectors.shape,
                    (len(terms), embedder.dim))
    vectors = embedder.encode(terms, batch_size=256)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with replacing(path) as tmp, open(tmp, "wb") as fh:  # each worker writes it on its first start
            np.save(fh, vectors)
    return vectors
