"""The learned final ranking of personal lists: a LightGBM LambdaRank model over the candidates'
features (``ranker.features``), fitted on validation (``evaluation.training.fit_ranking``), loaded
here for serving. Without a fitted model the pipeline ranks by the sources' weighted
reciprocal-rank fusion."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .features import NAMES

Array = np.ndarray


class RankingModel:
    """State: a LightGBM booster and the feature names it was fitted on (checked at load)."""

    def __init__(self, booster, info: dict | None = None):
        self.booster, self.info = booster, dict(info or {})
        names = list(booster.feature_name())
        if names != list(NAMES):
            raise ValueError(f"ranking model was fitted on features {names}, this code computes {list(NAMES)}; "
                             "retrain it with `semrec train`")
        splits = booster.feature_importance("split")
        self._read = frozenset(name for name, n in zip(NAMES, splits) if n > 0)  # asked per request

    def reads(self, name: str) -> bool:
        """Whether any split of the model reads feature ``name`` (a model fitted without a reranker
        never splits on its column, and serving then need not compute it)."""
        return name in self._read

    def score(self, features: Array) -> Array:
        """float32 (m,) scores of feature rows ``(m, len(NAMES))``; higher ranks first."""
        if not len(features):
            return np.zeros(0, dtype=np.float32)
        return np.asarray(self.booster.predict(features, num_threads=1), dtype=np.float32)

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(str(folder / "ranking.txt"))
        (folder / "ranking.json").write_text(json.dumps({"features": list(NAMES), "info": self.info}, indent=1))

    @classmethod
    def load(cls, folder: str | Path) -> RankingModel:
        import lightgbm

        folder = Path(folder)
        meta = json.loads((folder / "ranking.json").read_text())
        return cls(lightgbm.Booster(model_file=str(folder / "ranking.txt")), meta["info"])
