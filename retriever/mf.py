"""Matrix factorisation as a candidate source of the served pipeline.

Item factors come from implicit's ALS (Hu, Koren & Volinsky 2008) fitted on the event log: every
shopper's items, each with confidence ``1 + alpha * r`` where ``r`` is the strongest event on it
(``TYPE_WEIGHTS`` / 6: a purchase 1, a view 1/6). A shopper is folded in per request from their
latest events by the exact ALS user solve against the fixed item factors
(:func:`least_squares_fold_in`), so a new event changes the MF candidates at once; the factors
themselves are refitted by ``semrec train`` (a new model version, which a running server swaps in
from its follower thread), never by a request.

An item the factors do not know (added since the last fit) is not an MF candidate: the text
sources answer for it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from indexer.store import ItemIndex

from .itemrows import ItemRows, scores_at, top_rows
from .profiles import TYPE_WEIGHTS

Array = np.ndarray
STRONGEST = max(TYPE_WEIGHTS.values())


@dataclass(frozen=True)
class MFConfig:
    # the ALS baseline's best on Beauty validation (evaluation.tuning's grid: factors 64-512, reg 0.01-10)
    factors: int = 256
    regularization: float = 1.0
    alpha: float = 10.0
    iterations: int = 15
    seed: int = 0


def least_squares_fold_in(item_factors: Array, histories: Sequence[Array], alpha: float = 1.0, reg: float = 0.1,
                          gram: Array | None = None, strengths: Sequence[Array] | None = None) -> Array:
    """User vectors for fixed item factors by the implicit-ALS user solve (Hu et al. 2008).

    u = argmin sum_j c_j (p_j - u.v_j)^2 + reg |u|^2 over ALL items j, with p_j = 1 and
    c_j = 1 + alpha * r_j for the history's items (``r_j`` from ``strengths``, default 1), p_j = 0
    and c_j = 1 otherwise; i.e. u = (V'V + V_h' diag(alpha r) V_h + reg I)^-1 V_h'(1 + alpha r).
    item_factors: (n_items, f); histories: item indexes (repeats count once, the strongest r kept);
    ``gram`` = V'V (f, f) if already computed. Returns (len(histories), f) float32; empty -> 0.
    """
    v = np.asarray(item_factors, dtype=np.float64)
    f = v.shape[1]
    gram = v.T @ v if gram is None else gram
    rows_r = []
    for n, h in enumerate(histories):
        r = np.ones(len(h)) if strengths is None else np.asarray(strengths[n], dtype=np.float64)
        best: dict[int, float] = {}
        for item, x in zip(np.asarray(h, dtype=np.int64).tolist(), r.tolist()):
            best[item] = max(best.get(item, 0.0), x)
        rows_r.append((np.fromiter(best, np.int64, len(best)), np.fromiter(best.values(), np.float64, len(best))))
    out = np.zeros((len(histories), f), dtype=np.float32)
    order = np.argsort([len(items) for items, _ in rows_r], kind="stable")
    for start in range(0, len(order), 256):  # similar lengths together: little padding
        rows = order[start:start + 256]
        width = max(len(rows_r[r][0]) for r in rows)
        if width == 0:
            continue
        padded = np.zeros((len(rows), width, f))  # (b, L, f) history factors, zero rows pad
        conf = np.zeros((len(rows), width))
        for j, r in enumerate(rows):
            items, x = rows_r[r]
            padded[j, :len(items)] = v[items]
            conf[j, :len(items)] = alpha * x
        a = gram + reg * np.eye(f) + np.einsum("blf,bl,blg->bfg", padded, conf, padded)
        rhs = np.einsum("blf,bl->bf", padded, 1.0 + conf) * (conf > 0).any(axis=1, keepdims=True)
        out[rows] = np.linalg.solve(a, rhs[..., None])[..., 0]
    return out


def fit_factors(histories: Sequence[Array], strengths: Sequence[Array] | None, n_items: int,
                cfg: MFConfig = MFConfig()) -> Array:
    """ALS item factors (n_items, f) float32 from per-user item indexes (and their strengths)."""
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    lengths = np.fromiter((len(h) for h in histories), dtype=np.int64, count=len(histories))
    rows = np.repeat(np.arange(len(histories)), lengths)
    cols = np.concatenate(histories).astype(np.int64) if lengths.sum() else np.zeros(0, np.int64)
    data = (np.concatenate(strengths).astype(np.float32) if strengths is not None and lengths.sum()
            else np.ones(len(cols), np.float32))
    m = sp.coo_matrix((data, (rows, cols)), shape=(len(histories), n_items)).tocsr()
    m.sum_duplicates()
    m.data = np.minimum(m.data, 1.0)  # repeats do not add up beyond the strongest event
    with threadpool_limits(1, "blas"):  # implicit warns unless BLAS is single-threaded
        model = AlternatingLeastSquares(factors=cfg.factors, regularization=cfg.regularization, alpha=cfg.alpha,
                                        iterations=cfg.iterations, random_state=cfg.seed)
        model.fit(m, show_progress=False)
    return np.ascontiguousarray(model.item_factors, dtype=np.float32)


class MFModel:
    """Item factors by item id (state). ``item_ids`` (n,) str; ``factors`` (n, f) float32."""

    def __init__(self, item_ids: Sequence[str], factors: Array, cfg: MFConfig = MFConfig(), info: dict | None = None):
        self.rows = ItemRows(item_ids)
        self.factors = np.ascontiguousarray(factors, dtype=np.float32)
        if self.factors.shape[0] != len(self.rows):
            raise ValueError(f"{len(self.rows)} item ids for {self.factors.shape[0]} factor rows")
        self.cfg, self.info = cfg, dict(info or {})
        self.gram = self.factors.astype(np.float64).T @ self.factors.astype(np.float64)

    @property
    def item_ids(self) -> list[str]:
        return self.rows.item_ids

    @property
    def row_of(self) -> dict[str, int]:
        return self.rows.row_of

    def user_vectors(self, histories: Sequence[Sequence[str]], types: Sequence[Sequence[str]]) -> Array:
        """(n, f) float32: each history (item ids, oldest first, with their event types) folded in."""
        rows, strengths = [], []
        for items, kinds in zip(histories, types):
            pairs = [(self.row_of[i], TYPE_WEIGHTS.get(t, 1.0) / STRONGEST) for i, t in zip(items, kinds)
                     if i in self.row_of]
            rows.append(np.array([p[0] for p in pairs], dtype=np.int64))
            strengths.append(np.array([p[1] for p in pairs], dtype=np.float64))
        return least_squares_fold_in(self.factors, rows, self.cfg.alpha, self.cfg.regularization, self.gram,
                                     strengths)

    def candidates(self, index: ItemIndex, user: Array, n: int, allowed: Array) -> tuple[Array, Array]:
        """The ``n`` best allowed items by ``factors @ user`` -> (labels, scores), best first."""
        if not np.any(user):
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        return top_rows(self.rows, index, self.factors @ user, n, allowed)

    def scores_of(self, index: ItemIndex, user: Array, labels: Array) -> Array:
        """float32 (m,) ``factor . user`` of each label; NaN for items the factors do not know."""
        return scores_at(self.rows, index, lambda r: self.factors[r] @ user, labels)

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "factors.npy", self.factors)
        (folder / "mf.json").write_text(json.dumps({"config": asdict(self.cfg), "item_ids": self.item_ids,
                                                    "info": self.info}))

    @classmethod
    def load(cls, folder: str | Path) -> MFModel:
        folder = Path(folder)
        meta = json.loads((folder / "mf.json").read_text())
        return cls(meta["item_ids"], np.load(folder / "factors.npy"), MFConfig(**meta["config"]), meta["info"])
