"""Calibrated search relevance: P(a hit is the product the query asks for) from three features of
the hit (cosine to the query, IDF-weighted term coverage, gap to the catalog's best cosine), and the
cut-off that leaves the unlikely hits out (``SearchConfig.min_relevance``). Fitted and measured by
``python -m evaluation.search_calibration``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from indexer.files import atomic_write
from indexer.results import empty
from indexer.store import ItemIndex

from .lexical import LexicalIndex, bm25_idf


def relevance_features(index: ItemIndex, lexical: LexicalIndex, tokens: list[str], fixes: dict[str, list[str]],
                       labels: np.ndarray, query_vec: np.ndarray) -> np.ndarray:
    """float32 ``(len(labels), 3)`` per label (-1 padding: 0): its cosine to ``query_vec``; the
    IDF-weighted share of the query's ``tokens`` its BM25 text holds (a token counts when it or one
    of its typo ``fixes`` is there); how far its cosine is below the catalog's best for the query."""
    out = np.zeros((len(labels), 3), dtype=np.float32)
    live = np.flatnonzero(labels >= 0)
    if not len(live):
        return out
    _, best = index.search(query_vec[None, :], 1)  # the closest item of the whole catalog
    with index.lock:
        out[live, 0] = index.vectors.view[labels[live]] @ query_vec
    out[live, 2] = np.maximum(float(best[0, 0]), out[live, 0].max()) - out[live, 0]
    n_docs = max(lexical.n_docs, 1)
    idf = np.array([max([lexical.doc_freq(t), *(lexical.doc_freq(f) for f in fixes.get(t, []))])
                    for t in tokens], dtype=np.float64)
    idf = bm25_idf(idf, n_docs) if len(tokens) else idf
    if idf.sum() > 0:
        terms = list(dict.fromkeys([*tokens, *(f for t in tokens for f in fixes.get(t, []))]))
        has = lexical.holds(labels[live], terms)
        col = {t: j for j, t in enumerate(terms)}
        held = np.stack([has[:, col[t]] | np.any(has[:, [col[f] for f in fixes.get(t, [])]], axis=1)
                         for t in tokens], axis=1)  # (live, tokens): the token or one of its fixes
        out[live, 1] = (held @ idf / idf.sum()).astype(np.float32)
    return out


@dataclass(frozen=True)
class Relevance:
    """P(a hit is what the query asked for) = sigmoid(cosine * ``cosine`` + coverage * ``coverage``
    + gap * ``gap`` + ``bias``), over :func:`relevance_features`. Unlike the fused
    score (min-max over one query's candidates: its best hit is 1.0 however poor) it is comparable
    across queries. Fitted by ``python -m evaluation.search_calibration`` (its data and figures)
    on the cosines of ``model``: another embedder's cosines have another scale (a MiniLM fine-tuned
    on Instruments moved BM25's MRR@10 under the cut from 0.1247 to 0.1240, on Subscription Boxes
    from 0.1121 to 0.1195), so it applies to that model only. A model folder carries its own
    (:data:`CALIBRATION_FILE`, written by ``search_calibration --model FOLDER --write``)."""

    cosine: float = 3.06
    coverage: float = 0.3
    gap: float = -7.728
    bias: float = -4.827
    model: str = "minilm"


RELEVANCE = Relevance()


CALIBRATION_FILE = "relevance.json"  # a model folder's own: {"relevance": {cosine, coverage, gap, bias}, ...}
_WEIGHTS = ("cosine", "coverage", "gap", "bias")


def calibration_for(model: str) -> Relevance | None:
    """The calibration fitted on ``model``'s cosines: MiniLM's built-in one, the one a model folder
    holds in :data:`CALIBRATION_FILE`, or None (no relevance, no cut). A file that is not a
    calibration is a ValueError naming it (at service start, never per query)."""
    if model == RELEVANCE.model:
        return RELEVANCE
    path = Path(model) / CALIBRATION_FILE
    if not path.is_file():
        return None
    try:
        weights = json.loads(path.read_text())["relevance"]
        return Relevance(*(float(weights[w]) for w in _WEIGHTS), model=model)
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path} is not a relevance calibration ({type(e).__name__}: {e}); refit it with "
                         f"python -m evaluation.search_calibration --model {model} --write") from e


def save_calibration(folder: str | Path, cal: Relevance, **info) -> Path:
    """Write ``cal`` (and ``info``: its cut-off, data, figures) as ``folder``'s :data:`CALIBRATION_FILE`."""
    path = Path(folder) / CALIBRATION_FILE
    atomic_write(path, json.dumps({"relevance": {w: getattr(cal, w) for w in _WEIGHTS}, **info}, indent=1))
    return path


def relevance(features: np.ndarray, cal: Relevance = RELEVANCE) -> np.ndarray:
    """float32 ``(n,)`` calibrated relevance of feature rows ``(n, 3)`` (cosine, coverage, gap)."""
    z = features[:, 0] * cal.cosine + features[:, 1] * cal.coverage + features[:, 2] * cal.gap + cal.bias
    return (1.0 / (1.0 + np.exp(-z.astype(np.float64)))).astype(np.float32)


def cut(min_relevance: float, labels: np.ndarray, scores: np.ndarray, rel: np.ndarray, *aligned):
    """Drop the hits with ``rel`` under ``min_relevance`` from ``labels`` / ``scores`` (k,), padding
    the end again; ``aligned`` arrays (or None) are cut alike and come back as long as what is kept."""
    keep = (labels >= 0) & (rel >= min_relevance)
    n = int(keep.sum())
    out_l, out_s = (a[0] for a in empty(1, len(labels)))
    out_r = np.full(len(labels), np.nan, dtype=np.float32)
    out_l[:n], out_s[:n], out_r[:n] = labels[keep], scores[keep], rel[keep]
    return (out_l, out_s, out_r, *(None if a is None else np.asarray(a)[keep[: len(a)]] for a in aligned))
