"""EASE (Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019): the closed-form
item-item model

    P = (X'X + lambda I)^-1,   B = I - P diag(1 / diag(P)),   diag(B) = 0,   scores = X_u B

over the binary user-item matrix X of the fit sequences, twice: ``EASE``, the harness baseline
(dense B; its grid reuses one eigendecomposition of X'X = Q L Q', P = Q diag(1 / (L + lambda)) Q'),
and ``EASEModel``, a candidate source of the served pipeline: B pruned to each item's strongest
``neighbours`` (a sparse matrix of a few MB instead of n^2 floats), fitted by ``semrec train`` on
the event log over at most ``max_items`` of the most interacted items (the inverse is O(n^3): four
lambdas took 179 s for Beauty's 12k items on the shared 2-core box, under load). A shopper's
scores are the sum of their history items' rows, so a new event changes them at once; an item added
since the fit is not an EASE candidate (the text sources answer for it).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Self

import numpy as np
import scipy.linalg
import scipy.sparse as sp

from indexer.store import ItemIndex

from .collaborative import Recommender, _user_items
from .itemrows import ItemRows, scores_at, top_rows

Array = np.ndarray


def ease_weights(gram_eig: tuple[Array, Array], lam: float) -> Array:
    """(n, n) float32 B from the eigendecomposition ``(values, vectors)`` of X'X, for ``lam``."""
    values, q = gram_eig
    p = (q * (1.0 / (values + lam))) @ q.T
    b = -p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    return b.astype(np.float32)


def gram_eigen(sequences: Sequence[Array], n_items: int) -> tuple[Array, Array]:
    """Eigendecomposition of X'X (float64) for the binary matrix of ``sequences``."""
    x = _user_items(sequences, n_items)
    gram = (x.T @ x).toarray().astype(np.float64)
    return np.linalg.eigh(gram)


class EASE(Recommender):
    """EASE with regularisation ``lam``. ``fit`` computes the eigendecomposition unless given one."""

    name = "ease"

    def __init__(self, lam: float = 500.0):
        self.lam = float(lam)
        self.weights: Array | None = None

    def fit(self, sequences: Sequence[Array], n_items: int, gram_eig: tuple[Array, Array] | None = None) -> Self:
        self._fit_popularity(sequences, n_items)
        self.weights = ease_weights(gram_eig if gram_eig is not None else gram_eigen(sequences, n_items), self.lam)
        return self

    def score(self, histories: Sequence[Array]) -> Array:
        x = _user_items(histories, self.n_items)
        s = np.asarray(x @ self.weights, dtype=np.float32)
        return self._empty_to_popularity(s, histories)


@dataclass(frozen=True)
class EASEConfig:
    lam: float = 50.0        # the EASE baseline's best on Beauty validation (grid 10-4000)
    neighbours: int = 200    # kept per item row
    max_items: int = 20_000  # the most interacted items the fit covers (memory ~3 n^2 float64 in the fit)


def fit_ease_rows(sequences: Sequence[Array], n_items: int,
                  cfg: EASEConfig = EASEConfig()) -> tuple[Array, sp.csr_matrix]:
    """(items (r,) int64 covered, B (r, r) float32 CSR pruned to ``cfg.neighbours`` per row) from
    per-user item indexes in ``[0, n_items)``."""
    items, gram = covered_gram(sequences, n_items, cfg.max_items)
    return items, ease_rows(gram, cfg.lam, cfg.neighbours)


def covered_gram(sequences: Sequence[Array], n_items: int, max_items: int) -> tuple[Array, Array]:
    """(items (r,) int64: the at most ``max_items`` most interacted, ascending; X'X over them (r, r) float64)."""
    x = _user_items(sequences, n_items)
    counts = np.asarray(x.sum(axis=0)).ravel()
    items = np.flatnonzero(counts > 0)
    if len(items) > max_items:
        items = np.sort(items[np.argsort(-counts[items], kind="stable")[:max_items]])
    x = x[:, items]
    return items, (x.T @ x).toarray().astype(np.float64)


def ease_rows(gram: Array, lam: float, neighbours: int) -> sp.csr_matrix:
    """B for ``lam`` from X'X ``gram`` (r, r), pruned to ``neighbours`` per row; ``gram`` is kept."""
    a = gram.copy()
    a[np.diag_indices_from(a)] += lam
    p = scipy.linalg.inv(a, overwrite_a=True, check_finite=False)
    p /= -np.diag(p)[None, :]
    np.fill_diagonal(p, 0.0)
    return prune_rows(p, neighbours)


def prune_rows(b: Array, keep: int) -> sp.csr_matrix:
    """float32 CSR of dense ``b`` (r, r) keeping each row's ``keep`` largest positive entries."""
    r = b.shape[0]
    keep = min(keep, max(r - 1, 1))
    cols = np.argpartition(-b, keep - 1, axis=1)[:, :keep] if r > 1 else np.zeros((r, 0), np.int64)
    vals = np.take_along_axis(b, cols, axis=1)
    ok = vals > 0
    rows = np.repeat(np.arange(r), ok.sum(axis=1))
    return sp.csr_matrix((vals[ok].astype(np.float32), (rows, cols[ok])), shape=(r, r))


class EASEModel:
    """State: pruned EASE weights over ``item_ids`` (r,) str; ``weights`` (r, r) float32 CSR."""

    def __init__(self, item_ids: Sequence[str], weights: sp.csr_matrix, cfg: EASEConfig = EASEConfig(),
                 info: dict | None = None):
        self.rows = ItemRows(item_ids)
        self.weights = sp.csr_matrix(weights, dtype=np.float32)
        if self.weights.shape != (len(self.rows), len(self.rows)):
            raise ValueError(f"{len(self.rows)} item ids for EASE weights of shape {self.weights.shape}")
        self.cfg, self.info = cfg, dict(info or {})

    def user_scores(self, histories: Sequence[Sequence[str]]) -> list[Array | None]:
        """Per history (item ids), the (r,) float32 scores ``x_u B`` over the model's rows; None
        when the model knows none of its items."""
        rows = [self.rows.rows_of(h) for h in histories]
        lengths = np.array([len(r) for r in rows], dtype=np.int64)
        if not lengths.sum():
            return [None] * len(histories)
        x = sp.csr_matrix((np.ones(lengths.sum(), np.float32), np.concatenate(rows),
                           np.concatenate([[0], np.cumsum(lengths)])), shape=(len(rows), len(self.rows)))
        scores = (x @ self.weights).toarray()
        return [scores[i] if lengths[i] else None for i in range(len(rows))]

    def candidates(self, index: ItemIndex, user: Array, n: int, allowed: Array) -> tuple[Array, Array]:
        """The ``n`` best allowed items with a positive score -> (labels, scores), best first."""
        return top_rows(self.rows, index, np.where(user > 0, user, -np.inf), n, allowed)

    def scores_of(self, index: ItemIndex, user: Array, labels: Array) -> Array:
        """float32 (m,) score of each label; NaN for items the model does not know."""
        return scores_at(self.rows, index, lambda r: user[r], labels)

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        sp.save_npz(folder / "weights.npz", self.weights)
        (folder / "ease.json").write_text(json.dumps({"config": asdict(self.cfg), "item_ids": self.rows.item_ids,
                                                      "info": self.info}))

    @classmethod
    def load(cls, folder: str | Path) -> EASEModel:
        folder = Path(folder)
        meta = json.loads((folder / "ease.json").read_text())
        return cls(meta["item_ids"], sp.load_npz(folder / "weights.npz"), EASEConfig(**meta["config"]), meta["info"])
