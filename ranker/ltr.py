"""The learned final ranking of personal lists: a LightGBM LambdaRank model over the candidates'
features (``ranker.features``), fitted on validation (``evaluation.training.fit_ranking``), loaded
here for serving. Without a fitted model the pipeline ranks by the sources' weighted
reciprocal-rank fusion."""

from __future__ import annotations

from retriever.lambdarank import BoosterModel

from .features import NAMES


class RankingModel(BoosterModel):
    """State: a LightGBM booster over ``ranker.features.NAMES`` (checked at load) and what it read."""

    NAMES = NAMES

    def __init__(self, booster, info: dict | None = None):
        super().__init__(booster, info)
        splits = booster.feature_importance("split")
        self._read = frozenset(name for name, n in zip(NAMES, splits) if n > 0)  # asked per request

    def reads(self, name: str) -> bool:
        """Whether any split of the model reads feature ``name`` (a model fitted without a reranker
        never splits on its column, and serving then need not compute it)."""
        return name in self._read
