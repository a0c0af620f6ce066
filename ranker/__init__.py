"""Reranking: a fine-tuned cross-encoder over retrieved candidates, score fusion, MMR diversity and
evidence-based explanations.

Pipeline: candidates (``retriever``) -> :class:`Reranker` scores -> :func:`fuse` with retrieval and
popularity -> :func:`mmr` -> :func:`explain` per item. Training: :func:`train_ranker`
(``python -m ranker.train``); measurement: ``python -m ranker.eval`` and ``python -m ranker.bench``.
"""

from .explain import Reason, explain, explain_list
from .fusion import FusionWeights, fuse, fused_ranking, popularity_prior, sort_rows
from .mmr import mmr
from .model import EncoderConfig, Reranker, RerankerLoadError
from .pairs import PairConfig, context_text, history_context, item_text, training_groups
from .train import TrainConfig, train_ranker

__all__ = [
    "EncoderConfig", "FusionWeights", "PairConfig", "Reason", "Reranker", "RerankerLoadError", "TrainConfig",
    "context_text", "explain", "explain_list", "fuse", "fused_ranking", "history_context", "item_text", "mmr",
    "popularity_prior", "sort_rows", "train_ranker", "training_groups",
]
