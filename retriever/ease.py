"""EASE (Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019) as a harness
baseline: the closed-form item-item model

    P = (X'X + lambda I)^-1,   B = I - P diag(1 / diag(P)),   diag(B) = 0,   scores = X_u B

over the binary user-item matrix X of the fit sequences. ``fit_path`` fits several lambdas from one
eigendecomposition of the Gram matrix (X'X = Q L Q', so P = Q diag(1 / (L + lambda)) Q'), which is
what makes a tuned grid affordable on a CPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Self

import numpy as np

from .collaborative import Recommender, _user_items

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
