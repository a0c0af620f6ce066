"""Training and validation lists for the reranker, from interaction sequences.

A *group* is one decision the shopper made: a context text and a list of candidate items whose
column 0 is the item actually chosen next (the positive) and the rest are items that were on
offer but not chosen (negatives). The reranker is trained listwise on groups and validated on
them, so the same function serves a public dataset (its ``reviews`` in time order) and, later,
the live event log: both arrive as per-user item-index sequences, oldest first.

Context text (see :func:`context_text`): an optional search query and onboarding interests, then
the shopper's most recent ``history_items`` items, newest first, each item cut to
``words_per_item`` words. The cut is deliberate: the newest items say most about the next one, so
each gets a fixed share of the model's token window instead of the oldest items crowding it out.

Only decisions whose chosen item the text retriever did offer (it is in the text top
``retrieval_depth``; the co-visitation top list when there are no item vectors) become groups
(``require_retrieved``). The reranker reads text only and reorders retrieved candidates; trained
also on positives the text retriever missed, it learned the opposite of what it needs: those
positives are by construction less text-similar than the text-retrieved negatives, so it learned
to penalise similarity. On Beauty (validation NDCG@10 within the candidate lists, start 0.35):
no filter fell to 0.20, a filter on "text or co-visitation top-50" still fell to 0.23 (most
co-visitation-only positives are text-dissimilar too).

Negatives per group (``PairConfig``), never any item of the shopper's own sequence:
    * text-retrieval negatives: drawn uniformly from the top ``retrieval_depth`` items of the
      zero-shot text retriever (recency-decayed mean of the history's item vectors), the very
      list the reranker reorders at serving time, so training sees the serving distribution;
    * co-visitation negatives: from the top ``retrieval_depth`` of a first-order Markov
      (co-visitation) model fitted on the training sequences;
    * random negatives: uniform over the catalog, so the model still knows off-topic is bad.
Slots a source cannot fill (e.g. no item vectors) are filled with random items.

Time split: training groups come only from ``Split.fit`` (each user's sequence without its last
two items); validation uses each user's second-last item, test the last (leave-one-out, as in
:mod:`evaluation.protocol`). Every draw is seeded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from indexer.results import top_k
from retriever.collaborative import Markov, exclude_items, text_scores

from .texts import context_text, history_context, item_text, item_texts

Array = np.ndarray


# ----------------------------------------------------------------------------- groups
@dataclass(frozen=True)
class PairConfig:
    history_items: int = 4         # most recent items in the context text
    words_per_item: int = 8        # title words per history item in the context
    n_text_negatives: int = 4      # from the text retriever's top ``retrieval_depth``
    n_covisit_negatives: int = 1   # from the co-visitation (Markov) top ``retrieval_depth``
    n_random_negatives: int = 0    # uniform over the catalog
    retrieval_depth: int = 50      # = the number of candidates reranked at serving time
    examples_per_user: int = 2     # training targets per user: the last ones of its fit sequence
    users: int | None = 8000       # users sampled (seeded) to draw groups from; None = every user
    require_retrieved: bool = True  # keep only groups whose positive the text retriever offered
    max_groups: int | None = 2000  # groups kept (seeded sample) after that filter; None = all
    text_decay: float = 0.8        # recency decay of the text retriever's user vector
    seed: int = 0

    @property
    def group_size(self) -> int:
        return 1 + self.n_text_negatives + self.n_covisit_negatives + self.n_random_negatives


@dataclass(frozen=True)
class Groups:
    """Lists for listwise training / validation.

    contexts   list[str], len n          context text per group
    items      (n, m) int64              item indexes; column ``positive`` holds the chosen item
    positive   (n,) int64                column of the chosen item (0 for training groups)
    users      (n,) int64                index of the sequence each group came from
    """

    contexts: list[str]
    items: Array
    positive: Array
    users: Array

    def __len__(self) -> int:
        return len(self.contexts)

    def subset(self, rows: Array) -> Groups:
        rows = np.asarray(rows, dtype=np.int64)
        return Groups([self.contexts[r] for r in rows], self.items[rows], self.positive[rows], self.users[rows])


def _sample_from(ranked: Array, forbidden: set[int], n: int, rng: np.random.Generator) -> list[int]:
    pool = [int(i) for i in ranked if i >= 0 and int(i) not in forbidden]
    if n <= 0 or not pool:
        return []
    return [pool[j] for j in rng.choice(len(pool), size=min(n, len(pool)), replace=False)]


def training_groups(
    sequences: Sequence[Array],
    short_texts: Sequence[str],
    item_vectors: Array | None,
    cfg: PairConfig = PairConfig(),
    *,
    covisit: Markov | None = None,
    batch_size: int = 1024,
) -> Groups:
    """Training groups from fit sequences (int64 item indexes, oldest first).

    For each sampled user, the last ``examples_per_user`` positions t >= 1 of its sequence give a
    group: context = ``seq[:t]``, positive = ``seq[t]``, negatives as in the module docstring.
    ``short_texts[i]``: item i's context text (already cut to ``words_per_item`` words).
    ``item_vectors``: (n_items, d) float32 unit rows, or None (then no text negatives).
    ``covisit``: a fitted Markov model; fitted on ``sequences`` when None (window 10, decay 0.8,
    symmetric: the harness's Markov, whose top list the union candidates use).
    """
    rng = np.random.default_rng([cfg.seed, 11])
    n_items = len(short_texts)
    eligible = np.flatnonzero([len(s) >= 2 for s in sequences])
    if cfg.users is not None and cfg.users < len(eligible):
        eligible = np.sort(rng.choice(eligible, size=cfg.users, replace=False))
    histories, positives, users = [], [], []
    for u in eligible:
        seq = sequences[u]
        for t in range(max(1, len(seq) - cfg.examples_per_user), len(seq)):
            histories.append(seq[:t])
            positives.append(int(seq[t]))
            users.append(int(u))
    if covisit is None and (cfg.n_covisit_negatives or cfg.require_retrieved):
        covisit = Markov(window=10, decay=0.8, symmetric=True).fit(list(sequences), n_items)
    depth = cfg.retrieval_depth
    text_top = _ranked(histories, depth, batch_size,
                       None if item_vectors is None or not cfg.n_text_negatives
                       else lambda h: text_scores(h, item_vectors, cfg.text_decay))
    covisit_top = _ranked(histories, depth, batch_size, covisit.score if covisit is not None else None)
    rows, contexts, kept = [], [], []
    for g, (hist, pos, u) in enumerate(zip(histories, positives, users)):
        if cfg.require_retrieved and pos not in (text_top if text_top is not None else covisit_top)[g]:
            continue
        kept.append(u)
        forbidden = set(sequences[u].tolist())
        negs: list[int] = []
        for ranked, n in ((text_top, cfg.n_text_negatives), (covisit_top, cfg.n_covisit_negatives)):
            if ranked is not None:
                negs += _sample_from(ranked[g], forbidden | set(negs), n, rng)
        while len(negs) < cfg.group_size - 1:
            j = int(rng.integers(n_items))
            if j not in forbidden and j not in negs:
                negs.append(j)
        rows.append([pos, *negs])
        contexts.append(history_context(hist, short_texts, cfg.history_items))
    items = np.asarray(rows, dtype=np.int64).reshape(len(rows), cfg.group_size)
    groups = Groups(contexts, items, np.zeros(len(rows), dtype=np.int64), np.asarray(kept, dtype=np.int64))
    if cfg.max_groups is not None and len(groups) > cfg.max_groups:
        groups = groups.subset(np.sort(rng.choice(len(groups), size=cfg.max_groups, replace=False)))
    return groups


def _ranked(histories: list[Array], k: int, batch_size: int, score_fn) -> Array | None:
    """Top-k item indexes per history under ``score_fn`` (history excluded), or None without one."""
    if score_fn is None:
        return None
    parts = []
    for start in range(0, len(histories), batch_size):
        batch = histories[start:start + batch_size]
        parts.append(top_k(exclude_items(np.asarray(score_fn(batch), dtype=np.float32), batch), k)[0])
    return np.concatenate(parts) if parts else np.zeros((0, k), dtype=np.int64)


def candidate_groups(histories: Sequence[Array], targets: Array, candidates: Array, short_texts: Sequence[str],
                     history_items: int, users: Array | None = None) -> tuple[Groups, Array]:
    """Validation / test groups: each history's retrieved candidate list, kept only if it holds the target.

    candidates: (n, m) int64 item indexes in retrieval order (-1 padding). Returns the groups (whose
    ``positive`` is the target's column) and the (n_kept,) int64 rows of the input they came from.
    Lists without the target score 0 in any order, so they are left out of reranker validation.
    """
    targets = np.asarray(targets, dtype=np.int64)
    hit = candidates == targets[:, None]
    rows = np.flatnonzero(hit.any(axis=1))
    users = np.arange(len(targets)) if users is None else np.asarray(users)
    contexts = [history_context(histories[r], short_texts, history_items) for r in rows]
    return Groups(contexts, candidates[rows], hit[rows].argmax(axis=1).astype(np.int64), users[rows]), rows


def popularity_counts(sequences: Sequence[Array], n_items: int) -> Array:
    """(n_items,) int64 interaction counts over ``sequences`` (the popularity prior's input)."""
    return np.bincount(np.concatenate(sequences), minlength=n_items).astype(np.int64) if len(sequences) \
        else np.zeros(n_items, dtype=np.int64)


def texts_by_index(items: pd.DataFrame, item_ids: Sequence[str], cfg: PairConfig) -> tuple[list[str], list[str]]:
    """(full texts for candidates, short texts for contexts), both aligned with ``item_ids``."""
    return item_texts(items, item_ids), item_texts(items, item_ids, max_words=cfg.words_per_item)


__all__ = [
    "Groups", "PairConfig", "candidate_groups", "context_text", "history_context",
    "item_text", "item_texts", "popularity_counts", "texts_by_index", "training_groups",
]
