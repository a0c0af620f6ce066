"""A fitted LightGBM ranking model with the feature names it reads: the one wrapper behind the
learned ranking of personal lists (``ranker.ltr``) and of search results (``retriever.search.learned``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from indexer.files import atomic_write


class BoosterModel:
    """State: a LightGBM booster and what it was fitted on. A subclass names its features
    (``NAMES``, checked when a booster is wrapped), its two files and the command that refits it."""

    NAMES: tuple[str, ...] = ()
    MODEL_FILE, META_FILE = "ranking.txt", "ranking.json"
    REFIT = "semrec train"

    def __init__(self, booster, info: dict | None = None):
        names = list(booster.feature_name())
        if names != list(self.NAMES):
            raise ValueError(f"{type(self).__name__} was fitted on features {names}, this code computes "
                             f"{list(self.NAMES)}; refit it with {self.REFIT}")
        self.booster, self.info = booster, dict(info or {})

    def score(self, features: np.ndarray) -> np.ndarray:
        """float32 ``(m,)`` scores of feature rows ``(m, len(NAMES))``; higher ranks first."""
        if not len(features):
            return np.zeros(0, dtype=np.float32)
        return np.asarray(self.booster.predict(features, num_threads=1), dtype=np.float32)

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(folder / self.MODEL_FILE, self.booster.model_to_string())
        atomic_write(folder / self.META_FILE, json.dumps({"features": list(self.NAMES), "info": self.info}, indent=1))
        return folder

    @classmethod
    def load(cls, folder: str | Path):
        import lightgbm

        folder = Path(folder)
        meta = json.loads((folder / cls.META_FILE).read_text())
        return cls(lightgbm.Booster(model_str=(folder / cls.MODEL_FILE).read_text()), meta["info"])
